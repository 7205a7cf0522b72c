"""Write the CIFAR-100 benchmark configs of every teacher -> student pair from the ResNet32x4 -> ResNet8x4 ones.

The ``configs/cifar100_resnet32x4_resnet8x4_<method>.yaml`` files are the templates: each holds one method (or one
stage of a two-stage method) in the RepDistiller / mdistiller recipe, with its comments. For every other pair of the
published tables this script writes ``configs/cifar100_<teacher>_<student>_<method>.yaml``: the same file with the
pair's networks, teacher checkpoint, output folder and file names, and the settings the benchmark codebases change
per pair (the learning rate of ShuffleNet students, DKD's non-target weight, ReviewKD's weight, the paraphraser's
rate of factor transfer), under a header that names the template, what changed, and the published numbers.

Edit a template, then run ``python tools/pair_configs.py``; ``--check`` (run by the tests) fails when a shipped
file differs from what the script writes.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

CONFIGS = Path(__file__).resolve().parent.parent / "lightning_kd" / "configs"
TEMPLATE_PAIR = "resnet32x4_resnet8x4"
TEMPLATE_STUDENT = """\
      class_path: lightning_kd.models.CifarResNet
      init_args:
        depth: 8
        widths: [32, 64, 128, 256]
"""
TEMPLATE_TEACHER = """\
      class_path: lightning_kd.models.CifarResNet
      init_args:
        depth: 32
        widths: [32, 64, 128, 256]
"""

# Published CIFAR-100 top-1 per method and pair. RepDistiller's README (the CRD paper's Tables 1 and 2) for the
# methods it benchmarks, mdistiller's README (the DKD paper) for DKD, the ReviewKD paper for ReviewKD. A method
# missing here is not quoted for the pair: its paper's CIFAR-100 table is the place to read it.
SOURCES = {"crd": "RepDistiller (CRD paper, Tables 1 and 2)", "dkd": "mdistiller (DKD paper)",
           "reviewkd": "The ReviewKD paper"}
PUBLISHED: dict[str, dict[str, float | None]] = {
    #          student alone, KD,  and the methods (None: not applicable, as the paper's "N/A")
    "resnet56_resnet20": {"student": 69.06, "kd": 70.66, "fitnets": 69.21, "at": 70.55, "sp": 69.67, "cc": 69.63,
                          "vid": 70.38, "rkd": 69.61, "pkt": 70.34, "ab": 69.47, "ft": 69.84, "fsp": 69.95,
                          "nst": 69.60, "crd": 71.16, "dkd": 71.97, "reviewkd": 71.89},
    "wrn_40_2_wrn_16_2": {"student": 73.26, "kd": 74.92, "fitnets": 73.58, "at": 74.08, "sp": 73.83, "cc": 73.56,
                          "vid": 74.11, "rkd": 73.35, "pkt": 74.54, "ab": 72.50, "ft": 73.25, "fsp": 72.91,
                          "nst": 73.68, "crd": 75.48, "dkd": 76.23, "reviewkd": 76.12},
    "vgg13_vgg8": {"student": 70.36, "kd": 72.98, "fitnets": 71.02, "at": 71.43, "sp": 72.68, "cc": 70.71,
                   "vid": 71.23, "rkd": 71.48, "pkt": 72.88, "ab": 70.94, "ft": 70.58, "fsp": 70.23, "nst": 71.53,
                   "crd": 73.94, "dkd": 74.68, "reviewkd": 74.84},
    "resnet32x4_shufflenetv2": {"student": 71.82, "kd": 74.45, "fitnets": 73.54, "at": 72.73, "sp": 74.56,
                                "cc": 71.29, "vid": 73.40, "rkd": 73.21, "pkt": 74.69, "ab": 74.31, "ft": 72.50,
                                "fsp": None, "nst": 74.68, "crd": 75.65, "dkd": 77.07, "reviewkd": 77.78},
}
# the method a config's published number is about: a second stage carries its method's number, a first stage none
REPORTED_AS = {name: name for name in ("kd", "fitnets", "at", "sp", "cc", "vid", "rkd", "pkt", "ab", "ft", "fsp",
                                       "nst", "crd", "dkd", "reviewkd")}
# methods whose per-pair numbers this script does not quote (not checked against a copy of the paper here)
TABLES_ELSEWHERE = {"ofd": "the DKD paper's Tables 1 and 2", "dist": "the DIST paper's CIFAR-100 tables",
                    "lskd": "the logit-standardisation paper's CIFAR-100 tables"}
TITLES = {
    "ab": "activation boundaries (AB), stage 2: the student on the labels, from stage 1's student",
    "ab_init": "activation boundaries (AB), stage 1", "at": "attention transfer (AT)",
    "cc": "correlation congruence (CC)", "crd": "contrastive representation distillation (CRD)", "dist": "DIST",
    "dkd": "decoupled KD (DKD)",
    "kd_fast": "vanilla KD, fast (cached teacher, compiled step, resident data)",
    "fitnets": "FitNets hints, in one stage (the benchmark codebases')",
    "fitnets_hints": "FitNets, the paper's stage 1 (the hints alone)",
    "fitnets_kd": "FitNets, the paper's stage 2 (KD from stage 1's student)",
    "fsp": "FSP, stage 2: the student on the labels, from stage 1's student", "fsp_init": "FSP, stage 1",
    "ft": "factor transfer (FT), stage 2", "ft_paraphraser": "factor transfer (FT), stage 1: the teacher's paraphraser",
    "kd": "vanilla KD", "lskd": "KD with logit standardisation", "nst": "neuron selectivity transfer (NST)",
    "ofd": "overhaul of feature distillation (OFD)", "pkt": "probabilistic knowledge transfer (PKT)",
    "reviewkd": "knowledge review (ReviewKD)", "rkd": "relational KD (RKD)", "sp": "similarity-preserving KD (SP)",
    "vid": "variational information distillation (VID)",
}
FIRST_STAGES = {"ab_init": "ab", "fsp_init": "fsp", "ft_paraphraser": "ft", "fitnets_hints": "fitnets_kd"}
SECOND_STAGES = {second: first for first, second in FIRST_STAGES.items()}


@dataclass(frozen=True)
class Pair:
    """A teacher -> student pair of the published tables, as this package's configs build it."""

    teacher: str  # the names of the teacher's config and checkpoint (configs/cifar100_<teacher>_teacher.yaml)
    student: str
    teacher_title: str
    student_title: str
    teacher_block: str  # the network's lines under ``teacher:`` in a config
    student_block: str
    lr: float = 0.05  # RepDistiller's: 0.01 for MobileNetV2 and ShuffleNet students
    paraphraser_lr: float = 0.01  # RepDistiller's init(): 0.01 for ResNet and WRN students, else the student's lr
    changed: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # method: (old line, new line, why)
    without: tuple[str, ...] = ()  # methods that cannot run on the pair (the paper's N/A)

    @property
    def name(self) -> str:
        return f"{self.teacher}_{self.student}"


