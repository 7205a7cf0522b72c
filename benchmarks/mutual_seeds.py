"""Deep Mutual Learning on MNIST-5k with 1,000 training images, over seeds: independent peers vs DML peers.

Runs the shipped configs through the CLI exactly as a user would (each seed in its own folder; 30 epochs
for every row): the MLP trained alone (``mnist5k_student``, the independent peer) and two MLP peers
trained together (``mnist5k_dml``) with each update scheme. Tests the last epoch's weights of every peer
and of the peers' ensemble on the 3,000-image test split; writes ``benchmarks/results/mutual_seeds.json``.

    python benchmarks/mutual_seeds.py --seeds 0 1 2
"""

from __future__ import annotations

from seed_records import fit_and_test, run_seeds


def run_seed(seed: int) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    alone = fit_and_test("mnist5k_student", seed, "checkpoints/mnist5k_student/latest/student.ckpt")
    results["MLP trained alone"] = {"test/acc": alone["test/acc"]}
    for scheme in ("simultaneous", "alternating"):
        metrics = fit_and_test("mnist5k_dml", seed, "checkpoints/mnist5k_dml/latest/dml.ckpt",
                               "--model.init_args.scheme", scheme)
        results[f"DML {scheme}: peer 1"] = {"test/acc": metrics["test/peer_1/acc"]}
        results[f"DML {scheme}: peer 2"] = {"test/acc": metrics["test/peer_2/acc"]}
        results[f"DML {scheme}: ensemble of the peers"] = {"test/acc": metrics["test/peers_ensemble_acc"]}
    return results


if __name__ == "__main__":
    run_seeds("mutual_seeds", run_seed)
