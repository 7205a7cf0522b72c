"""End-of-run summary: teacher vs student, written to the console and to the W&B run summary."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_only
from rich.console import Console
from rich.table import Table

from lightning_kd.models import count_parameters

# (row label, student metric, teacher metric) per stage
_ROWS = (("accuracy", "acc", "teacher_acc"), ("top-5 accuracy", "acc_top5", None), ("ECE", "ece", None),
         ("agreement with teacher", "agreement", None))


class RunSummary(Callback):
    """At the end of fit (and of test), summarise teacher and student side by side.

    The summary holds the parameters of each network and the last logged ``val/`` (or ``test/``)
    accuracy, top-5, ECE, teacher accuracy and agreement. It is printed as a table on rank zero
    and, with a :class:`~pytorch_lightning.loggers.WandbLogger`, stored in the run summary as
    ``summary/<stage>/<metric>`` and ``summary/<role>_params``.

    Args:
        print_table: Print the table to the console.
    """

    def __init__(self, print_table: bool = True) -> None:
        self.print_table = print_table
        self.summary: dict[str, Any] = {}

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._summarise(trainer, pl_module, "val")

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._summarise(trainer, pl_module, "test")

    def _summarise(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(f"{stage}/")}
        teacher = getattr(pl_module, "teacher", None)
        network = getattr(pl_module, "network", pl_module)
        summary: dict[str, Any] = {"summary/student_params": count_parameters(network)}
        if teacher is not None:
            summary["summary/teacher_params"] = count_parameters(teacher)
        for _, student_key, teacher_key in _ROWS:
            for key in (student_key, teacher_key):
                if key is not None and f"{stage}/{key}" in metrics:
                    summary[f"summary/{stage}/{key}"] = metrics[f"{stage}/{key}"]
        self.summary.update(summary)
        self._publish(trainer, summary, stage, teacher is not None)

    @rank_zero_only
    def _publish(self, trainer: pl.Trainer, summary: dict[str, Any], stage: str, has_teacher: bool) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.experiment.summary.update(summary)
        if not self.print_table:
            return
        title = {"val": "validation (last epoch)", "test": "test"}[stage]
        table = Table(title=f"lightning-kd summary: {title}")
        table.add_column("")
        table.add_column("student", justify="right")
        if has_teacher:
            table.add_column("teacher", justify="right")
        table.add_row("parameters", f"{summary['summary/student_params']:,}",
                      *([f"{summary['summary/teacher_params']:,}"] if has_teacher else []))
        for label, student_key, teacher_key in _ROWS:
            student_value = summary.get(f"summary/{stage}/{student_key}")
            if student_value is None:
                continue
            row = [label, f"{student_value:.4f}"]
            if has_teacher:
                teacher_value = summary.get(f"summary/{stage}/{teacher_key}") if teacher_key else None
                row.append("" if teacher_value is None else f"{teacher_value:.4f}")
            table.add_row(*row)
        Console().print(table)