def _block(class_path: str, init_args: str) -> str:
    return f"      class_path: lightning_kd.models.{class_path}\n      init_args: {init_args}\n"


DKD_BETA = "nckd_weight: 8.0"
REVIEW_WEIGHT = "review_weight: 5.0"
PAIRS = (
    Pair("resnet56", "resnet20", "ResNet-56", "ResNet-20",
         _block("CifarResNet", "{depth: 56, widths: [16, 16, 32, 64]}"),
         _block("CifarResNet", "{depth: 20, widths: [16, 16, 32, 64]}"),
         changed={"dkd": (DKD_BETA, "nckd_weight: 2.0", "DKD's non-target weight 2 (mdistiller's res56_res20)"),
                  "reviewkd": (REVIEW_WEIGHT, "review_weight: 0.6",
                               "ReviewKD's weight 0.6 (the authors' script for this pair)")}),
    Pair("wrn_40_2", "wrn_16_2", "WRN-40-2", "WRN-16-2", _block("WideResNet", "{depth: 40, widen_factor: 2}"),
         _block("WideResNet", "{depth: 16, widen_factor: 2}"),
         changed={"dkd": (DKD_BETA, "nckd_weight: 6.0", "DKD's non-target weight 6 (mdistiller's wrn40_2_wrn_16_2)")}),
    Pair("vgg13", "vgg8", "VGG-13", "VGG-8", _block("CifarVGG", "{depth: 13}"), _block("CifarVGG", "{depth: 8}"),
         paraphraser_lr=0.05,
         changed={"dkd": (DKD_BETA, "nckd_weight: 6.0", "DKD's non-target weight 6 (mdistiller's vgg13_vgg8)"),
                  "reviewkd": (REVIEW_WEIGHT, REVIEW_WEIGHT, "none but the networks: ReviewKD's weight stays 5 "
                               "(mdistiller's; the authors' script has no VGG pair)")}),
    Pair("resnet32x4", "shufflenetv2", "ResNet32x4", "ShuffleNetV2", TEMPLATE_TEACHER,
         _block("CifarShuffleNetV2", "{}"), lr=0.01,
         changed={"reviewkd": (REVIEW_WEIGHT, "review_weight: 8.0",
                               "ReviewKD's weight 8 (the authors' script for this pair)")},
         without=("fsp", "fsp_init")),  # the student's stages are not the teacher's widths: RepDistiller's N/A
)


