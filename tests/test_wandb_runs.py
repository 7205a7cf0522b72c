"""W&B runs as their users expect: failed runs marked failed, WANDB_MODE honoured, a resumed fit in its own run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import wandb

from lightning_kd.cli import KDLightningCLI, main
from tests.conftest import CONFIGS

QUICK = ["--trainer.enable_progress_bar", "false", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
         "--trainer.limit_val_batches", "1"]


@pytest.fixture(autouse=True)
def _finish_wandb():
    yield
    wandb.finish()


def _exit_codes(run_folder: Path) -> list[int]:
    """The exit codes W&B recorded for an offline run (its own log of what it sent the backend at the end)."""
    log = (run_folder / "logs/debug.log").read_text()
    return [int(code) for code in re.findall(r"got exitcode: (-?\d+)", log)]


def test_a_failed_run_is_recorded_as_failed(in_tmp: Path) -> None:
    # issue 24: the non-finite stop exited 2 while W&B recorded exit code 0 (a finished run)
    with pytest.raises(FloatingPointError):
        main(["fit", "--config", "digits_teacher", *QUICK, "--model.init_args.optimizer.init_args.lr", "1e38"])
    (run,) = (in_tmp / "runs/wandb").glob("offline-run-*")
    assert _exit_codes(run) == [2]
    main(["fit", "--config", "digits_teacher", *QUICK])
    wandb.finish()  # as the process's exit does
    finished = [path for path in (in_tmp / "runs/wandb").glob("offline-run-*") if path != run]
    assert [_exit_codes(path) for path in finished] == [[0]]


def test_wandb_mode_decides_online_or_offline_unless_the_config_says(in_tmp: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*extra: str) -> bool:
        cli = KDLightningCLI(args=["--config", str(CONFIGS / "digits_teacher.yaml"), *extra], run=False)
        return cli.trainer.logger.offline

    monkeypatch.setenv("WANDB_MODE", "online")
    assert offline() is False  # the shipped configs no longer hard-code offline
    assert offline("--trainer.logger.init_args.offline", "true") is True
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert offline() is True
    monkeypatch.delenv("WANDB_MODE")
    assert offline() is True  # unset: offline, no account needed


def test_a_resumed_fit_continues_its_wandb_run(in_tmp: Path) -> None:
    settings = ["fit", "--config", "digits_teacher", *QUICK, "--trainer.callbacks.save_last", "true",
                "--model.init_args.lr_scheduler", "none"]
    main(settings)
    wandb.finish()
    run = (in_tmp / "checkpoints/digits_teacher/latest").resolve()
    first = torch.load(run / "last.ckpt", weights_only=False)["lightning_kd"]["wandb"]["id"]
    resume = [str(CONFIGS / "digits_teacher.yaml") if arg == "digits_teacher" else arg for arg in settings]
    cli = KDLightningCLI(args=[*resume, "--trainer.max_epochs", "2", "--ckpt_path", "last"])
    assert cli.trainer.logger.experiment.id == first


def test_a_run_refused_at_setup_leaves_no_wandb_run_and_no_run_folder(in_tmp: Path) -> None:
    from lightning_kd.errors import Refusal

    with pytest.raises(Refusal, match="fails on inputs of shape"):  # a network that does not fit the data: at setup
        main(["fit", "--config", "digits_teacher", *QUICK, "--model.init_args.net.init_args.in_channels", "3"])
    assert not list(in_tmp.glob("runs/wandb/offline-run-*"))
    assert not list(in_tmp.glob("checkpoints/digits_teacher/*"))

