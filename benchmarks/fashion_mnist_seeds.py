"""The baseline methods on Fashion-MNIST, over seeds: every logit and feature method against the student alone and KD.

Runs the shipped ``fashion_mnist_*`` configs through the CLI as a user would, each seed in its own folder: a
ResNet-20 teacher (trained once, seed 0, 15 epochs; the same teacher for every row and seed), then the ResNet-8
student alone, vanilla KD, and every other method on ``fashion_mnist_kd`` with ``--model.class_path`` swapped, each
with its paper's or the benchmark codebases' default weights and the same budget: 5 epochs on the same seeded
3,000 training images, batch 64, SGD lr 0.05 with a cosine schedule. The two-run methods add their first run
(1 epoch: FSP's initialisation, FT's paraphraser), as the published protocols add theirs. No validation during
training; the last epoch's weights are tested on the 10,000 official test images. Needs
``apt-get install -y dataset-fashion-mnist``. Writes ``benchmarks/results/fashion_mnist_seeds.json``.

    python benchmarks/fashion_mnist_seeds.py --seeds 0 1 2
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from seed_records import fit, fit_and_test, run_seeds

TEACHER = "checkpoints/fashion_mnist_teacher/latest/teacher.ckpt"
KD = "checkpoints/fashion_mnist_kd/latest/kd.ckpt"
NO_VALIDATION = ["--trainer.limit_val_batches", "0"]
METRIC = ("test top-1 accuracy of each run's last-epoch weights (Fashion-MNIST test split, 10,000 images; 3,000 "
          "training images, 5 epochs)")

# each method on the KD config: its class and the arguments that set it as its paper or benchmark code does
METHODS: dict[str, list[str]] = {
    "DKD": ["lightning_kd.DecoupledKD", "--model.init_args.warmup_epochs", "1"],
    "DIST": ["lightning_kd.DIST"],
    "KD, standardised logits": ["lightning_kd.LogitStandardisedKD"],
    "AT": ["lightning_kd.AttentionTransfer"],
    "SP": ["lightning_kd.SimilarityPreserving"],
    "NST": ["lightning_kd.NST"],
    "PKT": ["lightning_kd.PKT"],
    "RKD": ["lightning_kd.RKD"],
    "FitNets": ["lightning_kd.FitNets"],
    "CRD": ["lightning_kd.CRD", "--model.init_args.negatives", "1024"],  # of 3,000 images, fewer negatives
    "CC": ["lightning_kd.CorrelationCongruence"],
    "VID": ["lightning_kd.VID"],
}

_teacher_folder = Path(tempfile.mkdtemp(prefix="fashion-teacher-"))
_teacher_metrics: dict[str, float] = {}


def _teacher() -> dict[str, float]:
    """Train the teacher once (seed 0) in a folder of its own; copy its checkpoint where this seed's runs read it."""
    if not _teacher_metrics:
        here = Path.cwd()
        os.chdir(_teacher_folder)
        try:
            _teacher_metrics.update(fit_and_test("fashion_mnist_teacher", 0, TEACHER, *NO_VALIDATION))
        finally:
            os.chdir(here)
    Path(TEACHER).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(_teacher_folder / TEACHER, TEACHER)
    return {"test/acc": _teacher_metrics["test/acc"]}


def _method(config: str, checkpoint: str, seed: int, *extra: str) -> dict[str, float]:
    return {"test/acc": fit_and_test(config, seed, checkpoint, *NO_VALIDATION, *extra)["test/acc"]}


def run_seed(seed: int) -> dict[str, dict[str, float]]:
    results = {"teacher (ResNet-20, 15 epochs)": _teacher()}
    results["student alone (ResNet-8)"] = _method("fashion_mnist_student",
                                                  "checkpoints/fashion_mnist_student/latest/student.ckpt", seed)
    results["KD"] = _method("fashion_mnist_kd", KD, seed)
    for row, (class_path, *extra) in METHODS.items():
        results[row] = _method("fashion_mnist_kd", KD, seed, "--model.class_path", class_path, *extra)
        print(f"seed {seed} | {row}: {results[row]}", flush=True)
    # FSP: its initialisation (the term alone, 1 epoch), then the labels from that student
    fit("fashion_mnist_kd", seed, "--model.class_path", "lightning_kd.FSP", "--model.init_args.ce_weight", "0",
        "--trainer.max_epochs", "1", *NO_VALIDATION)
    shutil.copy(KD, "fsp_init.ckpt")
    results["FSP (+1 init epoch)"] = _method("fashion_mnist_student",
                                             "checkpoints/fashion_mnist_student/latest/student.ckpt", seed,
                                             "--model.init_args.net_ckpt", "fsp_init.ckpt")
    # FT: the paraphraser (1 epoch, lr 0.01 as RepDistiller's for ResNets), then the transfer through it
    fit("fashion_mnist_kd", seed, "--model.class_path", "lightning_kd.FactorTransfer", "--model.init_args.phase",
        "paraphraser", "--model.init_args.optimizer.init_args.lr", "0.01", "--trainer.max_epochs", "1",
        *NO_VALIDATION)
    shutil.copy(KD, "paraphraser.ckpt")
    results["FT (+1 paraphraser epoch)"] = _method("fashion_mnist_kd", KD, seed, "--model.class_path",
                                                   "lightning_kd.FactorTransfer", "--model.init_args.paraphraser_ckpt",
                                                   "paraphraser.ckpt")
    print(f"seed {seed} | FSP, FT: {results['FSP (+1 init epoch)']}, {results['FT (+1 paraphraser epoch)']}",
          flush=True)
    return results


if __name__ == "__main__":
    run_seeds("fashion_mnist_seeds", run_seed, metric=METRIC)
