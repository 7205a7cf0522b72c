"""Several students fused on MNIST-5k, over seeds: each student alone, their fused prediction and the teachers'
ensemble, with two and with three students taught by the same three teachers.

Runs the shipped ``mnist5k_*`` configs through the CLI as a user would (each seed in its own folder): the three
teachers of ``mnist5k_multi_teacher`` (a CNN, a small ResNet, an MLP), then ``mnist5k_multi_student`` with its two
students (an MLP and a CNN) and with a third (a second MLP), the fusion fitted on the validation split; the same
budget for every row (30 epochs, 1,000 training images). Tests the last epoch's weights on the 3,000-image test
split: each student's own accuracy (``test/student_<m>/acc``), the fused prediction's (``test/acc``) and the
teachers' ensemble's. Writes ``benchmarks/results/multi_student_seeds.json``.

    python benchmarks/multi_student_seeds.py --seeds 0 1 2
"""

from __future__ import annotations

import json

from seed_records import fit, fit_and_test, run_seeds

TEACHERS = {"mnist5k_teacher": "checkpoints/mnist5k_teacher/latest/teacher.ckpt",
            "mnist5k_teacher_resnet": "checkpoints/mnist5k_teacher_resnet/latest/teacher_resnet.ckpt",
            "mnist5k_student": "checkpoints/mnist5k_student/latest/student.ckpt"}
FUSED = "checkpoints/mnist5k_multi_student/latest/multi_student.ckpt"
THREE = json.dumps([{"class_path": "lightning_kd.models.MLP", "init_args": {"hidden_sizes": [64]}},
                    {"class_path": "lightning_kd.models.SmallCNN", "init_args": {"widths": [8, 16]}},
                    {"class_path": "lightning_kd.models.MLP", "init_args": {"hidden_sizes": [32]}}])
STUDENTS = {2: ["MLP-64", "CNN-8-16"], 3: ["MLP-64", "CNN-8-16", "MLP-32"]}


def run_seed(seed: int) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    for config in TEACHERS:
        fit(config, seed)
    for count, extra in ((2, []), (3, ["--model.init_args.students", THREE])):
        metrics = fit_and_test("mnist5k_multi_student", seed, FUSED, *extra)
        for m, name in enumerate(STUDENTS[count]):
            results[f"M={count}: student {name} alone"] = {"test/acc": metrics[f"test/student_{m + 1}/acc"]}
        results[f"M={count}: fused"] = {"test/acc": metrics["test/acc"],
                                        "test/teachers_ensemble_acc": metrics["test/teachers_ensemble_acc"]}
        print(f"seed {seed} | M={count}: {results}", flush=True)
    return results


if __name__ == "__main__":
    run_seeds("multi_student_seeds", run_seed, shown={"test/teachers_ensemble_acc": ("teachers' ensemble", 100)})
