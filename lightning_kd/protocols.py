"""What callbacks ask of a task, as protocols: callbacks depend on these, never on task classes.

A callback that drives a kind of task checks ``isinstance(pl_module, Protocol)`` and refuses other
tasks with one line; any task (this package's or a user's) that has these members works with it.

Example:
    >>> from lightning_kd import BornAgain, VanillaKD
    >>> from lightning_kd.models import MLP
    >>> isinstance(BornAgain(MLP()), Promotable), isinstance(VanillaKD(MLP(), MLP()), Promotable)
    (True, False)
    >>> isinstance(VanillaKD(MLP(), MLP()), TeacherServed)
    True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from torch import nn


@runtime_checkable
class Promotable(Protocol):
    """A task trained as a sequence of generations, each student promoted to teach the next.

    What :class:`~lightning_kd.callbacks.Generations` drives (:class:`~lightning_kd.BornAgain` is one).
    """

    generation: int
    """The generation being trained."""
    first_generation: int
    """0, or 1 when generation 0 was given as a trained teacher."""

    @property
    def student(self) -> nn.Module:
        """The network being trained."""

    @property
    def teacher(self) -> nn.Module | None:
        """The frozen previous generation (``None`` while generation 0 trains)."""

    def promote(self) -> bool:
        """Freeze the student as the next teacher and start the next generation; whether the student is a new module."""

    def plan_generations(self, epochs: Mapping[int, int]) -> None:
        """Take the epochs of each generation (its learning-rate schedule spans them)."""


@runtime_checkable
class TeacherServed(Protocol):
    """A task whose teachers' outputs a :class:`~lightning_kd.callbacks.TeacherOutputCache` may serve.

    :class:`~lightning_kd.tasks.DistillationTask` and every method over it are such tasks.
    """

    teachers: Any
    """The frozen teachers (a :class:`~lightning_kd.teachers.Teachers` container: roles, ``outputs(x, layers)``)."""
    teacher_version: int
    """Counts teacher replacements: a cache filled for an older version fills again."""

    def use_teacher_cache(self, cache: Any) -> None:
        """Serve training batches' teacher outputs from ``cache`` (``None``: stop)."""

    def cached_teacher_layers(self) -> str | Sequence[str]:
        """The teacher layers the cache must hold besides the logits."""
