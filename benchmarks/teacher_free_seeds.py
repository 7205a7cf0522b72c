"""The teacher-free KD family (Yuan et al. 2020) on MNIST-5k with 1,000 training images, over seeds.

Runs the shipped ``mnist5k_*`` configs through the CLI exactly as a user would (each seed in its own
folder; the same 30-epoch budget, optimizer and schedule for every row), tests the last epoch's weights
of each run on the 3,000-image test split, prints mean and spread, and writes
``benchmarks/results/teacher_free_seeds.json``.

    python benchmarks/teacher_free_seeds.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import wandb
from seed_records import spread, write_record

from lightning_kd.cli import KDLightningCLI

REPO = Path(__file__).resolve().parents[1]
# row: (config, extra arguments, checkpoint written); in order, so that every teacher exists before use
RUNS: dict[str, tuple[str, list[str], str]] = {
    "student (MLP), labels only": ("mnist5k_student", [], "student"),
    "teacher (CNN), labels only": ("mnist5k_teacher", [], "teacher"),
    "LSR (uniform)": ("mnist5k_lsr", ["--model.init_args.smoothing_convention", "uniform"], "lsr"),
    "LSR (others)": ("mnist5k_lsr", ["--model.init_args.smoothing_convention", "others"], "lsr"),
    "Tf-KD self": ("mnist5k_tfkd_self", [], "tfkd_self"),
    "Tf-KD reg (paper)": ("mnist5k_tfkd_reg", [], "tfkd_reg"),
    "Tf-KD reg (reference)": ("mnist5k_tfkd_reg_reference", [], "tfkd_reg_reference"),
    "KD from the CNN": ("mnist5k_kd", [], "kd"),
    "Re-KD: the CNN from the MLP": ("mnist5k_rekd", [], "rekd"),
    "De-KD (teacher after epoch 2)": ("mnist5k_dekd", [], "dekd"),
    "De-KD (teacher after epoch 1)": (
        "mnist5k_dekd", ["--model.init_args.teacher_ckpt", "checkpoints/mnist5k/teacher_after_epoch_1.ckpt"], "dekd"),
}
QUIET = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
         "--trainer.enable_model_summary", "false"]


def _path(config: str) -> str:
    return str(REPO / "configs" / f"{config}.yaml")


def test_accuracy(config: str, checkpoint: str) -> dict[str, float]:
    """Test accuracy of ``checkpoint`` (and of its teacher, for a distillation run)."""
    cli = KDLightningCLI(args=["test", "--config", _path(config), "--ckpt_path", checkpoint, *QUIET])
    metrics = cli.trainer.callback_metrics
    wandb.finish()
    return {key: float(metrics[key]) for key in ("test/acc", "test/teacher_acc") if key in metrics}


def run_seed(seed: int) -> dict[str, dict[str, float]]:
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        os.chdir(folder)
        for row, (config, extra, name) in RUNS.items():
            KDLightningCLI(args=["fit", "--config", _path(config), "--seed_everything", str(seed), *extra, *QUIET])
            wandb.finish()
            results[row] = test_accuracy(config, f"checkpoints/mnist5k/{name}.ckpt")
            print(f"seed {seed} | {row}: {results[row]}", flush=True)
        for epoch in (1, 2):  # the De-KD teachers themselves
            results[f"CNN after epoch {epoch}"] = test_accuracy(
                "mnist5k_teacher", f"checkpoints/mnist5k/teacher_after_epoch_{epoch}.ckpt")
        os.chdir(REPO)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "teacher_free_seeds.json")
    args = parser.parse_args()
    started = time.time()
    per_seed = {seed: run_seed(seed) for seed in args.seeds}
    rows = list(per_seed[args.seeds[0]])
    summary = {row: {key: spread([per_seed[s][row][key] for s in args.seeds]) for key in per_seed[args.seeds[0]][row]}
               for row in rows}
    print(f"\ntest top-1 accuracy (%), mean ± std over seeds {args.seeds}")
    for row in rows:
        stats = summary[row]["test/acc"]
        teacher = summary[row].get("test/teacher_acc")
        shown = f"   (teacher {100 * teacher['mean']:.2f} ± {100 * teacher['std']:.2f})" if teacher else ""
        print(f"  {row:<32} {100 * stats['mean']:6.2f} ± {100 * stats['std']:.2f}{shown}")
    write_record(
        args.output,
        command="python benchmarks/teacher_free_seeds.py --seeds " + " ".join(map(str, args.seeds)),
        metric="test top-1 accuracy of each run's last-epoch weights (MNIST-5k test split, 3,000 images; "
               "1,000 training images)",
        started=started,
        per_seed=per_seed,
        summary=summary,
    )


if __name__ == "__main__":
    main()
