"""What the seed benchmarks share: mean and spread over seeds, and the JSON record of a run."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.callbacks import Callback


def spread(values: list[float]) -> dict[str, Any]:
    """Mean, sample standard deviation (0 for one seed) and the values themselves."""
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values}


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``'s, else the platform's): the machines differ from run to run, and
    timings of one are not those of another."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{platform.machine()} {line.split(':', 1)[1].strip()}"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_record(output: Path, command: str, metric: str, started: float, **results: Any) -> None:
    """Write a benchmark's results with the command, the date and the machine that produced them."""
    record = {
        "command": command,
        "date": date.today().isoformat(),
        "machine": f"{cpu_model()}, {os.cpu_count()} CPU cores, {platform.python_version()}, "
                   f"torch {torch.__version__}"
                   + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""),
        "metric": metric,
        "seconds": round(time.time() - started, 1),
        **results,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(record, indent=2) + "\n")
    print(f"\nwrote {output}")


def interleave(variants: dict[str, Callable[[Any], float]], subject: Any, rounds: int) -> dict[str, list[float]]:
    """Each variant's measurements of ``subject``: every variant once per round, in turn, for ``rounds`` rounds
    after a warm-up round that is not counted (it also fills caches and compiles)."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for round_number in range(rounds + 1):
        for name, run in variants.items():
            value = run(subject)
            if round_number > 0:
                times[name].append(value)
        print(f"round {round_number}: " + ", ".join(f"{n[:3]} {times[n][-1]:.2f}" for n in times if times[n]),
              flush=True)
    return times


class StepTimer(Callback):
    """Seconds spent in training steps (forward, losses, backward, optimizer step; not data loading or
    validation), summed per epoch: ``epoch_seconds``. Add it with ``--trainer.callbacks+=seed_records.StepTimer``."""

    def __init__(self) -> None:
        self.epoch_seconds: list[float] = []
        self._started = 0.0

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self.epoch_seconds.append(0.0)

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        _synchronize(pl_module.device)
        self._started = time.perf_counter()

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        _synchronize(pl_module.device)  # GPU work is queued: the step has ended when the device is done
        self.epoch_seconds[-1] += time.perf_counter() - self._started


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


REPO = Path(__file__).resolve().parents[1]
QUIET = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
         "--trainer.enable_model_summary", "false"]
"""What every benchmark run adds to the command line: no W&B run, no progress bar, no model summary."""


def config_path(name: str) -> str:
    """The shipped config ``name`` (``configs/<name>.yaml``)."""
    return str(REPO / "configs" / f"{name}.yaml")


def test_run(config: str, checkpoint: str) -> Any:
    """Test ``checkpoint`` with the shipped ``config`` through the CLI; return the CLI (its trainer and model)."""
    import wandb

    from lightning_kd.cli import KDLightningCLI

    cli = KDLightningCLI(args=["test", "--config", config_path(config), "--ckpt_path", checkpoint, *QUIET])
    wandb.finish()
    return cli


def test_metrics(config: str, checkpoint: str) -> dict[str, float]:
    """Every ``test/`` metric (fractions) of ``checkpoint``, tested with the shipped ``config``."""
    cli = test_run(config, checkpoint)
    return {key: float(value) for key, value in cli.trainer.callback_metrics.items() if key.startswith("test/")}


def fit(config: str, seed: int, *extra: str) -> Any:
    """Fit the shipped ``config`` at ``seed`` through the CLI, as a user would (``extra``: more arguments);
    return the CLI (its trainer and model)."""
    import wandb

    from lightning_kd.cli import KDLightningCLI

    cli = KDLightningCLI(args=["fit", "--config", config_path(config), "--seed_everything", str(seed), *extra,
                               *QUIET])
    wandb.finish()
    return cli


def fit_and_test(config: str, seed: int, checkpoint: str, *extra: str) -> dict[str, float]:
    """:func:`fit` the shipped ``config`` at ``seed``, then :func:`test_metrics` of ``checkpoint``."""
    fit(config, seed, *extra)
    return test_metrics(config, checkpoint)


def summarise_rows(per_seed: dict[int, dict[str, dict[str, float]]]) -> dict[str, dict[str, Any]]:
    """``{row: {metric: spread over seeds}}`` from ``{seed: {row: {metric: value}}}``."""
    seeds = sorted(per_seed)
    return {row: {key: spread([per_seed[s][row][key] for s in seeds]) for key in per_seed[seeds[0]][row]}
            for row in per_seed[seeds[0]]}


def print_rows(summary: dict[str, dict[str, Any]], seeds: list[int],
               extra: dict[str, tuple[str, float]] | None = None) -> None:
    """Print ``test/acc`` per row in %, mean ± std, with the ``extra`` metrics beside it (metric: (label, scale):
    100 shows a fraction in %, 1 a number as it is)."""
    print(f"\ntest top-1 accuracy (%), mean ± std over seeds {seeds}")
    for row, metrics in summary.items():
        shown = "".join(f"   ({label} {scale * metrics[key]['mean']:.2f} ± {scale * metrics[key]['std']:.2f})"
                        for key, (label, scale) in (extra or {}).items() if key in metrics)
        stats = metrics["test/acc"]
        print(f"  {row:<40} {100 * stats['mean']:6.2f} ± {100 * stats['std']:.2f}{shown}")


SeedRows = dict[str, dict[str, float]]
"""One seed's results: ``{row: {metric: value}}``."""

MNIST5K_METRIC = ("test top-1 accuracy of each run's last-epoch weights (MNIST-5k test split, 3,000 images; "
                  "1,000 training images)")


def run_seeds(script: str, run_seed: Callable[[int], SeedRows], metric: str = MNIST5K_METRIC,
              shown: dict[str, tuple[str, float]] | None = None, seeds: list[int] | None = None) -> None:
    """The ``main`` of a seed benchmark: parse ``--seeds``/``--output``, run each seed in a fresh folder,
    print mean ± std per row and write ``benchmarks/results/<script>.json``.

    Args:
        script: The benchmark's file name without ``.py`` (names its command and its JSON record).
        run_seed: One seed's rows, run in the current (fresh, temporary) folder.
        metric: What the numbers are, for the record.
        shown: Metrics printed beside ``test/acc`` (metric: (label, scale), see :func:`print_rows`).
        seeds: Default seeds (0, 1, 2).
    """
    parser = argparse.ArgumentParser(description=f"benchmarks/{script}.py: see its docstring")
    parser.add_argument("--seeds", type=int, nargs="+", default=seeds or [0, 1, 2])
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / f"{script}.json")
    args = parser.parse_args()
    started = time.time()
    per_seed = {}
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as folder:  # each seed's checkpoints apart from the others'
            os.chdir(folder)
            try:
                per_seed[seed] = run_seed(seed)
            finally:
                os.chdir(REPO)
        print(f"seed {seed}: {per_seed[seed]}", flush=True)
    summary = summarise_rows(per_seed)
    print_rows(summary, args.seeds, shown)
    write_record(args.output, command=f"python benchmarks/{script}.py --seeds " + " ".join(map(str, args.seeds)),
                 metric=metric, started=started, per_seed=per_seed, summary=summary)
