"""The README's method example runs as written."""

from __future__ import annotations

import re

import torch
from pytorch_lightning import seed_everything

from lightning_kd.data import DigitsDataModule
from lightning_kd.models import MLP, SmallCNN
from tests.conftest import REPO
from tests.helpers import cpu_trainer


def test_the_readmes_new_method_trains_its_projector() -> None:
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)
    source = next(block for block in blocks if "class FeatureKD" in block)
    namespace: dict = {}
    exec(source, namespace)
    seed_everything(0)
    task = namespace["FeatureKD"](MLP(hidden_sizes=(16,), num_classes=10), SmallCNN(widths=(8, 16), num_classes=10))
    before = task.projector.weight.detach().clone()
    trainer = cpu_trainer(limit_train_batches=3, limit_val_batches=1)
    trainer.fit(task, datamodule=DigitsDataModule(batch_size=32))
    assert not torch.equal(task.projector.weight, before)
    assert "train/match_loss" in trainer.callback_metrics


def test_the_readmes_methods_table_is_the_registry() -> None:
    from lightning_kd.catalog import TABLE_END, TABLE_START, methods_table

    text = (REPO / "README.md").read_text()
    table = text[text.index(TABLE_START) + len(TABLE_START):text.index(TABLE_END)].strip()
    assert table == methods_table(), "the README's methods table is stale: run python -m lightning_kd.catalog README.md"


def test_the_readmes_python_quickstart_runs_as_written() -> None:
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)
    source = next(block for block in blocks if "DecoupledKD(" in block)
    namespace: dict = {}
    seed_everything(0)
    exec(source, namespace)
    assert float(namespace["trainer"].callback_metrics["val/acc"]) > 0.5  # digits: a working student, not chance
