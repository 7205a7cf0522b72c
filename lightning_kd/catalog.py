"""What the package ships: its methods, networks and configs, found rather than listed by hand.

Example:
    >>> "BornAgain" in {cls.__name__ for cls in task_classes()}
    True
    >>> "digits_ban" in shipped_configs()
    True
"""

from __future__ import annotations

import inspect
from importlib.resources import files
from pathlib import Path


def task_classes() -> list[type]:
    """Every method: the non-abstract task classes of :data:`lightning_kd.tasks.TASKS`, by name."""
    from lightning_kd.tasks import TASKS

    return [cls for cls in TASKS.values() if not inspect.isabstract(cls)]


def shipped_configs() -> dict[str, Path]:
    """The configs installed with the package, by name (file name without ``.yaml``)."""
    folder = files("lightning_kd") / "configs"
    return {entry.name.removesuffix(".yaml"): Path(str(entry)) for entry in sorted(folder.iterdir(), key=str)
            if entry.name.endswith(".yaml")}
