"""Every feature loss under mixed precision: half-precision features computed on in float32, autocast off inside."""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor

import lightning_kd
from lightning_kd import losses
from lightning_kd.data import DigitsDataModule
from lightning_kd.losses import FeatureMatch, LabelSmoothing, autocast_off, full_precision
from lightning_kd.models import SmallCNN
from tests.helpers import cpu_trainer

B = 6

# each feature loss, called on named inputs (see _inputs): student maps `s` and `s2` (a deeper layer, for FSP),
# the teacher's `t` and `t2`, student and teacher embeddings `es`, `et`, logits `zs`, `zt` and targets `y`
CASES: dict[str, Callable[[dict[str, Tensor]], Any]] = {
    "ab_loss": lambda x: losses.ab_loss(x["zs"], x["y"], [x["s"]], [x["t"]], margin=0.5),
    "attention_transfer_loss": lambda x: losses.attention_transfer_loss(x["zs"], x["y"], [x["s"]], [x["t"]]),
    "correlation_congruence_loss": lambda x: losses.correlation_congruence_loss(x["zs"], x["y"], [x["es"]],
                                                                                [x["et"]]),
    "nce_loss": lambda x: losses.nce_loss(x["scores"], 100),
    "crd_loss": lambda x: losses.crd_loss(x["zs"], x["y"], x["scores"], x["scores"].flip(0), 100, kd_weight=1.0,
                                          teacher_logits=x["zt"]),
    "distribution_matching_loss": lambda x: losses.distribution_matching_loss(
        x["zs"], x["y"], [x["es"], x["es"]], [x["et"], x["et"]],
        [FeatureMatch("mmd_rbf", weight=0.5), FeatureMatch("gaussian_w2_diag", class_conditional="sum")],
        x["zt"], kd_alpha=0.3),
    "feature_distance": lambda x: losses.feature_distance("wasserstein_exact", x["es"], x["et"]),
    "class_conditional_distance": lambda x: losses.class_conditional_distance("mmd_linear", x["es"], x["y"],
                                                                              x["et"], x["y"])[0],
    "factor_transfer_loss": lambda x: losses.factor_transfer_loss(x["zs"], x["y"], [x["s"]], [x["t"]]),
    "paraphraser_reconstruction_loss": lambda x: losses.paraphraser_reconstruction_loss(x["s"], x["t"]),
    "hint_loss": lambda x: losses.hint_loss(x["zs"], x["y"], [x["s"]], [x["t"]]),
    "fsp_loss": lambda x: losses.fsp_loss(x["zs"], x["y"], [x["s"], x["s2"]], [x["t"], x["t2"]]),
    "nst_loss": lambda x: losses.nst_loss(x["zs"], x["y"], [x["s"]], [x["t"]]),
    "ofd_loss": lambda x: losses.ofd_loss(x["zs"], x["y"], [x["s"]], [x["t"]], [x["margin"]]),
    "pkt_loss": lambda x: losses.pkt_loss(x["zs"], x["y"], [x["es"]], [x["et"]]),
    "hierarchical_context_loss": lambda x: losses.hierarchical_context_loss(x["s"], x["t"]),
    "review_kd_loss": lambda x: losses.review_kd_loss(x["zs"], x["y"], [x["s"]], [x["t"]]),
    "rkd_loss": lambda x: losses.rkd_loss(x["zs"], x["y"], [x["es"]], [x["et"]]),
    "self_distillation_loss": lambda x: losses.self_distillation_loss([x["zs"], x["zt"]], x["y"], [x["s"]],
                                                                      x["t"]),
    "similarity_preserving_loss": lambda x: losses.similarity_preserving_loss(x["zs"], x["y"], [x["s"]], [x["t"]]),
    "vid_loss": lambda x: losses.vid_loss(x["zs"], x["y"], [x["s"]], [x["t"]], [x["variance"]]),
}
STUDENT = ("s", "s2", "es", "zs", "scores")
"""The inputs a student's forward gives (half precision under autocast, gradients wanted)."""


