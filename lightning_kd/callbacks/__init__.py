"""Callbacks, kept apart from the methods."""

from lightning_kd.callbacks.artifacts import CheckpointArtifacts
from lightning_kd.callbacks.compiled_step import CompiledStep
from lightning_kd.callbacks.epoch_checkpoints import EpochCheckpoints
from lightning_kd.callbacks.fast_teacher import FastTeacher
from lightning_kd.callbacks.generations import Generations
from lightning_kd.callbacks.output_lock import OutputLock
from lightning_kd.callbacks.predictions import PredictionWriter
from lightning_kd.callbacks.run_folder import RunFolder
from lightning_kd.callbacks.summary import RunSummary
from lightning_kd.callbacks.teacher_cache import TeacherOutputCache

__all__ = [
    "CheckpointArtifacts",
    "CompiledStep",
    "EpochCheckpoints",
    "FastTeacher",
    "Generations",
    "OutputLock",
    "PredictionWriter",
    "RunFolder",
    "RunSummary",
    "TeacherOutputCache",
]
