"""Distribution-matching KD (KD^2M) on MNIST-5k with 1,000 training images, over seeds: every distance.

Runs the shipped configs through the CLI exactly as a user would (each seed in its own folder; 30 epochs
for every row): the MLP student from labels only (``mnist5k_student``), Hinton's logit KD from the CNN
teacher (``mnist5k_kd``), and ``mnist5k_kd2m`` (the CNN's penultimate features, a learned projector) with
each distance, then the class-conditional version (mean over the classes of the batch) of five of them.
Tests the last epoch's weights on the 3,000-image test split (a run whose loss stops being finite is
recorded as NaN) and times each fit: the median over epochs of the seconds spent in training steps
(forward, losses, backward, optimizer step; ``seed_records.StepTimer``), beside the accuracy.

Each distance's weight lambda is the power of ten nearest to ``CE_0 / (4 D_0)``, where ``CE_0`` (2.3) and
``D_0`` are the cross-entropy and the distance on the first training batch at seed 0 with the untrained
student (a rule fixed before any run, so that every distance starts at about a quarter of the label
term; the distances' scales differ by five orders of magnitude). Writes
``benchmarks/results/distribution_matching_seeds.json``.

    python benchmarks/distribution_matching_seeds.py --seeds 0 1 2
"""

from __future__ import annotations

import json
import math
import statistics

from seed_records import fit, run_seeds, test_metrics

from lightning_kd.tasks.base import NonFiniteLossError

WEIGHTS = {  # distance: (lambda, its D_0 on the first batch at seed 0)
    "mmd_linear": (1e-2, 27.2),
    "mmd_rbf": (1.0, 0.62),
    "mmd_polynomial": (1.0, 0.46),
    "wasserstein_exact": (1e-2, 37.5),
    "sinkhorn": (1e-2, 37.5),
    "sliced_wasserstein": (1.0, 0.26),
    "gaussian_w2_diag": (1e-2, 28.3),
    "gaussian_w2_full": (1e-2, 36.2),
    "gaussian_kl_diag": (1e-3, 287.0),
    "gaussian_kl_full": (1e-6, 3.1e5),
    "gromov_wasserstein": (1e-4, 989.0),
}
CLASS_CONDITIONAL = ("mmd_linear", "mmd_rbf", "wasserstein_exact", "sliced_wasserstein", "gaussian_w2_diag")
TIMER = ["--trainer.callbacks+=seed_records.StepTimer"]


def _timed(config: str, seed: int, checkpoint: str, *extra: str) -> dict[str, float]:
    try:
        cli = fit(config, seed, *TIMER, *extra)
    except NonFiniteLossError as error:  # a distance whose weight is too large for it: recorded, not hidden
        print(f"diverged: {error}", flush=True)
        return {"test/acc": math.nan, "seconds per epoch": math.nan}
    timer = next(c for c in cli.trainer.callbacks if type(c).__name__ == "StepTimer")
    seconds = statistics.median(timer.epoch_seconds)
    return {"test/acc": test_metrics(config, checkpoint)["test/acc"], "seconds per epoch": seconds}


def run_seed(seed: int) -> dict[str, dict[str, float]]:
    alone = _timed("mnist5k_student", seed, "checkpoints/mnist5k_student/latest/student.ckpt")
    results = {"CE only (MLP alone)": alone}
    fit("mnist5k_teacher", seed)
    results["logit KD (Hinton)"] = _timed("mnist5k_kd", seed, "checkpoints/mnist5k_kd/latest/kd.ckpt")
    runs = [(name, "none") for name in WEIGHTS] + [(name, "mean") for name in CLASS_CONDITIONAL]
    for distance, per_class in runs:
        match = {"distance": distance, "weight": WEIGHTS[distance][0], "class_conditional": per_class}
        row = f"{distance}{' per class' if per_class != 'none' else ''} (lambda {WEIGHTS[distance][0]:g})"
        results[row] = _timed("mnist5k_kd2m", seed, "checkpoints/mnist5k_kd2m/latest/kd2m.ckpt",
                              "--model.init_args.matches", json.dumps([match]))
        print(f"seed {seed} | {row}: {results[row]}", flush=True)
    return results


if __name__ == "__main__":
    run_seeds("distribution_matching_seeds", run_seed, shown={"seconds per epoch": ("s/epoch", 1)})