def _inputs(dtype: torch.dtype) -> dict[str, Tensor]:
    """The same values (rounded to bf16 once) in ``dtype``; the student's inputs require gradients."""
    generator = torch.Generator().manual_seed(0)

    def draw(*shape: int, scale: float = 1.0) -> Tensor:
        return (torch.randn(*shape, generator=generator) * scale).bfloat16()

    values = {"s": draw(B, 4, 4, 4), "t": draw(B, 4, 4, 4), "s2": draw(B, 4, 4, 4), "t2": draw(B, 4, 4, 4),
              "es": draw(B, 8), "et": draw(B, 8), "zs": draw(B, 3), "zt": draw(B, 3),
              "scores": draw(B, 5, scale=0.1).exp()}
    inputs = {name: value.to(dtype).requires_grad_(name in STUDENT) for name, value in values.items()}
    # the methods' own parameters stay float32 under mixed precision: the OFD margin, the VID variances
    inputs["margin"] = -torch.rand(4, generator=generator).to(torch.promote_types(dtype, torch.float32))
    inputs["variance"] = (torch.rand(4, generator=generator) + 0.5).to(torch.promote_types(dtype, torch.float32))
    inputs["y"] = torch.tensor([0, 1, 2, 0, 1, 2])
    return inputs


def _parts(output: Any) -> list[Tensor]:
    return list(output.values()) if isinstance(output, dict) else [output]


def test_every_feature_loss_is_computed_in_full_precision_and_checked_here() -> None:
    """Each public loss function of the package computes in float32: the logits losses per position, the others
    by ``full_precision``; each of the latter has a case here."""
    functions = {name: getattr(losses, name) for name in losses.__all__
                 if isinstance(getattr(losses, name), types.FunctionType)}
    marked = {name for name, function in functions.items() if getattr(function, "full_precision", False)}
    assert marked == set(CASES)
    unmarked_losses = {name for name, function in functions.items() if name.endswith("_loss")
                       and not getattr(function, "full_precision", False)
                       and not getattr(function, "per_position", False)}
    assert not unmarked_losses


@pytest.mark.parametrize("name", sorted(CASES))
def test_half_precision_features_are_computed_on_in_float32(name: str) -> None:
    """bf16 features under bf16 autocast: the loss of exactly those values, as float64 gives it, to float32's
    precision, and gradients back to the bf16 features."""
    half_inputs = _inputs(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = CASES[name](half_inputs)
    exact = CASES[name](_inputs(torch.float64))
    for got, want in zip(_parts(half), _parts(exact), strict=True):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got.double(), want, rtol=2e-5, atol=1e-6)
    total = sum(part.sum() for part in _parts(half) if part.requires_grad)
    student = [half_inputs[key] for key in STUDENT]
    gradients = torch.autograd.grad(total, student, allow_unused=True)
    reached = [gradient for gradient in gradients if gradient is not None]
    assert reached and all(g.dtype == torch.bfloat16 and bool(g.isfinite().all()) for g in reached)


def test_without_full_precision_the_half_precision_loss_is_off() -> None:
    """What the decorator prevents: NST and similarity preserving computed in bf16 under autocast, percents off."""
    half_inputs, exact_inputs = _inputs(torch.bfloat16), _inputs(torch.float64)
    for loss, part in ((losses.nst_loss, "nst"), (losses.similarity_preserving_loss, "sp")):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            in_half = loss.__wrapped__(half_inputs["zs"], half_inputs["y"], [half_inputs["s"]], [half_inputs["t"]])
        exact = loss(exact_inputs["zs"], exact_inputs["y"], [exact_inputs["s"]], [exact_inputs["t"]])
        assert in_half[part].dtype == torch.bfloat16
        assert abs(float(in_half[part].detach()) / float(exact[part].detach()) - 1) > 1e-3


