"""Reporting shared by callbacks and tasks: metrics to every logger, W&B summaries and tables, console tables.

Below both layers: a task reports through it as a callback does, and neither imports the other.

One convention for the console: accuracies, agreements and calibration errors are shown in percent
with two decimals (:func:`percent`); the loggers, JSON files and W&B keep fractions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
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


@dataclass
class Report:
    """A table a task or callback publishes (:func:`publish`): to W&B as a table and a plot, and to the console.

    ``rows`` hold the values (fractions stay fractions for W&B); ``console`` gives, per column, the
    console's header and how it shows a value (e.g. :func:`percent`).

    Example:
        >>> report = Report("exits/val", "Exits", ["exit", "accuracy"], [["1", 0.91], ["2", 0.95]],
        ...                 console=[("exit", str), ("accuracy", percent)])
        >>> report.console_rows()
        [['1', '91.00'], ['2', '95.00']]
    """

    key: str
    """W&B key of the table."""
    title: str
    """Title of the console table."""
    columns: list[str]
    rows: list[list[Any]]
    console: list[tuple[str, Callable[[Any], str]]]
    plot: tuple[str, str, str, str] | None = None
    """``(key, x column, y column, title)`` of a W&B line plot of the rows, if any."""
    plot_rows: int | None = None
    """How many rows, from the first, the plot draws (default: all)."""

    def console_rows(self) -> list[list[str]]:
        return [[show(value) for (_, show), value in zip(self.console, row, strict=True)] for row in self.rows]


def publish(trainer: pl.Trainer, report: Report) -> None:
    """Log ``report`` to every W&B run of the trainer (table, and plot if it has one) and print it (rank zero)."""
    log_wandb_table(trainer, report.key, report.columns, report.rows)
    if report.plot is not None:
        key, x, y, title = report.plot
        log_wandb_line_plot(trainer, key, report.columns, report.rows[:report.plot_rows], x, y, title)
    print_table(report.title, [header for header, _ in report.console], report.console_rows())
