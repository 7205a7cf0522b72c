"""lightning-kd: knowledge-distillation methods as PyTorch Lightning modules.

Every task class (one per method, and their bases) is importable from here: ``from lightning_kd import
VanillaKD``. The list is :data:`lightning_kd.tasks.TASKS`, found from the modules of ``lightning_kd.tasks``.
"""

from lightning_kd import tasks as _tasks

__version__ = "0.2.0.dev0"

globals().update(_tasks.TASKS)
__all__ = [*_tasks.TASKS, "__version__"]
