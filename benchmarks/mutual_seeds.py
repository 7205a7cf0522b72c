"""Deep Mutual Learning on MNIST-5k with 1,000 training images, over seeds: independent peers vs DML peers.

Runs the shipped configs through the CLI exactly as a user would (each seed in its own folder; 30 epochs
for every row): the MLP trained alone (``mnist5k_student``, the independent peer) and two MLP peers
trained together (``mnist5k_dml``) with each update scheme. Tests the last epoch's weights of every peer
and of the peers' ensemble on the 3,000-image test split; writes ``benchmarks/results/mutual_seeds.json``.

    python benchmarks/mutual_seeds.py --seeds 0 1 2
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
QUIET = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
         "--trainer.enable_model_summary", "false"]


def _path(config: str) -> str:
    return str(REPO / "configs" / f"{config}.yaml")


def fit_and_test(config: str, seed: int, checkpoint: str, *extra: str) -> dict[str, float]:
    KDLightningCLI(args=["fit", "--config", _path(config), "--seed_everything", str(seed), *extra, *QUIET])
    wandb.finish()
    cli = KDLightningCLI(args=["test", "--config", _path(config), "--ckpt_path", checkpoint, *QUIET])
    wandb.finish()
    return {key: float(value) for key, value in cli.trainer.callback_metrics.items() if key.endswith("acc")}


def run_seed(seed: int) -> dict[str, float]:
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as folder:
        os.chdir(folder)
        alone = fit_and_test("mnist5k_student", seed, "checkpoints/mnist5k/student.ckpt")
        results["MLP trained alone"] = alone["test/acc"]
        for scheme in ("simultaneous", "alternating"):
            metrics = fit_and_test("mnist5k_dml", seed, "checkpoints/mnist5k/dml.ckpt", "--model.init_args.scheme",
                                   scheme)
            results[f"DML {scheme}: peer 1"] = metrics["test/peer_1/acc"]
            results[f"DML {scheme}: peer 2"] = metrics["test/peer_2/acc"]
            results[f"DML {scheme}: ensemble of the peers"] = metrics["test/peers_ensemble_acc"]
        print(f"seed {seed}: {results}", flush=True)
        os.chdir(REPO)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "mutual_seeds.json")
    args = parser.parse_args()
    started = time.time()
    per_seed = {seed: run_seed(seed) for seed in args.seeds}
    summary = {row: spread([per_seed[s][row] for s in args.seeds]) for row in per_seed[args.seeds[0]]}
    print(f"\ntest top-1 accuracy (%), mean ± std over seeds {args.seeds}")
    for row, stats in summary.items():
        print(f"  {row:<40} {100 * stats['mean']:6.2f} ± {100 * stats['std']:.2f}")
    write_record(
        args.output,
        command="python benchmarks/mutual_seeds.py --seeds " + " ".join(map(str, args.seeds)),
        metric="test top-1 accuracy of each run's last-epoch weights (MNIST-5k test split, 3,000 images; "
               "1,000 training images)",
        started=started,
        per_seed=per_seed,
        summary=summary,
    )


if __name__ == "__main__":
    main()
