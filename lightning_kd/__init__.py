"""lightning-kd: knowledge-distillation methods as PyTorch Lightning modules.

Every task class (one per method, and their bases) is importable from here: ``from lightning_kd import
VanillaKD``. The list is :data:`lightning_kd.tasks.TASKS`, found from the modules of ``lightning_kd.tasks``,
and loaded on first use: importing a submodule (``lightning_kd.errors``, say) or asking for
``__version__`` does not import every method.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.2.0.dev0"


def _tasks() -> dict[str, Any]:
    from lightning_kd.tasks import TASKS

    return TASKS


def __getattr__(name: str) -> Any:
    if name == "__all__":
        return [*_tasks(), "__version__"]
    if not name.startswith("_") and name in _tasks():
        return _tasks()[name]
    raise AttributeError(f"module 'lightning_kd' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_tasks()})
