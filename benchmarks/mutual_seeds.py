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

from seed_records import REPO, fit_and_test, print_rows, summarise_rows, write_record


def run_seed(seed: int) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        os.chdir(folder)
        alone = fit_and_test("mnist5k_student", seed, "checkpoints/mnist5k/student.ckpt")
        results["MLP trained alone"] = {"test/acc": alone["test/acc"]}
        for scheme in ("simultaneous", "alternating"):
            metrics = fit_and_test("mnist5k_dml", seed, "checkpoints/mnist5k/dml.ckpt", "--model.init_args.scheme",
                                   scheme)
            results[f"DML {scheme}: peer 1"] = {"test/acc": metrics["test/peer_1/acc"]}
            results[f"DML {scheme}: peer 2"] = {"test/acc": metrics["test/peer_2/acc"]}
            results[f"DML {scheme}: ensemble of the peers"] = {"test/acc": metrics["test/peers_ensemble_acc"]}
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
    summary = summarise_rows(per_seed)
    print_rows(summary, args.seeds)
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
