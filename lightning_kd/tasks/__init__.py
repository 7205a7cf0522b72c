"""One LightningModule per method: every task class of this package's modules, found rather than listed.

A method is one module here. Each task class it defines (a subclass of
:class:`~lightning_kd.tasks.base.BaseTask`) is exported as ``lightning_kd.tasks.<Name>`` and
``lightning_kd.<Name>``, listed by ``lightning-kd list``, documented on the API page and run through the
contract tests, with no list to edit: :data:`TASKS` is the one registry all of those read.

Example:
    >>> TASKS["VanillaKD"].__module__
    'lightning_kd.tasks.vanilla_kd'
    >>> "BaseTask" in __all__ and "BornAgain" in __all__
    True
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

from lightning_kd.tasks.base import BaseTask


def _find_tasks() -> dict[str, type[BaseTask]]:
    found: dict[str, type[BaseTask]] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda info: info.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for name, value in vars(module).items():
            if inspect.isclass(value) and issubclass(value, BaseTask) and value.__module__ == module.__name__:
                found[name] = value
    return dict(sorted(found.items()))


TASKS: dict[str, type[BaseTask]] = _find_tasks()
"""Every task class of the package by name, the abstract bases (``BaseTask``, ``DistillationTask``, ...) included."""

globals().update(TASKS)
__all__ = ["TASKS", *TASKS]
