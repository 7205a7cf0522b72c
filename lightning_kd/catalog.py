"""What the package ships: its methods, networks and configs, found rather than listed by hand.

Example:
    >>> "BornAgain" in {cls.__name__ for cls in task_classes()}
    True
    >>> "digits_ban" in shipped_configs()
    True
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from importlib.resources import files
from pathlib import Path


def task_classes() -> list[type]:
    """Every method (non-abstract task class) of ``lightning_kd.tasks``, by name."""
    import lightning_kd.tasks
    from lightning_kd.tasks.base import BaseTask

    for module in pkgutil.walk_packages(lightning_kd.tasks.__path__, "lightning_kd.tasks."):
        importlib.import_module(module.name)
    found, pending = set(), [BaseTask]
    while pending:
        cls = pending.pop()
        for sub in cls.__subclasses__():
            pending.append(sub)
            if sub.__module__.startswith("lightning_kd.") and not inspect.isabstract(sub):
                found.add(sub)
    return sorted(found, key=lambda c: c.__name__)


def shipped_configs() -> dict[str, Path]:
    """The configs installed with the package, by name (file name without ``.yaml``)."""
    folder = files("lightning_kd") / "configs"
    return {entry.name.removesuffix(".yaml"): Path(str(entry)) for entry in sorted(folder.iterdir(), key=str)
            if entry.name.endswith(".yaml")}


def summary_line(obj: object) -> str:
    """The first line of an object's docstring, as plain text (no reST markup).

    Example:
        >>> class Task:
        ...     "One step of the :class:`~lightning_kd.callbacks.Generations` run, ``T = 1``."
        >>> summary_line(Task)
        'One step of the Generations run, T = 1.'
    """
    lines = (inspect.getdoc(obj) or "").splitlines()
    return plain_text(lines[0]) if lines else ""


def plain_text(text: str) -> str:
    """reST markup as plain text: ``:class:`~a.b.Name``` -> ``Name``, double back-quotes dropped.

    Example:
        >>> plain_text("see :func:`lightning_kd.losses.ban_loss` and ``T = 1``")
        'see ban_loss and T = 1'
    """
    return re.sub(r":\w+:`~?(?:[\w.]*\.)?(\w+)`", r"\1", text).replace("``", "")
