"""The README's quickstart over several seeds: teacher, KD student, same student on labels alone.

Runs the shipped configs through the CLI exactly as a user would (each seed in its own folder),
tests the best-on-validation checkpoint of each run on the held-out test split, prints a table and
writes ``benchmarks/results/quickstart_seeds.json``.

    python benchmarks/quickstart_seeds.py --seeds 0 1 2
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
RUNS = {
    "teacher": ("digits_teacher.yaml", "checkpoints/digits_teacher/latest/teacher.ckpt"),
    "kd_student": ("digits_kd.yaml", "checkpoints/digits_kd/latest/kd-student.ckpt"),
    "baseline_student": ("digits_student_baseline.yaml",
                         "checkpoints/digits_student_baseline/latest/baseline-student.ckpt"),
}
QUIET = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
         "--trainer.enable_model_summary", "false"]


def run_seed(seed: int) -> dict[str, float]:
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        os.chdir(folder)
        for name, (config, checkpoint) in RUNS.items():
            config_path = str(REPO / "configs" / config)
            KDLightningCLI(args=["fit", "--config", config_path, "--seed_everything", str(seed), *QUIET])
            cli = KDLightningCLI(args=["test", "--config", config_path, "--ckpt_path", checkpoint, *QUIET])
            results[name] = float(cli.trainer.callback_metrics["test/acc"])
            wandb.finish()
        os.chdir(REPO)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "quickstart_seeds.json")
    args = parser.parse_args()
    started = time.time()
    per_seed = {seed: run_seed(seed) for seed in args.seeds}
    summary = {}
    print(f"\n{'run':<18} " + " ".join(f"seed {s:<4}" for s in args.seeds) + "   mean    std")
    for name in RUNS:
        summary[name] = spread([per_seed[s][name] for s in args.seeds])
        print(f"{name:<18} " + " ".join(f"{v:9.4f}" for v in summary[name]["values"])
              + f" {summary[name]['mean']:.4f} {summary[name]['std']:.4f}")
    write_record(
        args.output,
        command="python benchmarks/quickstart_seeds.py --seeds " + " ".join(map(str, args.seeds)),
        metric="test top-1 accuracy of the best-on-validation checkpoint (digits test split, 359 images)",
        started=started,
        per_seed=per_seed,
        summary=summary,
    )


if __name__ == "__main__":
    main()
