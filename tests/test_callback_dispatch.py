"""Lightning's trainers skip the callback hooks that do nothing (``compat.skip_callback_no_ops``), and callbacks see
every call they saw before: the same hooks, in the same order, with the same arguments."""

from __future__ import annotations

import inspect
import sys
from typing import Any

import pytest
import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback, Checkpoint
from pytorch_lightning.trainer import call as lightning_call
from torch import Tensor, nn

from lightning_kd import Classifier, compat
from lightning_kd.data import DigitsDataModule

HOOKS = sorted(compat._CALLBACK_NO_OPS)


def describe(value: Any) -> Any:
    """What a hook's argument is, comparable between two fits (a tensor's shape, a batch's keys, a number)."""
    if isinstance(value, Tensor):
        return ("tensor", tuple(value.shape))
    if isinstance(value, dict):
        return tuple(sorted((key, describe(item)) for key, item in value.items()))
    if isinstance(value, (int, float, str, type(None))):
        return value
    return type(value).__name__


def recording_hook(name: str):
    def hook(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any, **kwargs: Any) -> None:
        assert pl_module is trainer.lightning_module
        self.calls.append((self.label, name, tuple(describe(value) for value in args),
                           tuple(sorted((key, describe(value)) for key, value in kwargs.items()))))
    return hook


class Recorder(Callback):
    """Every hook recorded (name, arguments), in a list shared with the other recorders of the fit."""

    def __init__(self, label: str, calls: list[tuple[Any, ...]]) -> None:
        self.label, self.calls = label, calls


for _name in HOOKS:
    setattr(Recorder, _name, recording_hook(_name))


class CheckpointRecorder(Recorder, Checkpoint):
    """A monitoring callback: Lightning calls its on_train_epoch_end after every other callback's."""


class Quiet(Callback):
    """Overrides nothing: its hooks are Callback's own. Counts how often Lightning reads its state key."""

    def __init__(self) -> None:
        self.state_key_reads = 0

    @property
    def state_key(self) -> str:
        self.state_key_reads += 1
        return "Quiet"


def fit(callbacks: list[Callback], monkeypatch: pytest.MonkeyPatch, lean: bool = True,
        **trainer_arguments: Any) -> pl.Trainer:
    """A short fit and a validation, dispatched by ours (``lean``) or by Lightning's own dispatcher."""
    task = Classifier(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), lr_scheduler="none")
    dispatch = compat._call_callback_hooks_that_act if lean else compat._LIGHTNING_CALL_CALLBACK_HOOKS
    monkeypatch.setattr(lightning_call, "_call_callback_hooks", dispatch)
    trainer_arguments.setdefault("enable_checkpointing", False)
    trainer = pl.Trainer(logger=False, enable_progress_bar=False,
                         enable_model_summary=False, max_epochs=2, limit_train_batches=3, limit_val_batches=2,
                         num_sanity_val_steps=1, callbacks=callbacks, **trainer_arguments)
    trainer.fit(task, datamodule=DigitsDataModule(batch_size=32))
    trainer.validate(task, datamodule=DigitsDataModule(batch_size=32), verbose=False)
    return trainer


def test_importing_the_tasks_makes_lightning_skip_the_hooks_that_do_nothing() -> None:
    assert lightning_call._call_callback_hooks is compat._call_callback_hooks_that_act
    # what it stands in for: Lightning's dispatcher, with the parameters and the steps it was written against
    original = compat._LIGHTNING_CALL_CALLBACK_HOOKS
    assert tuple(inspect.signature(original).parameters) == compat._DISPATCH_PARAMETERS
    source = inspect.getsource(original)
    for step in ("_current_fx_name = hook_name", "monitoring_callbacks is True", "(EarlyStopping, Checkpoint)",
                 "monitoring_callbacks is False", "trainer.profiler.profile", "fn(trainer, trainer.lightning_module"):
        assert step in source, f"Lightning's callback dispatcher changed ({step!r}): check compat's copy"
    assert compat.skip_callback_no_ops()  # once is enough: a second call keeps it
    compat.restore_lightning_callback_dispatch()
    try:
        assert lightning_call._call_callback_hooks is original
    finally:
        assert compat.skip_callback_no_ops()
    assert lightning_call._call_callback_hooks is compat._call_callback_hooks_that_act


def calls_of_a_fit(monkeypatch: pytest.MonkeyPatch, tmp_path: Any, lean: bool) -> list[tuple[Any, ...]]:
    calls: list[tuple[Any, ...]] = []
    patched = Callback()  # a hook set on one instance is its own
    patched.on_before_backward = lambda trainer, module, loss: calls.append(("instance", "on_before_backward"))
    # the checkpoint recorder stands in for Lightning's ModelCheckpoint (nothing is written)
    fit([Recorder("first", calls), CheckpointRecorder("checkpoint", calls), patched, Recorder("last", calls)],
        monkeypatch, lean, enable_checkpointing=True, default_root_dir=tmp_path)
    return calls


def test_callbacks_see_the_calls_they_saw_under_lightnings_dispatcher(monkeypatch: pytest.MonkeyPatch,
                                                                     tmp_path: Any) -> None:
    lean = calls_of_a_fit(monkeypatch, tmp_path / "lean", lean=True)
    lightning = calls_of_a_fit(monkeypatch, tmp_path / "lightning", lean=False)
    assert lean == lightning
    names = {name for _, name, *_ in lightning}
    assert {"on_train_batch_start", "on_before_backward", "on_after_backward", "on_before_optimizer_step",
            "on_before_zero_grad", "on_train_batch_end", "on_validation_batch_end", "setup", "teardown"} <= names
    # Lightning's order of on_train_epoch_end: the monitoring callback after the others
    epoch_ends = [label for label, name, *_ in lightning if name == "on_train_epoch_end"]
    assert epoch_ends == ["first", "last", "checkpoint"] * 2
    assert lightning.count(("instance", "on_before_backward")) == 6


def test_a_hook_patched_onto_callback_itself_is_still_called(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    monkeypatch.setattr(Callback, "on_train_batch_start",
                        lambda self, trainer, module, batch, batch_idx: seen.append(batch_idx))
    fit([Quiet()], monkeypatch)
    assert seen == [0, 1, 2] * 2


def no_op_calls(monkeypatch: pytest.MonkeyPatch, lean: bool) -> tuple[int, int]:
    """How often a fit ran Callback's own on_before_backward (a no-op), and read the quiet callback's state key."""
    no_op = Callback.on_before_backward.__code__
    runs = 0

    def count(frame: Any, event: str, argument: Any) -> None:
        nonlocal runs
        runs += event == "call" and frame.f_code is no_op

    quiet = Quiet()
    sys.setprofile(count)
    try:
        fit([quiet], monkeypatch, lean)
    finally:
        sys.setprofile(None)
    return runs, quiet.state_key_reads


def test_no_op_hooks_are_skipped_and_a_profiler_sees_every_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    # Lightning runs the hook and reads the callback's state key for every hook it dispatches (its profiler
    # context's name): six steps of six hooks each
    (lean_runs, lean_reads), (runs, reads) = no_op_calls(monkeypatch, True), no_op_calls(monkeypatch, False)
    assert (lean_runs, runs) == (0, 6)
    assert lean_reads < 10 and reads > 6 * 6
    # with a profiler, Lightning dispatches every hook (the profile keeps its rows)
    trainer = fit([Quiet()], monkeypatch, profiler="simple")
    assert "[Callback]Quiet.on_before_backward" in trainer.profiler.recorded_durations
