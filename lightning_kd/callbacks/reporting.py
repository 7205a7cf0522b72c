"""Reporting shared by the callbacks: metrics to every logger, W&B summaries and tables, console tables.

One convention for the console: accuracies, agreements and calibration errors are shown in percent
with two decimals (:func:`percent`); the loggers, JSON files and W&B keep fractions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_only
from rich import get_console
from rich.table import Table


def percent(value: float | None) -> str:
    """A fraction as the console tables show it: percent, two decimals; blank when missing.

    Example:
        >>> percent(0.98333), percent(None)
        ('98.33', '')
    """
    return "" if value is None else f"{100 * value:.2f}"


def log_metrics(trainer: pl.Trainer, metrics: Mapping[str, float], axis: str | None = None) -> None:
    """Send ``metrics`` to every logger of the trainer at the current global step.

    With ``axis`` (one of the metrics), W&B plots every other one against it: each is defined with
    that step metric by its exact name, which no glob rule (such as Lightning's ``*`` against
    ``trainer/global_step``) can override.
    """
    if axis is not None:
        _define_axis(trainer, [key for key in metrics if key != axis], axis)
    for logger in trainer.loggers:
        logger.log_metrics(dict(metrics), step=trainer.global_step)


@rank_zero_only
def _define_axis(trainer: pl.Trainer, keys: list[str], axis: str) -> None:
    for run in wandb_runs(trainer):
        defined = _DEFINED.setdefault(run.id, set())
        if axis not in defined:
            run.define_metric(axis)
            defined.add(axis)
        for key in keys:
            if key not in defined:
                run.define_metric(key, step_metric=axis)
                defined.add(key)


_DEFINED: dict[str, set[str]] = {}
"""Metric names already defined, by W&B run id."""


def wandb_runs(trainer: pl.Trainer) -> list[Any]:
    """The W&B runs of the trainer's ``WandbLogger`` s (none without one)."""
    return [logger.experiment for logger in trainer.loggers if isinstance(logger, WandbLogger)]


@rank_zero_only
def update_wandb_summary(trainer: pl.Trainer, summary: Mapping[str, Any]) -> None:
    """Write ``summary`` into each W&B run's summary."""
    for run in wandb_runs(trainer):
        run.summary.update(dict(summary))


@rank_zero_only
def log_wandb_table(trainer: pl.Trainer, key: str, columns: Sequence[str], data: list[list[Any]]) -> None:
    """Log a table to each ``WandbLogger``."""
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_table(key=key, columns=list(columns), data=data)


@rank_zero_only
def log_wandb_line_plot(trainer: pl.Trainer, key: str, columns: Sequence[str], data: list[list[Any]], x: str, y: str,
                        title: str) -> None:
    """Log a line plot of column ``y`` against column ``x`` of a table to each W&B run."""
    runs = wandb_runs(trainer)
    if not runs:
        return
    import wandb

    for run in runs:
        run.log({key: wandb.plot.line(wandb.Table(columns=list(columns), data=data), x, y, title=title)})


@rank_zero_only
def print_table(title: str, header: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    """Print a table (first column left-aligned, the others right-aligned) on rank zero."""
    table = Table(title=title)
    for index, name in enumerate(header):
        table.add_column(name, justify="left" if index == 0 else "right")
    for row in rows:
        table.add_row(*row)
    get_console().print(table)  # the console a live progress bar draws on: the table goes above the bar
