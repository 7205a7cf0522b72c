"""Progress: one line per epoch in a log, the method's position and validation accuracy on the bar."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml

from lightning_kd import BornAgain
from lightning_kd.callbacks import Generations
from lightning_kd.callbacks.progress import EpochLines, KDProgressBar
from lightning_kd.cli import main
from lightning_kd.data import DigitsDataModule
from lightning_kd.models import SmallCNN
from tests.conftest import CONFIGS
from tests.helpers import cpu_trainer


def test_a_log_gets_one_line_per_epoch_with_generation_and_accuracy(in_tmp: Path, capsys) -> None:
    settings = yaml.safe_load((CONFIGS / "digits_ban.yaml").read_text())
    settings["trainer"]["callbacks"][1]["init_args"].update(generations=1, epochs=2)
    (in_tmp / "ban.yaml").write_text(yaml.safe_dump(settings))
    main(["fit", "--config", "ban.yaml", "--trainer.logger", "false", "--trainer.limit_train_batches", "3"])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch ")]
    expected = [["epoch 1/4", "generation 0/1"], ["epoch 2/4", "generation 0/1"], ["epoch 3/4", "generation 1/1"],
                ["epoch 4/4", "generation 1/1"]]
    assert [line.split(" | ")[:2] for line in lines] == expected
    assert all(re.search(r"\| val/acc \d+\.\d\d% \| train/loss \d\.\d{4} \| \d+\.\d s$", line) for line in lines)


def test_every_n_steps_and_the_bars_metrics(capsys) -> None:
    task = BornAgain(SmallCNN(widths=(8, 16), num_classes=10))
    bar = KDProgressBar()
    trainer = cpu_trainer(max_epochs=None, limit_train_batches=4, enable_progress_bar=True,
                          callbacks=[EpochLines(every_n_steps=2), Generations(generations=1, epochs=1,
                                                                              print_table=False)])
    trainer.fit(task, datamodule=DigitsDataModule())
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" | ")[0] for line in lines if line.startswith(("step", "epoch"))] == [
        "step 2", "step 4", "epoch 1/2", "step 6", "step 8", "epoch 2/2"]
    metrics = bar.get_metrics(trainer, task)
    assert metrics["generation"] == "1/1" and metrics["val/acc"].endswith("%")
    with pytest.raises(ValueError, match="every_n_steps must be >= 1"):
        EpochLines(every_n_steps=0)


def test_language_models_show_their_validation_perplexity() -> None:
    from types import SimpleNamespace

    from lightning_kd.callbacks.progress import progress_items

    trainer = SimpleNamespace(callback_metrics={"val/ppl": torch.tensor(123.456), "val/acc": torch.tensor(0.25)})
    assert progress_items(trainer, SimpleNamespace()) == {"val/ppl": "123.46", "val/acc": "25.00%"}


def test_off_a_cpu_the_bar_reads_its_metrics_on_the_logging_steps_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from lightning_kd.compat import OneBasedRichProgressBar

    reads: list[int] = []
    monkeypatch.setattr(OneBasedRichProgressBar, "get_metrics",
                        lambda self, trainer, module: reads.append(trainer.global_step) or {"train/loss": 1.0})
    bar = KDProgressBar()
    written = {0, 50}  # the steps the loggers write (log_every_n_steps 50)

    def step(global_step: int, device: str) -> dict:
        trainer = SimpleNamespace(global_step=global_step, training=True, callback_metrics={}, fast_dev_run=False,
                                  _logger_connector=SimpleNamespace(should_update_logs=global_step in written))
        return bar.get_metrics(trainer, SimpleNamespace(device=torch.device(device)))

    for global_step in range(60):  # a read waits for a GPU's queue: only on the logging steps
        assert step(global_step, "cuda") == {"train/loss": 1.0}
    assert reads == [0, 50]
    step(60, "cpu")  # a CPU's read costs nothing: every step
    step(61, "cpu")
    assert reads == [0, 50, 60, 61]
