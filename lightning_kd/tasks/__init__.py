"""One LightningModule per method."""

from lightning_kd.tasks.base import BaseTask
from lightning_kd.tasks.born_again import BornAgain
from lightning_kd.tasks.classifier import Classifier
from lightning_kd.tasks.distillation import DistillationTask
from lightning_kd.tasks.distribution_matching import DistributionMatchingKD
from lightning_kd.tasks.multi_teacher import MultiTeacherKD
from lightning_kd.tasks.mutual import DeepMutualLearning
from lightning_kd.tasks.self_distillation import SelfDistillation
from lightning_kd.tasks.teacher_free import TeacherFreeKD
from lightning_kd.tasks.vanilla_kd import VanillaKD

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
]
