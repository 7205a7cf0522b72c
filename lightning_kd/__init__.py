"""lightning-kd: knowledge-distillation methods as PyTorch Lightning modules."""

from lightning_kd.tasks import (
    BaseTask,
    BornAgain,
    Classifier,
    DeepMutualLearning,
    DistillationTask,
    DistributionMatchingKD,
    MultiTeacherKD,
    SelfDistillation,
    TeacherFreeKD,
    VanillaKD,
)

__version__ = "0.1.0"

__all__ = [
    "BaseTask",
    "BornAgain",
    "Classifier",
    "DeepMutualLearning",
    "DistillationTask",
    "DistributionMatchingKD",
    "MultiTeacherKD",
    "SelfDistillation",
    "TeacherFreeKD",
    "VanillaKD",
    "__version__",
]
