"""Multi-teacher KD on MNIST-5k with 1,000 training images, over seeds: each weighting against single teachers.

Runs the shipped ``mnist5k_*`` configs through the CLI exactly as a user would (each seed in its own
folder; the same 30-epoch budget for every row): the three teachers (a CNN, a small ResNet, an MLP),
vanilla KD from each teacher alone, and ``mnist5k_multi_teacher`` with each weighting. Tests the last
epoch's weights on the 3,000-image test split; the teachers' ensemble accuracy (their averaged softmax)
is the reference line. Prints mean and spread; writes ``benchmarks/results/multi_teacher_seeds.json``.

    python benchmarks/multi_teacher_seeds.py --seeds 0 1 2
"""

from __future__ import annotations

from seed_records import fit_and_test, run_seeds

# each teacher's checkpoint, in its config's last finished run
TEACHERS = {"CNN": "mnist5k_teacher/latest/teacher", "ResNet": "mnist5k_teacher_resnet/latest/teacher_resnet",
            "MLP": "mnist5k_student/latest/student"}
WEIGHTINGS = ["fixed", "ebkd", "ca-mkd", "ae-kd"]
METRICS = ("test/acc", "test/teachers_ensemble_acc")


def _fit_and_test(config: str, seed: int, checkpoint: str, *extra: str) -> dict[str, float]:
    metrics = fit_and_test(config, seed, checkpoint, *extra)
    return {key: metrics[key] for key in METRICS if key in metrics}


def run_seed(seed: int) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    configs = {"CNN": "mnist5k_teacher", "ResNet": "mnist5k_teacher_resnet", "MLP": "mnist5k_student"}
    for name, config in configs.items():
        results[f"teacher: {name}"] = _fit_and_test(config, seed, f"checkpoints/{TEACHERS[name]}.ckpt")
        print(f"seed {seed} | teacher {name}: {results[f'teacher: {name}']}", flush=True)
    for name, checkpoint in TEACHERS.items():
        row = f"KD from the {name} alone"
        results[row] = _fit_and_test("mnist5k_kd", seed, "checkpoints/mnist5k_kd/latest/kd.ckpt",
                                    "--model.init_args.teacher_ckpt", f"checkpoints/{checkpoint}.ckpt")
        print(f"seed {seed} | {row}: {results[row]}", flush=True)
    for weighting in WEIGHTINGS:
        row = f"three teachers, {weighting}"
        results[row] = _fit_and_test("mnist5k_multi_teacher", seed,
                                    "checkpoints/mnist5k_multi_teacher/latest/multi_teacher.ckpt",
                                    "--model.init_args.weighting", weighting)
        print(f"seed {seed} | {row}: {results[row]}", flush=True)
    return results


if __name__ == "__main__":
    run_seeds("multi_teacher_seeds", run_seed, shown={"test/teachers_ensemble_acc": ("teachers' ensemble", 100)})