def test_float_inputs_outside_autocast_pass_through_untouched() -> None:
    seen: list[Tensor] = []

    @full_precision
    def identity(features: Tensor, smoothing: LabelSmoothing | None = None) -> Tensor:
        seen.append(features)
        return features

    for dtype in (torch.float32, torch.float64):
        features = torch.ones(2, 3, dtype=dtype)
        assert identity(features) is features and seen[-1] is features


def test_autocast_is_switched_off_only_where_it_is_on() -> None:
    x = torch.ones(2, 2)
    with autocast_off(x):
        assert not torch.is_autocast_enabled("cpu")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with autocast_off("no tensor", [x]):
            assert not torch.is_autocast_enabled("cpu") and (x @ x).dtype == torch.float32
        assert torch.is_autocast_enabled("cpu") and (x @ x).dtype == torch.bfloat16


@pytest.mark.parametrize("task", ["AttentionTransfer", "NST", "VID", "DistributionMatchingKD"])
def test_a_bf16_mixed_fit_computes_the_feature_losses_in_float32(task: str) -> None:
    """Through the trainer: under ``bf16-mixed`` the student's features come in bf16 and every part of the loss
    in float32."""
    student, teacher = SmallCNN(widths=(4, 8), num_classes=10), SmallCNN(widths=(8, 16), num_classes=10)
    layers: dict[str, Any] = {"student_layers": "body.4", "teacher_layers": "body.4"}  # the last convolutions
    if task == "DistributionMatchingKD":
        layers = {"matches": [{"student_layer": "body.4", "teacher_layer": "body.4", "distance": "mmd_rbf"}]}
    model = getattr(lightning_kd, task)(student, teacher, **layers)
    feature_dtypes: list[torch.dtype] = []
    student.body[4].register_forward_hook(lambda module, args, output: feature_dtypes.append(output.dtype))
    part_dtypes: list[torch.dtype] = []
    original = model.training_losses

    def recorded(batch: Any) -> Any:
        feature_dtypes.clear()  # the steps' forwards only (not the probe that sizes the projectors)
        losses, logits = original(batch)
        assert feature_dtypes and set(feature_dtypes) == {torch.bfloat16}
        part_dtypes.extend(value.dtype for value in losses.values())
        return losses, logits

    model.training_losses = recorded
    cpu_trainer(max_steps=2, limit_val_batches=0, precision="bf16-mixed").fit(model, DigitsDataModule(batch_size=32))
    assert part_dtypes and set(part_dtypes) == {torch.float32}


def test_a_device_without_autocast_is_left_alone() -> None:
    """Meta tensors (shape probes) have no autocast to switch off: the loss runs as written, no error."""
    features = torch.ones(4, 3, device="meta")
    assert losses.nce_loss(features, 10).device.type == "meta"


def test_a_compiled_loss_does_not_ask_torch_whether_a_device_has_autocast(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.compile before torch 2.14 cannot trace ``torch.amp.is_autocast_available``: each loss that asked it inside
    a compiled step broke the step's graph (torch 2.11). Made untraceable here, as it is there, a loss on float32 and
    on bf16 inputs (autocast off inside) still compiles as one graph: the answer was asked before the step."""
    monkeypatch.setattr(torch.amp, "is_autocast_available", torch._dynamo.disable(torch.amp.is_autocast_available))
    torch._dynamo.reset()

    @full_precision
    def squared_error(student: Tensor, teacher: Tensor) -> Tensor:
        return (student - teacher).pow(2).mean()

    compiled = torch.compile(squared_error, backend="eager", fullgraph=True)  # a graph break raises
    student, teacher = torch.randn(4, 3), torch.randn(4, 3)
    torch.testing.assert_close(compiled(student, teacher), (student - teacher).pow(2).mean())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = compiled(student.bfloat16(), teacher)
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, (student.bfloat16().float() - teacher).pow(2).mean())
    torch._dynamo.reset()
