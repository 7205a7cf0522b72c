"""Multi-teacher, multi-student distillation with fused students (Wu et al. 2019)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Literal

import torch
from pytorch_lightning.cli import OptimizerCallable
from torch import Tensor, nn

from lightning_kd.compat import attached_trainer
from lightning_kd.data.base import Batch
from lightning_kd.errors import Refusal
from lightning_kd.losses import (
    DEFAULT_ALPHA,
    DEFAULT_SMOOTHING_CONVENTION,
    DEFAULT_TEMPERATURE,
    MultiTeacherKDLoss,
    MultiTeacherReduction,
    MultiTeacherWeighting,
    SmoothingConvention,
    fit_fusion_weights,
    flatten_positions,
    mutual_kl,
)
from lightning_kd.losses.validation import check_choice, check_weight
from lightning_kd.metrics import EVALUATION_STAGES, evaluation_metrics
from lightning_kd.models.ensemble import SoftmaxEnsemble, check_mixture_weights
from lightning_kd.models.inheritance import InheritSpec
from lightning_kd.naming import join_variants
from lightning_kd.optim import SGD, ScheduleSpec
from lightning_kd.tasks.distillation import DistillationTask
from lightning_kd.teachers import CheckpointSpec, TeacherSpec

Fusion = Literal["fixed", "fitted"]
FUSIONS = ("fixed", "fitted")


def student_role(index: int) -> str:
    """Role name of the ``index``-th student (0-based): ``student_1``, ``student_2``, ...

    Example:
        >>> [student_role(i) for i in range(2)]
        ['student_1', 'student_2']
    """
    return f"student_{index + 1}"


class MultiStudentKD(DistillationTask):
    """``M`` students, each distilled from the ``K`` frozen teachers; the product is their fused prediction.

    Each student ``m`` learns multi-teacher KD (``weighting``, ``reduction``, ``teacher_weights``, ``alpha`` and
    ``temperature`` as in :class:`~lightning_kd.tasks.MultiTeacherKD`) on its own input, ``batch[input_keys[m]]``
    (``"input"`` by default: views or modalities of one sample; the teachers read ``"input"``), and, with
    ``mutual_weight > 0``, Deep Mutual Learning's KL towards the other students:
    ``L = sum_m L_KD(m) + mutual_weight * sum_m 1/(M-1) sum_{l != m} KL(p_l || p_m)`` (one backward).

    The fused prediction is ``sum_m w_m softmax(z_m)``, held as one plain network, a
    :class:`~lightning_kd.models.SoftmaxEnsemble` of the students with the weights (the handed-on ``student``: its
    checkpoints load with :func:`~lightning_kd.checkpoints.load_network` as one network, weights included). With
    ``fusion: fixed`` the weights are ``fusion_weights`` (equal by default). With ``fusion: fitted`` they are fitted
    after every validation epoch to maximise the likelihood of the validation labels
    (:func:`~lightning_kd.losses.fit_fusion_weights`, on every process's outputs gathered): an epoch's fused
    validation metrics use the weights fitted at the previous validation, the last checkpoint holds the weights fitted
    after training, and the test split, never fitted on, scores them.

    Logs ``train/student_<m>_loss`` (each student's loss) and ``train/mutual_loss``; ``{val,test}/student_<m>/acc``
    (and each student's other metrics); the fused prediction's as ``{val,test}/acc`` (what checkpoints monitor);
    the teachers' as :class:`~lightning_kd.tasks.DistillationTask` does; ``fusion/weight_<m>``.

    Args:
        students: The students (two or more, any architectures with the same class count).
        teacher: The teachers (a list), or one.
        teacher_ckpt: Their weights, one path (or null) per teacher.
        weighting: How each student weighs the teachers per sample (see :class:`~lightning_kd.tasks.MultiTeacherKD`).
        reduction: ``"targets"`` or ``"terms"`` (see :class:`~lightning_kd.tasks.MultiTeacherKD`).
        teacher_weights: For ``weighting="fixed"``: one weight per teacher.
        alpha: Weight of the distillation term, in ``[0, 1]`` (Hinton's convention).
        temperature: Softmax temperature, ``> 0``.
        mutual_weight: Weight of the students' mutual KL term (independent, ``>= 0``; 0 switches it off).
        fusion: ``"fixed"`` or ``"fitted"`` (see above).
        fusion_weights: For ``fusion="fixed"``: one non-negative weight per student (normalised; default equal).
        input_keys: The batch key each student reads (default ``"input"`` for all).
        label_smoothing: Smoothing ``eps`` of the label term, in ``[0, 1)``.
        smoothing_convention: ``"uniform"`` or ``"others"`` (see :class:`~lightning_kd.tasks.Classifier`).
        optimizer: See :class:`~lightning_kd.tasks.base.BaseTask`: one optimizer over every student.
        lr_scheduler: See :class:`~lightning_kd.tasks.base.BaseTask`.
        inherit_layers: Layers of the first teacher copied into the students and frozen, as paths in the fused
            network (``members.0.stem``, ...; see :class:`~lightning_kd.tasks.DistillationTask`).

    Example:
        >>> from lightning_kd.models import MLP, SmallCNN
        >>> task = MultiStudentKD([MLP(num_classes=10), SmallCNN((8,), num_classes=10)],
        ...                       [SmallCNN((16, 32), num_classes=10), MLP(num_classes=10)], weighting="ebkd")
        >>> list(task.trained_networks()), list(task.teacher_networks())
        (['student'], ['teacher', 'teacher_2'])
        >>> task.student.weights.tolist()
        [0.5, 0.5]
    """

    max_teachers = None

    def __init__(
        self,
        students: list[nn.Module],
        teacher: TeacherSpec = None,
        teacher_ckpt: CheckpointSpec = None,
        weighting: MultiTeacherWeighting = "fixed",
        reduction: MultiTeacherReduction = "targets",
        teacher_weights: list[float] | None = None,
        alpha: float = DEFAULT_ALPHA,
        temperature: float = DEFAULT_TEMPERATURE,
        mutual_weight: float = 0.0,
        fusion: Fusion = "fixed",
        fusion_weights: list[float] | None = None,
        input_keys: list[str] | None = None,
        label_smoothing: float = 0.0,
        smoothing_convention: SmoothingConvention = DEFAULT_SMOOTHING_CONVENTION,
        optimizer: OptimizerCallable = SGD,
        lr_scheduler: ScheduleSpec = "cosine",
        inherit_layers: InheritSpec = None,
    ) -> None:
        super().__init__(students, teacher, teacher_ckpt, optimizer, lr_scheduler,  # type: ignore[arg-type]
                         inherit_layers=inherit_layers)

    def configure_losses(self) -> None:
        hparams = self.hparams
        self.criterion = MultiTeacherKDLoss(hparams["weighting"], hparams["reduction"], hparams["alpha"],
                                            hparams["temperature"], hparams["teacher_weights"], self.label_smoothing())
        check_weight(hparams["mutual_weight"], "mutual_weight")
        check_choice("fusion", hparams["fusion"], FUSIONS)
        if hparams["fusion_weights"] is not None and hparams["fusion"] != "fixed":
            raise Refusal("fusion_weights are for fusion 'fixed'; fusion 'fitted' fits its own on the validation split")

    def configure_models(  # type: ignore[override]
        self, student: list[nn.Module] | None, teacher: TeacherSpec, teacher_ckpt: CheckpointSpec,
        student_ckpt: None = None, inherit_layers: InheritSpec = None,
    ) -> None:
        students = list(student) if isinstance(student, (list, tuple)) else []
        if len(students) < 2 or any(not isinstance(network, nn.Module) for network in students):
            raise Refusal("MultiStudentKD needs `students`: a list of at least 2 networks (for one: MultiTeacherKD)")
        keys, weights = self.hparams["input_keys"], self.hparams["fusion_weights"]
        if weights is not None:
            check_mixture_weights(weights, len(students))
        if keys is not None and len(keys) != len(students):
            raise Refusal(f"input_keys names {len(keys)} inputs for {len(students)} students: give one per student")
        fused = SoftmaxEnsemble(students, weights or [1.0] * len(students), keys)
        super().configure_models(fused, teacher, teacher_ckpt, None, inherit_layers)
        self.fitted_on: list[tuple[Tensor, Tensor]] = []
        """The students' validation probabilities and targets of this epoch, for ``fusion: fitted``."""

    @property
    def students(self) -> nn.ModuleList:
        """The students, in order (the fused network's members)."""
        return self.student.members

    def network_config(self, role: str) -> dict[str, Any] | None:
        configs = self.hparams.get("students")
        if role == "student" and isinstance(configs, list) and all(
                isinstance(c, Mapping) and "class_path" in c for c in configs):
            return {"class_path": "lightning_kd.models.SoftmaxEnsemble",
                    "init_args": {"members": [dict(c) for c in configs], "weights": self.student.weights.tolist(),
                                  "input_keys": self.hparams["input_keys"]}}
        return super().network_config(role)

    def student_networks(self) -> dict[str, nn.Module]:
        """Each student by role, as plain copies (eval mode): to use or save one alone."""
        return {student_role(m): copy.deepcopy(network).eval() for m, network in enumerate(self.students)}

    def _inputs(self, batch: Batch) -> Tensor | Batch:
        return batch["input"] if self.hparams["input_keys"] is None else batch

    def batch_logits(self, batch: Batch) -> Tensor:
        return self.student(self._inputs(batch))

    # -- training ---------------------------------------------------------------------------------
    def training_losses(self, batch: Batch) -> tuple[dict[str, Tensor], Tensor]:
        teacher_logits = torch.stack([output.logits for output in self.teacher_outputs(batch)])
        logits = self.student.member_logits(self._inputs(batch))
        parts: dict[str, Tensor] = {}
        for m, student_logits in enumerate(logits):
            parts[student_role(m)] = self.criterion(student_logits, teacher_logits, batch["target"])["loss"]
        total = torch.stack(list(parts.values())).sum()
        if self.hparams["mutual_weight"] > 0:
            parts["mutual"] = mutual_kl(logits)
            total = total + self.hparams["mutual_weight"] * parts["mutual"]
        return {"loss": total, **parts}, self.student.fuse([z.detach() for z in logits])

    # -- evaluation -------------------------------------------------------------------------------
    def configure_metrics(self, num_classes: int) -> None:
        super().configure_metrics(num_classes)
        self.student_metrics = nn.ModuleDict({
            stage: nn.ModuleDict({
                student_role(m): evaluation_metrics(num_classes, prefix=f"{stage}/{student_role(m)}/",
                                                    unit=self.token_unit)
                for m in range(len(self.students))})
            for stage in EVALUATION_STAGES})

    def evaluation_step(self, batch: Batch, stage: str) -> Tensor:
        logits = self.student.member_logits(self._inputs(batch))
        fused = self.student.fuse(logits)
        # per token for sequences: the valid positions as samples (the same targets for every student)
        pairs = [flatten_positions(z, batch["target"]) for z in logits]
        flat, targets = [z for z, _ in pairs], pairs[0][1]
        for m, student_logits in enumerate(flat):
            metrics = self.student_metrics[stage][student_role(m)]
            metrics.update(student_logits, targets)
            self.log_dict(metrics, batch_size=len(targets))
        self.log_evaluation(batch, fused, stage)
        self.log_teacher_metrics(batch, fused, stage)
        trainer = attached_trainer(self)
        # fitted during a fit only: not in the sanity check, nor by a `validate` of a trained model
        fitting = trainer is not None and trainer.state.fn == "fit" and not trainer.sanity_checking
        if stage == "val" and self.hparams["fusion"] == "fitted" and fitting:
            self.fitted_on.append((torch.stack([z.detach().float().softmax(dim=1) for z in flat]), targets.detach()))
        return fused

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        if self.fitted_on:
            self.fit_fusion()
        weights = self.student.weights
        self.log_dict({f"fusion/weight_{m + 1}": weights[m] for m in range(len(weights))})

    def fit_fusion(self) -> None:
        """Fit the fusion weights on this epoch's validation outputs, gathered from every process (the same weights
        on every process), and keep them in the fused network."""
        probabilities = torch.cat([p for p, _ in self.fitted_on], dim=1)
        targets = torch.cat([t for _, t in self.fitted_on])
        self.fitted_on = []
        trainer = attached_trainer(self)
        if trainer is not None and trainer.world_size > 1:  # (world, M, N, C) -> (M, world * N, C)
            probabilities = self.all_gather(probabilities).transpose(0, 1).flatten(1, 2)
            targets = self.all_gather(targets).flatten()
        weights = fit_fusion_weights(probabilities.cpu(), targets.cpu())
        self.student.set_weights(weights.to(self.student.weights))

    def summary_columns(self) -> dict[str, dict[str, float]]:
        # the fused network's row: each student's share of the fusion
        return {"student": {f"{student_role(m)} weight": float(w) for m, w in enumerate(self.student.weights)}}

    @classmethod
    def run_variant(cls, arguments: dict[str, Any]) -> str | None:
        students = arguments.get("students")
        count = f"M{len(students)}-" if isinstance(students, list) else ""
        own = f"{count}{arguments.get('weighting', 'fixed')}-{arguments.get('fusion', 'fixed')}"
        if arguments.get("mutual_weight", 0.0):
            own += f"-mutual{arguments['mutual_weight']:g}"
        return join_variants(own, super().run_variant(arguments))
