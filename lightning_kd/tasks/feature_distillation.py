"""The base of every method that matches a student's intermediate features to a teacher's.

A method over :class:`FeatureDistillationTask` names its pairs of layers
(:meth:`~FeatureDistillationTask.feature_pairs`) and writes its loss. The base taps the layers (any
network: module paths, ``"penultimate"``, or a zoo network's stages), serves the teacher's features
through :meth:`~lightning_kd.tasks.DistillationTask.teacher_outputs` (so a
:class:`~lightning_kd.callbacks.TeacherOutputCache` holds them), and owns the projectors that map a
student's features to the teacher's width: sized by one eval-mode forward of a dummy batch of the
data's shape when the fit sets up, rebuilt from a checkpoint's weights when one is loaded, and trained
with the student (they are trainable parameters of the task).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from lightning_kd.checkpoints import CHECKPOINT_KEY
from lightning_kd.compat import attached_trainer
from lightning_kd.data.base import Batch
from lightning_kd.errors import Refusal
from lightning_kd.models.taps import NetworkOutput, forward_with_taps, resolve_layers
from lightning_kd.tasks.distillation import DistillationTask

ProjectorKind = Literal["auto", "linear", "none"]
"""``auto``: a projector only when the widths differ; ``linear``: always one; ``none``: never."""


@dataclass(frozen=True)
class FeaturePair:
    """One student layer matched to one teacher layer.

    Attributes:
        student_layer: The student's tapped layer (a module path, ``"penultimate"``, or a stage name).
        teacher_layer: The teacher's.
        projector: Whether the student's features pass through a learned map to the teacher's width.
        across_widths: The method compares features of different widths as they are (no projector needed).
    """

    student_layer: str = "penultimate"
    teacher_layer: str = "penultimate"
    projector: ProjectorKind = "auto"
    across_widths: bool = False


def feature_width(features: Tensor) -> int:
    """Channels of a feature map ``(B, C, H, W)``, else the last dimension.

    Example:
        >>> feature_width(torch.zeros(2, 16, 4, 4)), feature_width(torch.zeros(2, 7))
        (16, 7)
    """
    return int(features.shape[1] if features.ndim == 4 else features.shape[-1])


def _fitting_batch_size(samples: int, needed: int, around: int) -> int:
    """The batch size nearest ``around`` whose last batch of ``samples`` holds at least ``needed``."""
    candidates = [size for size in range(needed, samples + 1) if (samples % size or size) >= needed]
    return min(candidates, key=lambda size: (abs(size - around), size)) if candidates else samples


def _width(shape: tuple[int, ...]) -> int:
    """:func:`feature_width` of features of ``shape`` (without the batch)."""
    return int(shape[0] if len(shape) == 3 else shape[-1])


def projector_between(in_width: int, out_width: int, maps: bool) -> nn.Module:
    """A 1x1 convolution between feature maps' channels, else a linear map between widths.

    Example:
        >>> projector_between(8, 16, maps=True)
        Conv2d(8, 16, kernel_size=(1, 1), stride=(1, 1), bias=False)
        >>> projector_between(8, 16, maps=False)
        Linear(in_features=8, out_features=16, bias=True)
    """
    return nn.Conv2d(in_width, out_width, 1, bias=False) if maps else nn.Linear(in_width, out_width)


class PairEmbeddings(nn.Module):
    """Trained linear embeddings of the student's and the teacher's features (flattened) into one width: the
    projector of methods that compare embeddings of both (CRD, correlation congruence). Called on the student's.

    Example:
        >>> PairEmbeddings(16, 32, 8)(torch.zeros(2, 16)).shape
        torch.Size([2, 8])
    """

    def __init__(self, student_width: int, teacher_width: int, dim: int) -> None:
        super().__init__()
        self.student = nn.Linear(student_width, dim)
        self.teacher = nn.Linear(teacher_width, dim)

    def forward(self, features: Tensor) -> Tensor:
        return self.student(features.flatten(1))

    def embed_teacher(self, features: Tensor) -> Tensor:
        """The teacher's features embedded (trained: gradients reach this map, never the teacher)."""
        return self.teacher(features.flatten(1))


