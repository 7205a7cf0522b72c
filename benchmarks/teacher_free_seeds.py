"""The teacher-free KD family (Yuan et al. 2020) on MNIST-5k with 1,000 training images, over seeds.

Runs the shipped ``mnist5k_*`` configs through the CLI exactly as a user would (each seed in its own
folder; the same 30-epoch budget, optimizer and schedule for every row), tests the last epoch's weights
of each run on the 3,000-image test split, prints mean and spread, and writes
``benchmarks/results/teacher_free_seeds.json``.

    python benchmarks/teacher_free_seeds.py --seeds 0 1 2
"""

from __future__ import annotations

from seed_records import fit_and_test, run_seeds, test_metrics

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
        "mnist5k_dekd", ["--model.init_args.teacher_ckpt",
                         "checkpoints/mnist5k_teacher/latest/teacher_after_epoch_1.ckpt"], "dekd"),
}
METRICS = ("test/acc", "test/teacher/acc")


def run_seed(seed: int) -> dict[str, dict[str, float]]:
    results = {}
    for row, (config, extra, name) in RUNS.items():
        metrics = fit_and_test(config, seed, f"checkpoints/{config}/latest/{name}.ckpt", *extra)
        results[row] = {key: metrics[key] for key in METRICS if key in metrics}
        print(f"seed {seed} | {row}: {results[row]}", flush=True)
    for epoch in (1, 2):  # the De-KD teachers themselves (written by the mnist5k_teacher run above)
        kept = f"checkpoints/mnist5k_teacher/latest/teacher_after_epoch_{epoch}.ckpt"
        metrics = test_metrics("mnist5k_teacher", kept)
        results[f"CNN after epoch {epoch}"] = {"test/acc": metrics["test/acc"]}
    return results


if __name__ == "__main__":
    run_seeds("teacher_free_seeds", run_seed, shown={"test/teacher/acc": ("teacher", 100)})
