"""End-of-run summary: every network of the task by role, written to the console and the W&B run summary."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

from lightning_kd.metrics import teacher_metric_names, teachers_ensemble_metric_name
from lightning_kd.models import count_parameters
from lightning_kd.reporting import log_wandb_table, percent, print_table, update_wandb_summary

# (column header, metric of the handed-on network); teachers fill only accuracy and agreement
_COLUMNS = (("accuracy", "acc"), ("top-5 accuracy", "acc_top5"), ("ECE", "ece"))


class RunSummary(Callback):
    """At the end of fit (and of test), summarise every network of the task side by side.

    One row per role (``student``, ``teacher``, ``teacher_2``, ...; a
    :class:`~lightning_kd.tasks.Classifier`'s ``net``): its parameters and the last logged ``val/``
    (or ``test/``) accuracy; top-5 accuracy and ECE for the trained network; for each teacher, the
    trained network's top-1 agreement with it; with several teachers, a row for their ensemble; and
    the task's own columns (:meth:`~lightning_kd.tasks.base.BaseTask.summary_columns`, fractions shown
    in percent, e.g. each teacher's mean weight). Printed on rank zero in percent after fit (after test, Lightning's own
    table has the numbers) and, with a :class:`~pytorch_lightning.loggers.WandbLogger`, stored in the
    run summary as ``summary/<stage>/<metric>`` (fractions, the metric's logged name),
    ``summary/<role>_params`` and ``summary/<role>/<column>``, and logged as the table
    ``summary/<stage>/networks``.

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
        logged = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(f"{stage}/")}
        networks_of = getattr(pl_module, "networks", None)
        networks = networks_of() if callable(networks_of) else {"model": pl_module}
        handed_on = getattr(pl_module, "handed_on", "model")
        columns_of = getattr(pl_module, "summary_columns", None)
        extra: dict[str, dict[str, float]] = columns_of() if callable(columns_of) else {}
        extra_names = list(dict.fromkeys(name for values in extra.values() for name in values))
        summary: dict[str, Any] = {f"summary/{role}_params": count_parameters(net) for role, net in networks.items()}
        summary.update({f"summary/{role}/{name}": value for role, values in extra.items()
                        for name, value in values.items()})
        rows: list[list[Any]] = []  # fractions; None where a cell does not apply
        for role, network in networks.items():
            if role == handed_on:
                values = {column: logged.get(f"{stage}/{key}") for column, key in _COLUMNS}
                agreement = None
                names = [f"{stage}/{key}" for _, key in _COLUMNS]
            else:
                acc_name, agreement_name = teacher_metric_names(stage, role)
                values = {"accuracy": logged.get(acc_name)}
                agreement = logged.get(agreement_name)
                names = [acc_name, agreement_name]
            summary.update({f"summary/{name}": logged[name] for name in names if name in logged})
            rows.append([role, count_parameters(network), *(values.get(column) for column, _ in _COLUMNS), agreement,
                         *(extra.get(role, {}).get(name) for name in extra_names)])
        ensemble = teachers_ensemble_metric_name(stage)
        if ensemble in logged:
            summary[f"summary/{ensemble}"] = logged[ensemble]
            rows.append(["ensemble", None, logged[ensemble], *([None] * (len(_COLUMNS) + len(extra_names)))])
        self.summary.update(summary)
        update_wandb_summary(trainer, summary)
        header = ["network", "parameters", *(column for column, _ in _COLUMNS), f"agreement with {handed_on}",
                  *extra_names]
        log_wandb_table(trainer, f"summary/{stage}/networks", header, rows)
        if self.print_table and stage == "val":  # after test, Lightning prints the metrics itself
            shown = [[row[0], "" if row[1] is None else f"{row[1]:,}",
                      *(percent(value) for value in row[2:])] for row in rows]
            agreement_column = 2 + len(_COLUMNS)
            if all(row[agreement_column] == "" for row in shown):  # nothing to agree with
                header = header[:agreement_column] + header[agreement_column + 1:]
                shown = [row[:agreement_column] + row[agreement_column + 1:] for row in shown]
            print_table("lightning-kd summary: validation (last epoch), in %", header, shown)
