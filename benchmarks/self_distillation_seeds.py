"""Be Your Own Teacher on MNIST-5k with 1,000 training images, over seeds: the backbone alone vs its exits.

Runs the shipped configs through the CLI exactly as a user would (each seed in its own folder; the same
30-epoch budget for every row): the SmallCNN [32, 64, 128] trained alone (``mnist5k_teacher``), then the
same network with two shallow exits trained by self-distillation (``mnist5k_byot``) with each preset.
Tests the last epoch's weights on the 3,000-image test split: every exit, the exits' ensemble, and early
exit at each threshold of the test's sweep (accuracy and mean compute, as a share of the full network's
multiply-adds). Prints mean and spread; writes ``benchmarks/results/self_distillation_seeds.json``.

    python benchmarks/self_distillation_seeds.py --seeds 0 1 2
"""

from __future__ import annotations

from seed_records import fit, fit_and_test, run_seeds, test_run

from lightning_kd.tasks.self_distillation import exit_metric_name, exits_ensemble_metric_name

PRESETS = ("paper", "journal_code")


def run_seed(seed: int) -> dict[str, dict[str, float]]:
    alone = fit_and_test("mnist5k_teacher", seed, "checkpoints/mnist5k_teacher/latest/teacher.ckpt")
    results = {"SmallCNN trained alone": {"test/acc": alone["test/acc"], "compute": 1.0}}
    for preset in PRESETS:
        fit("mnist5k_byot", seed, "--model.init_args.preset", preset)
        # its model keeps the early-exit sweep
        cli = test_run("mnist5k_byot", "checkpoints/mnist5k_byot/latest/byot.ckpt")
        logged, net = cli.trainer.callback_metrics, cli.model.net
        full = net.exit_costs()[-1].macs
        for cost in net.exit_costs():
            accuracy = float(logged[exit_metric_name("test", cost.exit)])
            results[f"BYOT {preset}: exit {cost.exit}"] = {"test/acc": accuracy, "compute": cost.macs / full}
        results[f"BYOT {preset}: ensemble of the exits"] = {
            "test/acc": float(logged[exits_ensemble_metric_name("test")]), "compute": net.ensemble_cost()[1] / full}
        for result in cli.model.early_exit_results:
            results[f"BYOT {preset}: early exit at {result.threshold:g}"] = {"test/acc": result.accuracy,
                                                                            "compute": result.mean_macs / full}
    return results


if __name__ == "__main__":
    run_seeds("self_distillation_seeds", run_seed, shown={"compute": ("compute %", 100)})
