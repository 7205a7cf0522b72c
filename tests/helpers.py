from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from pytorch_lightning import Callback, Trainer

REPO = Path(__file__).resolve().parents[1]


def cpu_trainer(**kwargs: Any) -> Trainer:
    """A quiet single-process CPU trainer for tests."""
    defaults: dict[str, Any] = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        max_epochs=1,
    )
    defaults.update(kwargs)
    return Trainer(**defaults)


class StepLosses(Callback):
    """Each training step's loss, as the step returned it."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.losses.append(float(outputs["loss"]))


def record_term(task: Any, term: str) -> list[float]:
    """The values of ``term`` (a part of the task's training losses) at each training step, appended as it trains."""
    seen: list[float] = []
    original = task.training_losses

    def recorded(batch: Any) -> Any:
        losses, logits = original(batch)
        seen.append(float(losses[term]))
        return losses, logits

    task.training_losses = recorded
    return seen


def lightning_kd_process(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``python -m lightning_kd <args>`` in a process of its own, as a user runs it (W&B offline), output captured."""
    return subprocess.run([sys.executable, "-m", "lightning_kd", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "WANDB_MODE": "offline"}, timeout=300)


def only_run(runs: Path) -> Path:
    """The one run folder in a config's runs folder (``latest`` aside), finished or not."""
    folders = [path for path in runs.iterdir() if path.is_dir() and not path.is_symlink()]
    assert len(folders) == 1, folders
    return folders[0]


class SigkillMidEpoch(Callback):
    """Kills its own process with SIGKILL at a batch of an epoch: no handler, no cleanup, no atexit, as a scheduler
    or the OOM killer would. The last checkpoint is the previous epoch's end."""

    def __init__(self, epoch: int, batch: int = 1) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(self, trainer: Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), signal.SIGKILL)


# Imports the command line once, then forks a child per run, each ended by SigkillMidEpoch: real processes killed by
# a real SIGKILL, at the cost of one interpreter start. Nothing has run a torch operation before the forks.
_FORK_EACH_RUN = r"""
import json, os, signal, sys
from lightning_kd.cli import main
runs, parallel = json.loads(sys.argv[1]), int(sys.argv[2])
outcomes, running = [""] * len(runs), {}

def reap():
    pid, status = os.wait()
    index = running.pop(pid)
    killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    outcomes[index] = "" if killed else f"{runs[index][0]}: ended with status {status}, not by SIGKILL"

for index, (folder, args) in enumerate(runs):
    if len(running) >= parallel:
        reap()
    pid = os.fork()
    if pid == 0:
        os.chdir(folder)
        try:
            main(args)
        finally:
            os._exit(3)  # the run ended without its SIGKILL
    running[pid] = index
while running:
    reap()
print(json.dumps(outcomes))
"""


def run_each_until_sigkilled(runs: list[tuple[Path, list[str], int]]) -> None:
    """Runs the CLI with each ``(folder, args, epoch)`` in a process of its own (two at a time) that a real SIGKILL
    ends at the second batch of ``epoch``; fails unless every one was so killed."""
    payload = json.dumps([[str(folder), [*args, "--trainer.callbacks+=tests.helpers.SigkillMidEpoch",
                                         "--trainer.callbacks.epoch", str(epoch)]] for folder, args, epoch in runs])
    parallel = str(min(2, os.cpu_count() or 1))  # two at a time: each run is one thread, in a folder of its own
    result = subprocess.run([sys.executable, "-c", _FORK_EACH_RUN, payload, parallel], capture_output=True,
                            text=True, timeout=600,
                            env={**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "offline"})
    assert result.returncode == 0, result.stderr[-3000:]
    failures = [outcome for outcome in json.loads(result.stdout.strip().splitlines()[-1]) if outcome]
    assert not failures, "\n".join(failures) + result.stderr[-3000:]


class KillAtEpoch(Callback):
    """Simulates a run killed at the start of an epoch (the last checkpoint is the previous epoch's end)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: Trainer, pl_module: Any) -> None:
        if trainer.current_epoch == self.epoch:
            raise RuntimeError("simulated kill")
