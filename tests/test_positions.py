"""Every logits loss over (B, T, V) sequences: the same loss on the flattened valid positions, values and gradients."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from lightning_kd import losses
from lightning_kd.errors import Refusal
from lightning_kd.losses import IGNORE_INDEX, LabelSmoothing, flatten_positions, per_position

B, T, V = 3, 4, 7


def _generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)


# each per-position loss, called on (student logits, teacher logits, targets); a loss without targets gets the
# valid positions as `mask` (its inputs then have no other way to say which positions count)
CASES: dict[str, Callable] = {
    "soft_target_kl": lambda zs, zt, y, **m: losses.soft_target_kl(zs, zt, 2.0, **m),
    "soft_cross_entropy": lambda zs, zt, y, **m: losses.soft_cross_entropy(zs, zt.softmax(-1), **m),
    "hinton_kd_loss": lambda zs, zt, y, **m: losses.hinton_kd_loss(zs, zt, y, 0.7, 3.0, LabelSmoothing(0.1), **m),
    "ban_loss": lambda zs, zt, y, **m: losses.ban_loss(zs, zt, **m),
    "ban_label_loss": lambda zs, zt, y, **m: losses.ban_label_loss(zs, zt, y, **m),
    "cwtm_weights": lambda zs, zt, y, **m: losses.cwtm_weights(zt + zs, **m),
    "cwtm_loss": lambda zs, zt, y, **m: losses.cwtm_loss(zs, zt, y, LabelSmoothing(0.2, "others"), **m),
    "dkpp_loss": lambda zs, zt, y, **m: losses.dkpp_loss(zs, zt, _generator(), **m),
    "born_again_loss": lambda zs, zt, y, **m: losses.born_again_loss("ban+l", zs, zt, y, **m),
    "dkd_loss": lambda zs, zt, y, **m: losses.dkd_loss(zs, zt, y, **m),
    "dist_loss": lambda zs, zt, y, **m: losses.dist_loss(zs, zt, y, 1.5, 2.5, 3.0, 0.5, **m),
    "standardised_kd_loss": lambda zs, zt, y, **m: losses.standardised_kd_loss(zs, zt, y, 9.0, 2.0, 0.1, **m),
    "tf_kd_reg_loss": lambda zs, zt, y, **m: losses.tf_kd_reg_loss(zs, y, 0.9, 5.0, 0.5, **m),
    "multi_teacher_weights": lambda zs, zt, y, **m: losses.multi_teacher_weights("ae-kd", zs, [zt, -zt], y, **m),
    "multi_teacher_kd_loss": lambda zs, zt, y, **m: losses.multi_teacher_kd_loss(
        zs, [zt, zt.flip(-1)], y, losses.multi_teacher_weights("ca-mkd", zs, [zt, zt.flip(-1)], y, **m), **m),
    "dml_peer_loss": lambda zs, zt, y, **m: losses.dml_peer_loss([zs, zt], 0, y, **m),
    "dml_loss": lambda zs, zt, y, **m: losses.dml_loss([zs, zt * 2], y, **m),
    "LabelSmoothing": lambda zs, zt, y, **m: LabelSmoothing(0.1)(zs, y, **m),
    "reverse_kl": lambda zs, zt, y, **m: losses.reverse_kl(zs, zt, 2.0, **m),
    "generalized_jsd": lambda zs, zt, y, **m: losses.generalized_jsd(zs, zt, 0.3, 1.5, **m),
    "token_divergence": lambda zs, zt, y, **m: losses.token_divergence("jsd", zs, zt, 0.7, **m),
    "token_kd_loss": lambda zs, zt, y, **m: losses.token_kd_loss(zs, zt, y, "reverse_kl", alpha=0.4, **m),
}


def _per_position_losses() -> set[str]:
    found = {name for name in losses.__all__ if getattr(getattr(losses, name), "per_position", False)}
    if getattr(LabelSmoothing.__call__, "per_position", False):
        found.add("LabelSmoothing")
    return found


def test_every_per_position_loss_is_checked_here() -> None:
    assert _per_position_losses() == set(CASES)


def _scalar(output) -> torch.Tensor:
    if isinstance(output, dict):
        return sum(value * (index + 1) for index, value in enumerate(output.values()))  # every part counts
    return (output * torch.arange(1, output.numel() + 1).reshape(output.shape)).sum()  # per-sample outputs too


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_loss_over_sequences_is_the_loss_over_their_valid_positions(name: str) -> None:
    torch.manual_seed(0)
    student = torch.randn(B, T, V, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(B, T, V, dtype=torch.float64)
    targets = torch.randint(0, V, (B, T))
    targets[0, 1] = targets[2, 3] = IGNORE_INDEX  # padding, say
    valid = targets != IGNORE_INDEX
    loss = CASES[name]
    uses_targets = name not in {"soft_target_kl", "soft_cross_entropy", "ban_loss", "cwtm_weights", "dkpp_loss",
                                "reverse_kl", "generalized_jsd", "token_divergence"}
    mask = {} if uses_targets else {"mask": valid}
    on_sequences = loss(student, teacher, targets, **mask)
    # the reference: the valid positions picked by hand, as a batch of (N, V) samples
    flat_student = student.detach().reshape(B * T, V)[valid.reshape(-1)].requires_grad_()
    reference = loss(flat_student, teacher.reshape(B * T, V)[valid.reshape(-1)], targets[valid])
    if isinstance(reference, dict):
        assert reference.keys() == on_sequences.keys()
        for key in reference:
            torch.testing.assert_close(on_sequences[key], reference[key], rtol=1e-12, atol=1e-12)
    else:
        torch.testing.assert_close(on_sequences, reference, rtol=1e-12, atol=1e-12)
    if not _scalar(reference).requires_grad:  # teacher weights: constants
        return
    (gradient,) = torch.autograd.grad(_scalar(on_sequences), student)
    (flat_gradient,) = torch.autograd.grad(_scalar(reference), flat_student)
    torch.testing.assert_close(gradient[valid], flat_gradient, rtol=1e-10, atol=1e-12)
    assert torch.count_nonzero(gradient[~valid]) == 0  # the ignored positions: no gradient at all


@pytest.mark.parametrize("name", sorted(CASES))
def test_half_precision_logits_are_computed_on_in_float32(name: str) -> None:
    """A mixed-precision forward's logits (bf16): the loss of exactly those values, as float64 gives it, to float32's
    precision; computed in bf16, the softmaxes' rounding put the KD terms percents off."""
    torch.manual_seed(0)
    student = (torch.randn(B, T, V) * 0.3).bfloat16().requires_grad_()
    teacher = (torch.randn(B, T, V) * 0.3).bfloat16()
    targets = torch.randint(0, V, (B, T))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = CASES[name](student, teacher, targets)
    zs, zt = student.detach(), teacher
    # the reference gets what the loss got: a case that prepares its inputs (in bf16) prepares them first
    prepared = {"soft_cross_entropy": lambda: losses.soft_cross_entropy(zs.double(), zt.softmax(-1).double()),
                "cwtm_weights": lambda: losses.cwtm_weights((zt + zs).double())}
    exact = prepared[name]() if name in prepared else CASES[name](zs.double(), zt.double(), targets)
    for got, want in zip(*(o.values() if isinstance(o, dict) else [o] for o in (half, exact)), strict=True):
        assert got.dtype in (torch.float32, torch.float64)  # (AE-KD's weights come from a float64 solver)
        torch.testing.assert_close(got.double(), want.double(), rtol=1e-5, atol=1e-6)
    if _scalar(half).requires_grad:
        (gradient,) = torch.autograd.grad(_scalar(half), student)
        assert gradient.dtype == torch.bfloat16 and bool(gradient.isfinite().all())


