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

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from lightning_kd.compat import attached_trainer
from lightning_kd.data.base import Batch
from lightning_kd.errors import Refusal
from lightning_kd.models.taps import NetworkOutput, forward_with_taps
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


def projector_between(in_width: int, out_width: int, maps: bool) -> nn.Module:
    """A 1x1 convolution between feature maps' channels, else a linear map between widths.

    Example:
        >>> projector_between(8, 16, maps=True)
        Conv2d(8, 16, kernel_size=(1, 1), stride=(1, 1), bias=False)
        >>> projector_between(8, 16, maps=False)
        Linear(in_features=8, out_features=16, bias=True)
    """
    return nn.Conv2d(in_width, out_width, 1, bias=False) if maps else nn.Linear(in_width, out_width)


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
        if self._projectors_built:
            return
        input_shape = getattr(getattr(attached_trainer(self), "datamodule", None), "input_shape", None)
        if input_shape is None:
            raise Refusal(f"{type(self).__name__} sizes its projectors from the data's input_shape: use a data "
                          "module with `input_shape` (every lightning_kd data module has one)")
        self.build_projectors(tuple(input_shape))

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
        for index, (pair, s, t) in enumerate(zip(self.feature_pairs(), student, teacher, strict=True)):
            widths_differ = feature_width(s) != feature_width(t)
            wanted = pair.projector == "linear" or (pair.projector == "auto" and widths_differ
                                                    and not pair.across_widths)
            if wanted:
                self.projectors[index] = projector_between(feature_width(s), feature_width(t), s.ndim == 4).to(
                    parameter.device)
            elif widths_differ and not pair.across_widths:
                raise Refusal(
                    f"{self.pair_name(index)}: the student's {pair.student_layer!r} has width {feature_width(s)} "
                    f"and the teacher's {pair.teacher_layer!r} width {feature_width(t)}; set projector: auto or "
                    "linear to learn a map between them")
            with torch.no_grad():
                self.check_pair(index, pair, self.projectors[index](s), t)
        self._projectors_built = True

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

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        # the projectors' sizes, from their weights (built before the state dict is loaded into them)
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
