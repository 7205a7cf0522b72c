"""A resumed fit continues the same run, exactly: the checks and the random state every task keeps.

When a fit resumes a checkpoint, whatever built the trainer (the command line or a user's Python), the task
refuses, naming each difference, a method setting other than the checkpoint's, another teacher checkpoint, a
teacher changed or dropped, other data (:func:`~lightning_kd.checkpoints.resume_refusal`), and, at fit start
once the callbacks (a Born-Again generation plan) are restored, a cosine schedule of another length. Every
checkpoint holds the random state, restored at fit start, after anything the restore builds has drawn its
initial weights: a killed and resumed run of any method ends bit-identical to the uninterrupted one on CPU. Every
checkpoint is written atomically and verified: at setup the task swaps Lightning's default writer for
:class:`~lightning_kd.checkpoint_io.VerifiedCheckpointIO` (a writer the user chose is kept). A new fit (not a resume)
into a checkpoint folder that already holds checkpoints is refused: it would replace another run's files.

A task that overrides ``setup``, ``on_load_checkpoint``, ``on_save_checkpoint`` or ``on_fit_start`` calls
``super()``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytorch_lightning.plugins.io import TorchCheckpointIO

import lightning_kd.checkpoints as checkpoints
from lightning_kd.checkpoint_io import VerifiedCheckpointIO
from lightning_kd.checkpoints import CHECKPOINT_KEY, data_identity
from lightning_kd.compat import attached_trainer
from lightning_kd.errors import Refusal
from lightning_kd.rng import collect_rng_states, set_rng_states


class ResumeChecks:
    """Mixin of :class:`~lightning_kd.tasks.base.BaseTask`: resume checks and the random state (see the module)."""

    hparams: Any
    teacher_networks: Any

    def setup(self, stage: str) -> None:
        # whatever built the trainer, a failed or partial checkpoint write stops the run and leaves the previous
        # file intact; only Lightning's default writer is swapped (exact type: a subclass is the user's choice)
        trainer = attached_trainer(self)  # type: ignore[arg-type]
        if trainer is not None and type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = VerifiedCheckpointIO()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # after the task's record is written: a resume draws what the run would have drawn
        checkpoint.setdefault(CHECKPOINT_KEY, {})["rng"] = collect_rng_states()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        trainer = attached_trainer(self)  # type: ignore[arg-type]
        if trainer is None or trainer.state.fn != "fit":  # loading to evaluate or to hand a network on
            return
        record = checkpoint.get(CHECKPOINT_KEY, {})
        refusal = checkpoints.resume_refusal(checkpoint.get("hyper_parameters", {}), self.hparams, record, None,
                                             str(trainer.ckpt_path), self.teacher_networks(),
                                             data_identity(trainer.datamodule))
        if refusal:
            raise Refusal(refusal)
        self._resumed_record = (record, str(trainer.ckpt_path))
        self._rng_on_resume = record.get("rng")

    def on_fit_start(self) -> None:
        trainer = attached_trainer(self)  # type: ignore[arg-type]
        if trainer is not None and trainer.ckpt_path is None and not trainer.fast_dev_run:
            refuse_earlier_runs_files(trainer)
        if (resumed := self.__dict__.pop("_resumed_record", None)) is not None:
            refusal = checkpoints.resume_refusal({}, {}, resumed[0], checkpoints.cosine_epochs(self), resumed[1])
            if refusal:
                raise Refusal(refusal)
        if (states := self.__dict__.pop("_rng_on_resume", None)) is not None:
            set_rng_states(states)


def refuse_earlier_runs_files(trainer: Any) -> None:
    """Refuse a new fit whose checkpoint folder already holds checkpoints: it would replace another run's files.

    (The command line gives every run a folder of its own; from Python, give each run its own ``dirpath``, or
    resume that run with ``ckpt_path``.)
    """
    for callback in trainer.checkpoint_callbacks:
        folder = Path(callback.dirpath) if getattr(callback, "dirpath", None) else None
        found = sorted(path.name for path in folder.glob("*.ckpt")) if folder is not None and folder.is_dir() else []
        if found:
            shown = ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
            raise Refusal(f"{folder} holds another run's checkpoints ({shown}), which this new run would replace: "
                          "give it another folder (the ModelCheckpoint's dirpath), move them away, or resume that run "
                          "(ckpt_path)")
