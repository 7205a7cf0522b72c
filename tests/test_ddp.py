"""Two-process DDP on CPU (gloo): training runs, ranks agree, the teacher stays out of the sync."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from pytorch_lightning import Callback, seed_everything

from lightning_kd import VanillaKD
from lightning_kd.cli import main
from lightning_kd.data import DigitsDataModule
from lightning_kd.models import MLP, SmallCNN
from tests.conftest import CONFIGS
from tests.helpers import cpu_trainer


class RankReport(Callback):
    """Each rank writes its synced metrics and a fingerprint of both networks."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.ddp_ignored: list[str] = []

    def on_train_start(self, trainer, pl_module) -> None:
        wrapper = trainer.strategy.model  # the DistributedDataParallel wrapper while training
        self.ddp_ignored = sorted(getattr(wrapper, "parameters_to_ignore", []))

    def on_fit_end(self, trainer, pl_module) -> None:
        report = {
            "metrics": {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")},
            "student": [float(p.double().sum()) for p in pl_module.student.parameters()],
            "teacher": [float(t.double().sum()) for t in pl_module.teacher.state_dict().values()],
            "teacher_training": pl_module.teacher.training,
            "world_size": trainer.world_size,
            "trainable": sorted(n for n, p in pl_module.named_parameters() if p.requires_grad),
            "ddp_ignored": self.ddp_ignored,
        }
        (self.folder / f"rank{trainer.global_rank}.json").write_text(json.dumps(report))


def test_ddp_spawn_two_processes_agree(tmp_path: Path) -> None:
    seed_everything(0)
    teacher = SmallCNN(widths=(8, 16), num_classes=10)
    teacher_before = [float(t.double().sum()) for t in teacher.state_dict().values()]
    task = VanillaKD(MLP(hidden_sizes=(16,), num_classes=10), teacher)
    trainer = cpu_trainer(devices=2, strategy="ddp_spawn", max_epochs=2, callbacks=[RankReport(tmp_path)])
    trainer.fit(task, datamodule=DigitsDataModule(batch_size=32))
    rank0, rank1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert rank0["world_size"] == 2
    assert rank0["metrics"] == rank1["metrics"]  # torchmetrics synced across ranks
    assert {"val/acc", "val/agreement", "val/teacher_acc"} <= set(rank0["metrics"])
    assert rank0["student"] == rank1["student"]  # gradients all-reduced
    assert rank0["teacher"] == rank1["teacher"] == teacher_before  # teacher untouched
    assert not rank0["teacher_training"] and not rank1["teacher_training"]
    assert rank0["trainable"] and all(name.startswith("student.") for name in rank0["trainable"])
    assert set(rank0["ddp_ignored"]) == {f"teacher.{k}" for k in teacher.state_dict()}


def test_cli_ddp_strategy_in_a_subprocess(tmp_path: Path, monkeypatch) -> None:
    # strategy="ddp" re-executes the command line, so it runs as a user would: a fresh process
    monkeypatch.chdir(tmp_path)
    tiny = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "4", "--trainer.limit_val_batches", "2",
            "--trainer.logger", "false", "--trainer.enable_progress_bar", "false"]
    main(["fit", "--config", str(CONFIGS / "digits_teacher.yaml"), *tiny])
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run(
        [sys.executable, "-m", "lightning_kd", "fit", "--config", str(CONFIGS / "digits_kd.yaml"), *tiny,
         "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in result.stdout + result.stderr
    checkpoint = torch.load(tmp_path / "checkpoints/digits/kd-student.ckpt", weights_only=True)
    assert checkpoint["lightning_kd"]["network"] == "student"
