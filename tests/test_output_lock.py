"""One live run per output folder: a lock naming its owner; a killed run's lock is detected as stale."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from lightning_kd.callbacks.output_lock import FolderLockedError, acquire, lock_path, release
from lightning_kd.cli import main
from tests.conftest import CONFIGS, REPO

HOLD = "import sys, time; from pathlib import Path; from lightning_kd.callbacks.output_lock import acquire; " \
       "acquire(Path(sys.argv[1])); print('locked', flush=True); time.sleep(120)"


def holder(folder: Path) -> subprocess.Popen:
    """Another process that takes the folder's lock and keeps running."""
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(REPO)})
    assert process.stdout is not None and process.stdout.readline().strip() == "locked"
    return process


def test_the_lock_names_its_owner_and_is_released(tmp_path: Path) -> None:
    path = acquire(tmp_path / "out")
    record = json.loads(path.read_text())
    assert record["pid"] == os.getpid() and record["host"] and record["started"]
    with pytest.raises(FolderLockedError, match=f"PID {os.getpid()}"):
        acquire(tmp_path / "out")
    release(path)
    assert not path.exists()


QUICK = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false", "--trainer.limit_train_batches", "2",
         "--trainer.limit_val_batches", "1", "--model.init_args.lr_scheduler", "none"]


def _finished_run(in_tmp: Path) -> Path:
    """A one-epoch digits teacher run: its folder (every new run has its own: a lock matters to a resume)."""
    main(["fit", "--config", str(CONFIGS / "digits_teacher.yaml"), *QUICK, "--trainer.max_epochs", "1"])
    return (in_tmp / "checkpoints/digits_teacher/latest").resolve()


def test_a_live_runs_folder_is_refused_before_training(in_tmp: Path) -> None:
    run = _finished_run(in_tmp)
    before = (run / "teacher.ckpt").read_bytes()
    process = holder(run)  # another process resuming that run
    try:
        message = rf"{run.name} is being written by another run \(PID {process.pid}"
        with pytest.raises(FolderLockedError, match=message):
            main(["fit", "--config", str(CONFIGS / "digits_teacher.yaml"), *QUICK, "--trainer.max_epochs", "2",
                  "--ckpt_path", str(run / "teacher.ckpt")])
        assert (run / "teacher.ckpt").read_bytes() == before  # nothing trained, nothing written
    finally:
        process.kill()
        process.wait()


def test_a_killed_runs_lock_is_stale_and_replaced(in_tmp: Path) -> None:
    run = _finished_run(in_tmp)
    process = holder(run)
    os.kill(process.pid, signal.SIGKILL)  # a real kill: the lock stays behind
    process.wait()
    assert lock_path(run).exists()
    with pytest.warns(UserWarning, match=f"removing a stale lock .*PID {process.pid}"):
        main(["fit", "--config", str(CONFIGS / "digits_teacher.yaml"), *QUICK, "--trainer.max_epochs", "2",
              "--ckpt_path", str(run / "teacher.ckpt")])
    assert not lock_path(run).exists()  # released at the end of the fit