def test_classifier_batches_pass_through_untouched() -> None:
    logits, targets = torch.randn(5, 4), torch.randint(0, 4, (5,))
    flat_logits, flat_targets = flatten_positions(logits, targets)
    assert flat_logits is logits and flat_targets is targets


def test_a_mask_and_the_ignore_index_combine() -> None:
    logits, targets = torch.randn(2, 3, 5), torch.tensor([[1, IGNORE_INDEX, 2], [0, 1, 2]])
    mask = torch.tensor([[True, True, True], [False, True, True]])
    flat_logits, flat_targets = flatten_positions(logits, targets, mask)
    assert flat_targets.tolist() == [1, 2, 1, 2]
    torch.testing.assert_close(flat_logits, logits[torch.tensor([[1, 0, 1], [0, 1, 1]]).bool()])


def test_mismatched_shapes_are_refused_in_one_line() -> None:
    with pytest.raises(Refusal, match="class dimension last"):
        flatten_positions(torch.randn(2, 5, 3), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(Refusal, match="mask's shape"):
        losses.ban_loss(torch.randn(2, 3, 5), torch.randn(2, 3, 5), mask=torch.ones(3, 2, dtype=torch.bool))


def test_a_wrapped_loss_keeps_its_name_and_docs() -> None:
    @per_position
    def my_loss(student_logits, targets):
        """Docs."""
        return F.cross_entropy(student_logits, targets)

    assert my_loss.__name__ == "my_loss" and my_loss.__doc__ == "Docs."