class FeatureDistillationTask(DistillationTask):
    """A student distilled through pairs of intermediate features (and, if the method wants, logits).

    Subclasses implement :meth:`feature_pairs` and :meth:`training_losses`, in which
    :meth:`matched_features` gives the student's (projected) and the teacher's features of every pair.
    A method whose features need more than a projector's width check overrides :meth:`check_pair`.
    """

    def feature_pairs(self) -> Sequence[FeaturePair]:
        """The pairs of layers this method matches, in order (read once the losses are configured)."""
        raise NotImplementedError

    def configure_models(self, **models: Any) -> None:  # type: ignore[override]
        super().configure_models(**models)
        self.projectors = nn.ModuleList(nn.Identity() for _ in self.feature_pairs())
        self._projectors_built = False

    # -- projectors -------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        super().setup(stage)
        if not self._projectors_built:
            input_shape = getattr(getattr(attached_trainer(self), "datamodule", None), "input_shape", None)
            if input_shape is None:
                raise Refusal(f"{type(self).__name__} sizes its projectors from the data's input_shape: use a data "
                              "module with `input_shape` (every lightning_kd data module has one)")
            self.build_projectors(tuple(input_shape))
        if stage == "fit":
            self.check_batches_hold_enough_samples()

    def samples_needed(self, index: int) -> int:
        """The fewest samples a batch must hold for the ``index``-th pair's term (a relation between samples needs
        2; a distance between fitted Gaussians more)."""
        return 1

    def check_batches_hold_enough_samples(self) -> None:
        """Refuse, before training, batches too small for a pair's term: the last batch of an epoch included,
        which holds what is left of the split."""
        trainer = attached_trainer(self)
        datamodule = getattr(trainer, "datamodule", None)
        samples, batch_size = len(getattr(datamodule, "train_set", None) or ()), getattr(datamodule, "batch_size", 0)
        if trainer is None or not samples or not batch_size:
            return
        per_process = -(-samples // trainer.world_size)  # the distributed sampler pads every share to this
        last = per_process % batch_size or batch_size
        smallest = min(last, batch_size, per_process)
        for index in range(len(self.projectors)):
            needed = self.samples_needed(index)
            if smallest < needed:
                suggestion = _fitting_batch_size(per_process, needed, batch_size)
                raise Refusal(
                    f"{self.pair_name(index)} needs at least {needed} samples a batch, but the last training batch of "
                    f"each epoch holds {smallest} ({per_process} samples per process in batches of {batch_size}): "
                    f"choose a batch size that leaves at least {needed}, e.g. {suggestion}")

    def build_projectors(self, input_shape: tuple[int, ...]) -> None:
        """Size each pair's projector from one eval-mode forward of zeros; refuse features that cannot match.

        Raises:
            Refusal: A layer is unknown (the message suggests the closest), or the widths differ where the
                pair has ``projector: none``, or :meth:`check_pair` refuses the features.
        """
        parameter = next(self.student.parameters())
        x = torch.zeros(2, *input_shape, device=parameter.device, dtype=parameter.dtype)
        was_training = self.student.training
        self.student.eval()
        try:
            with torch.no_grad():
                dummy = {"input": x, "target": torch.zeros(2, dtype=torch.long, device=x.device)}
                student, teacher = self.raw_features(*self.tapped(dummy))
        finally:
            self.student.train(was_training)
        self.feature_shapes = [(tuple(s.shape[1:]), tuple(t.shape[1:])) for s, t in zip(student, teacher, strict=True)]
        for index, (pair, s, t) in enumerate(zip(self.feature_pairs(), student, teacher, strict=True)):
            self.projectors[index] = self.make_projector(index, pair, *self.feature_shapes[index]).to(parameter.device)
            with torch.no_grad():
                self.check_pair(index, pair, self.projectors[index](s), t)
        self._projectors_built = True

    def make_projector(self, index: int, pair: FeaturePair, student_shape: tuple[int, ...],
                       teacher_shape: tuple[int, ...]) -> nn.Module:
        """The learned map of the ``index``-th pair from the student's features to the teacher's (shapes without
        the batch); ``nn.Identity()`` for none. Called when the fit sets up and when a checkpoint is loaded.

        By default a 1x1 convolution or a linear map between widths (:func:`projector_between`), as the pair's
        ``projector`` asks. A method with its own regressor (FitNets' hint regressor) overrides this.

        Raises:
            Refusal: The widths differ where the pair wants no projector.
        """
        student_width, teacher_width = _width(student_shape), _width(teacher_shape)
        widths_differ = student_width != teacher_width
        if pair.projector == "linear" or (pair.projector == "auto" and widths_differ and not pair.across_widths):
            return projector_between(student_width, teacher_width, len(student_shape) == 3)
        if widths_differ and not pair.across_widths:
            raise Refusal(
                f"{self.pair_name(index)}: the student's {pair.student_layer!r} has width {student_width} "
                f"and the teacher's {pair.teacher_layer!r} width {teacher_width}; set projector: auto or "
                "linear to learn a map between them")
        return nn.Identity()

    def pair_name(self, index: int) -> str:
        """How refusals name the ``index``-th pair (0-based)."""
        return f"feature pair {index + 1}"

    def check_pair(self, index: int, pair: FeaturePair, projected: Tensor, teacher: Tensor) -> None:
        """Refuse a pair whose projected student features and teacher features the method cannot compare.

        By default they must have the same shape (beyond the batch), unless the pair compares across widths.
        """
        if projected.shape[1:] != teacher.shape[1:] and not pair.across_widths:
            raise Refusal(
                f"{self.pair_name(index)}: the student's features {tuple(projected.shape[1:])} (projected) and the "
                f"teacher's {tuple(teacher.shape[1:])} differ in shape; tap layers of the same resolution")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        if getattr(self, "feature_shapes", None):  # what the projectors were built for, to rebuild them on load
            checkpoint[CHECKPOINT_KEY]["feature_shapes"] = [[list(s), list(t)] for s, t in self.feature_shapes]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        # the projectors, built before the state dict is loaded into them: from the feature shapes they were
        # built for, or (checkpoints written before those were recorded) from their weights' shapes
        shapes = checkpoint.get(CHECKPOINT_KEY, {}).get("feature_shapes")
        if shapes is not None:
            self.feature_shapes = [(tuple(s), tuple(t)) for s, t in shapes]
            for index, pair in enumerate(self.feature_pairs()):
                self.projectors[index] = self.make_projector(index, pair, *self.feature_shapes[index])
        else:
            state = checkpoint.get("state_dict", {})
            for index in range(len(self.projectors)):
                weight = state.get(f"projectors.{index}.weight")
                if weight is not None:
                    self.projectors[index] = projector_between(weight.shape[1], weight.shape[0], weight.ndim == 4)
        self._projectors_built = True

    def cached_teacher_layers(self) -> list[str]:
        return [pair.teacher_layer for pair in self.feature_pairs()]

    # -- features ---------------------------------------------------------------------------------
    def tapped(self, batch: Batch) -> tuple[NetworkOutput, NetworkOutput]:
        """The student's and the teacher's outputs, with every pair's layer tapped."""
        pairs = self.feature_pairs()
        (teacher,) = self.teacher_outputs(batch, [pair.teacher_layer for pair in pairs])
        student = forward_with_taps(self.student, batch["input"], [pair.student_layer for pair in pairs])
        return student, teacher

    def raw_features(self, student: NetworkOutput, teacher: NetworkOutput) -> tuple[list[Tensor], list[Tensor]]:
        """Each pair's student and teacher features as tapped (no projector)."""
        pairs = self.feature_pairs()
        return ([student.features[pair.student_layer] for pair in pairs],
                [teacher.features[pair.teacher_layer] for pair in pairs])

    def matched_features(self, batch: Batch) -> tuple[list[Tensor], list[Tensor], NetworkOutput, NetworkOutput]:
        """Each pair's projected student features and teacher features, and both networks' outputs."""
        student_out, teacher_out = self.tapped(batch)
        student, teacher = self.raw_features(student_out, teacher_out)
        projected = [projector(f) for projector, f in zip(self.projectors, student, strict=True)]
        return projected, teacher, student_out, teacher_out


class LayerMatchingTask(FeatureDistillationTask):
    """A feature method whose loss is its :attr:`criterion` over the features of pairs of layers.

    The pairs come from the hyperparameters ``student_layers`` and ``teacher_layers``: one layer name each, a list,
    ``"stages"`` (every stage of a zoo, torchvision or timm network), ``"stages[-1]"`` or ``"penultimate"``;
    resolved against the two networks and zipped in order (so ``"stages"`` on both pairs stage with stage). The
    criterion is called as ``criterion(student_logits, targets, student_features, teacher_features)`` with the
    (projected) student features and the teacher's, in the student's precision, one tensor per pair, and returns
    a :data:`~lightning_kd.losses.LossOutput`. A method states its class attributes and writes
    :meth:`~lightning_kd.tasks.base.BaseTask.configure_losses` (which sets ``self.criterion``): see
    :class:`~lightning_kd.tasks.AttentionTransfer` for one in 60 lines.
    """

    projector: ClassVar[ProjectorKind] = "none"
    """Whether the student's features pass through a learned map to the teacher's width first."""
    compares_across_widths: ClassVar[bool] = True
    """The term compares features of different widths as they are (relations, attention, selectivity)."""
    needs_maps: ClassVar[bool] = False
    """The term reads the spatial layout: the tapped features must be ``(B, C, H, W)`` maps."""
    needs_samples: ClassVar[int] = 1
    """The fewest samples a batch must hold (a relation between samples needs 2)."""

    @abstractmethod
    def configure_losses(self) -> None:
        """Check the method's hyperparameters and set ``self.criterion``."""

    def feature_pairs(self) -> list[FeaturePair]:
        pairs = self.__dict__.get("_pairs")
        if pairs is None:
            student = resolve_layers(self.student, self.hparams["student_layers"])
            teacher = resolve_layers(self.teacher, self.hparams["teacher_layers"])
            if len(student) != len(teacher):
                raise Refusal(
                    f"{type(self).__name__} matches layer to layer, but student_layers names {len(student)} "
                    f"({', '.join(student)}) and teacher_layers {len(teacher)} ({', '.join(teacher)}); "
                    "name as many of each")
            pairs = [FeaturePair(s, t, self.projector, self.compares_across_widths)
                     for s, t in zip(student, teacher, strict=True)]
            self.__dict__["_pairs"] = pairs
        return pairs

    def pair_name(self, index: int) -> str:
        pair = self.feature_pairs()[index]
        return f"{type(self).__name__} pair {index + 1} ({pair.student_layer} -> {pair.teacher_layer})"

    def samples_needed(self, index: int) -> int:
        return self.needs_samples

    def check_pair(self, index: int, pair: FeaturePair, projected: Tensor, teacher: Tensor) -> None:
        if self.needs_maps and (projected.ndim != 4 or teacher.ndim != 4):
            raise Refusal(
                f"{self.pair_name(index)}: {type(self).__name__} compares feature maps (B, C, H, W), got the "
                f"student's {tuple(projected.shape[1:])} and the teacher's {tuple(teacher.shape[1:])}; tap "
                "convolutional stages (\"stages\", \"stages[i]\" or module paths), not pooled features")
        super().check_pair(index, pair, projected, teacher)

    def teacher_side(self, index: int, features: Tensor) -> Tensor:
        """The teacher's features of the ``index``-th pair as the criterion compares them: as tapped, unless the
        method maps them too (correlation congruence embeds both sides)."""
        return features

    def training_losses(self, batch: Batch) -> tuple[dict[str, Tensor], Tensor]:
        student, teacher, student_out, _ = self.matched_features(batch)
        # the teacher's outputs come as float32: in the student's precision (a float64 student stays float64)
        teacher = [self.teacher_side(i, t.to(s.dtype)) for i, (s, t) in enumerate(zip(student, teacher, strict=True))]
        return self.criterion(student_out.logits, batch["target"], student, teacher), student_out.logits
