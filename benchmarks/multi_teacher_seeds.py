"""Multi-teacher KD on MNIST-5k with 1,000 training images, over seeds: each weighting against single teachers.

Runs the shipped ``mnist5k_*`` configs through the CLI exactly as a user would (each seed in its own
folder; the same 30-epoch budget for every row): the three teachers (a CNN, a small ResNet, an MLP),
vanilla KD from each teacher alone, and ``mnist5k_multi_teacher`` with each weighting. Tests the last
epoch's weights on the 3,000-image test split; the teachers' ensemble accuracy (their averaged softmax)
is the reference line. Prints mean and spread; writes ``benchmarks/results/multi_teacher_seeds.json``.

    python benchmarks/multi_teacher_seeds.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from seed_records import REPO, fit_and_test, print_rows, summarise_rows, write_record

TEACHERS = {"CNN": "teacher", "ResNet": "teacher_resnet", "MLP": "student"}
WEIGHTINGS = ["fixed", "ebkd", "ca-mkd", "ae-kd"]
METRICS = ("test/acc", "test/teachers_ensemble_acc")


def _fit_and_test(config: str, seed: int, checkpoint: str, *extra: str) -> dict[str, float]:
    metrics = fit_and_test(config, seed, checkpoint, *extra)
    return {key: metrics[key] for key in METRICS if key in metrics}


def run_seed(seed: int) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        os.chdir(folder)
        configs = {"CNN": "mnist5k_teacher", "ResNet": "mnist5k_teacher_resnet", "MLP": "mnist5k_student"}
        for name, config in configs.items():
            results[f"teacher: {name}"] = _fit_and_test(config, seed, f"checkpoints/mnist5k/{TEACHERS[name]}.ckpt")
            print(f"seed {seed} | teacher {name}: {results[f'teacher: {name}']}", flush=True)
        for name, checkpoint in TEACHERS.items():
            row = f"KD from the {name} alone"
            results[row] = _fit_and_test("mnist5k_kd", seed, "checkpoints/mnist5k/kd.ckpt",
                                        "--model.init_args.teacher_ckpt", f"checkpoints/mnist5k/{checkpoint}.ckpt")
            print(f"seed {seed} | {row}: {results[row]}", flush=True)
        for weighting in WEIGHTINGS:
            row = f"three teachers, {weighting}"
            results[row] = _fit_and_test("mnist5k_multi_teacher", seed, "checkpoints/mnist5k/multi_teacher.ckpt",
                                        "--model.init_args.weighting", weighting)
            print(f"seed {seed} | {row}: {results[row]}", flush=True)
        os.chdir(REPO)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "multi_teacher_seeds.json")
    args = parser.parse_args()
    started = time.time()
    per_seed = {seed: run_seed(seed) for seed in args.seeds}
    summary = summarise_rows(per_seed)
    print_rows(summary, args.seeds, {"test/teachers_ensemble_acc": "teachers' ensemble"})
    write_record(
        args.output,
        command="python benchmarks/multi_teacher_seeds.py --seeds " + " ".join(map(str, args.seeds)),
        metric="test top-1 accuracy of each run's last-epoch weights (MNIST-5k test split, 3,000 images; "
               "1,000 training images)",
        started=started,
        per_seed=per_seed,
        summary=summary,
    )


if __name__ == "__main__":
    main()
