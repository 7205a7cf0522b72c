"""Checkpoints as W&B artifacts, with the teachers they were distilled from (opt-in)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.utilities import rank_zero_only, rank_zero_warn

from lightning_kd.reporting import wandb_runs


class CheckpointArtifacts(Callback):
    """At the end of fit, log the run's checkpoints to W&B as one ``model`` artifact; record its teachers.

    The artifact (``<run name>-checkpoints``) holds every file the ``ModelCheckpoint`` callbacks
    kept (and the Born-Again generation checkpoints, when there are). Each teacher checkpoint the task
    was given becomes an artifact of its own (``teacher-<config>-<file name>``): used as the run's input when
    online, so W&B's lineage graph shows teacher -> student; offline (where W&B cannot mark inputs),
    logged beside it, and named with its SHA-256 in the student artifact's metadata.

    Add it with ``--trainer.callbacks+=lightning_kd.callbacks.CheckpointArtifacts``.
    """

    def __init__(self) -> None:
        self.logged: dict[str, Any] = {}

    @rank_zero_only
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        runs = wandb_runs(trainer)
        if not runs:
            rank_zero_warn("CheckpointArtifacts: no WandbLogger, so no artifacts were logged")
            return
        import wandb

        run = runs[0]
        teachers = []
        for path in _teacher_checkpoints(pl_module):
            artifact = wandb.Artifact(_teacher_artifact_name(path), type="model",
                                      metadata={"path": str(path), "sha256": _sha256(path)})
            artifact.add_file(str(path))
            if run.offline:
                run.log_artifact(artifact)
            else:
                run.use_artifact(artifact)
            teachers.append({"name": artifact.name, "sha256": artifact.metadata["sha256"]})
        files = sorted({Path(p) for p in _checkpoint_files(trainer) if Path(p).is_file()})
        if not files:
            rank_zero_warn("CheckpointArtifacts: no checkpoint file to log")
            return
        artifact = wandb.Artifact(f"{_artifact_name(run.name or run.id)}-checkpoints", type="model",
                                  metadata={"teachers": teachers, "method": type(pl_module).__name__})
        for path in files:
            artifact.add_file(str(path), name=path.name)
        run.log_artifact(artifact)
        self.logged = {"checkpoints": [path.name for path in files], "teachers": teachers,
                       "artifact": artifact.name}


def _teacher_checkpoints(pl_module: pl.LightningModule) -> list[Path]:
    given = getattr(pl_module, "hparams", {}).get("teacher_ckpt")
    paths = given if isinstance(given, list) else [given]
    return [Path(p) for p in paths if p is not None and Path(p).is_file()]


def _checkpoint_files(trainer: pl.Trainer) -> list[str]:
    files = []
    for callback in trainer.callbacks:  # type: ignore[attr-defined]
        if isinstance(callback, ModelCheckpoint):
            files += [callback.best_model_path, callback.last_model_path, *callback.best_k_models]
        records = getattr(callback, "records", None)  # Born-Again generations
        if isinstance(records, dict):
            files += [r.get("checkpoint") for r in records.values() if isinstance(r, dict) and r.get("checkpoint")]
    return [f for f in files if f]


def _artifact_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text)


def _teacher_artifact_name(path: Path) -> str:
    """``teacher-<config's runs folder>-<file>`` for a checkpoint in a run folder (``checkpoints/mnist5k_teacher/
    <run>/teacher.ckpt``: ``teacher-mnist5k_teacher-teacher``), so that two configs' ``teacher.ckpt`` are two
    artifacts and each run of one config a version of its artifact; ``teacher-<file>`` elsewhere."""
    resolved = path.resolve()
    runs = resolved.parent.parent
    if (runs / "latest").is_symlink():
        return _artifact_name(f"teacher-{runs.name}-{resolved.stem}")
    return _artifact_name(f"teacher-{resolved.stem}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