def _replace(text: str, old: str, new: str, template: Path) -> str:
    if old not in text:
        raise SystemExit(f"{template.name}: expected {old!r} in the template; update tools/pair_configs.py")
    return text.replace(old, new)


def _published(pair: Pair, method: str) -> str:
    if method in TABLES_ELSEWHERE:
        return f"The published number for this pair is in {TABLES_ELSEWHERE[method]} (not quoted here)."
    if method not in REPORTED_AS:  # a first stage, or FitNets' two-stage protocol: no published number
        return ""
    numbers = PUBLISHED[pair.name]
    source = SOURCES.get(method, SOURCES["crd"])
    return (f"{source} reports {numbers[method]:.2f} for this pair (student alone {numbers['student']:.2f}, "
            f"KD {numbers['kd']:.2f}).")


def _wrap(text: str, width: int = 118) -> str:
    lines, line = [], "#"
    for word in text.split():
        if len(line) + 1 + len(word) > width:
            lines.append(line)
            line = "#"
        line += " " + word
    return "\n".join([*lines, line]) + "\n"


def render(pair: Pair, template: Path) -> str:
    """The config of ``template``'s method on ``pair``."""
    method = template.stem.removeprefix(f"cifar100_{TEMPLATE_PAIR}_")
    text = template.read_text()
    body = text[text.index("\nseed_everything") + 1:]  # the template's header is about the template's pair
    # a template without a title here is named as its own first line names it
    title = TITLES.get(method) or text.splitlines()[0].removeprefix("# CIFAR-100 ").split(",")[0]
    body = _replace(body, TEMPLATE_STUDENT, pair.student_block, template)
    if "teacher:" in body:
        body = _replace(body, TEMPLATE_TEACHER, pair.teacher_block, template)
    body = body.replace(f"cifar100_{TEMPLATE_PAIR}_", f"cifar100_{pair.name}_")
    body = body.replace("cifar100_resnet32x4_teacher/latest/resnet32x4.ckpt",
                        f"cifar100_{pair.teacher}_teacher/latest/{pair.teacher}.ckpt")
    body = body.replace("-resnet8x4", f"-{pair.student}").replace("-resnet32x4", f"-{pair.teacher}")
    changes = []
    lr = pair.paraphraser_lr if method == "ft_paraphraser" else pair.lr
    template_lr = 0.01 if method == "ft_paraphraser" else 0.05
    if lr != template_lr:
        body = _replace(body, f"lr: {template_lr}", f"lr: {lr}", template)
        changes.append(f"lr {lr} (RepDistiller's for this student)")
    if method in pair.changed:
        old, new, why = pair.changed[method]
        body = _replace(body, old, new, template)
        changes.append(why)
    stage = ""
    if method in FIRST_STAGES:
        stage = f" Next stage: configs/cifar100_{pair.name}_{FIRST_STAGES[method]}.yaml."
    if method in SECOND_STAGES:
        stage = f" It starts from stage 1's student: configs/cifar100_{pair.name}_{SECOND_STAGES[method]}.yaml."
    header = (f"CIFAR-100 {title}, {pair.teacher_title} -> {pair.student_title}: written by tools/pair_configs.py "
              f"from configs/{template.name} (read there what the loss is and its sources), the same method, "
              f"weights and recipe on this pair; changed for it: {'; '.join(changes) or 'nothing but the networks'}. "
              f"{_published(pair, method)} Not run here (a GPU's work).{stage} First train the teacher: "
              f"configs/cifar100_{pair.teacher}_teacher.yaml.")
    return _wrap(header) + body


def templates() -> list[Path]:
    """The ResNet32x4 -> ResNet8x4 configs, one per method or stage."""
    return sorted(CONFIGS.glob(f"cifar100_{TEMPLATE_PAIR}_*.yaml"))


def expected() -> dict[Path, str]:
    """Every generated config's path and text."""
    files = {}
    for pair in PAIRS:
        for template in templates():
            method = template.stem.removeprefix(f"cifar100_{TEMPLATE_PAIR}_")
            if method not in pair.without:
                files[CONFIGS / f"cifar100_{pair.name}_{method}.yaml"] = render(pair, template)
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when a shipped config differs; write nothing")
    args = parser.parse_args(argv)
    written = expected()
    stale = [path for path, text in written.items() if not path.is_file() or path.read_text() != text]
    if args.check:
        for path in stale:
            print(f"{path.name} is not what tools/pair_configs.py writes: run python tools/pair_configs.py")
        return 1 if stale else 0
    for path in stale:
        path.write_text(written[path])
        print(f"wrote {path.relative_to(CONFIGS.parent.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
