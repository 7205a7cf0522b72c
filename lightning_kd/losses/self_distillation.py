"""Be Your Own Teacher (Zhang et al. 2019): the deepest exit of a network teaches its shallow exits.

With exits ``1..K`` (``K`` the deepest, the teacher), logits ``z_i`` and pooled features ``F_i``, the loss is

``L = CE(z_K, y) + sum_{i<K} [ (1 - alpha) CE(z_i, y) + alpha * soft_i + lambda * hint_i ]``

where the deepest exit's logits and features are constants (detached), and ``A_i`` is exit ``i``'s
adaptation layer. Two weightings are named presets (:data:`SELF_DISTILLATION_PRESETS`); each sets the
numbers *and* the form of the two terms:

* ``"paper"``, the conference paper's loss with the numbers of a widely used reproduction:
  ``alpha = 0.1``, ``T = 3``, ``lambda = 1e-6``; ``soft_i = KL(softmax(z_K/T) || softmax(z_i/T))`` (no
  ``T^2``, as the paper writes it), ``hint_i = ||A_i(F_i) - F_K||^2`` per sample, averaged over the batch.
* ``"reproduction"``, what that widely used reproduction's code computes
  (``luanyunteng/pytorch-be-your-own-teacher``, ``train.py``): the deepest exit's CE weighted by
  ``1 - alpha`` as well, the soft term as a soft cross-entropy times ``T^2`` (Hinton's scaling), and the
  hint summed over the batch, ``sum (A_i(F_i) - F_K)^2`` where either feature is positive (the mask
  changes nothing for non-negative features).
* ``"journal_code"``, what the authors' journal code computes
  (``ArchipLab-LinfengZhang/pytorch-self-distillation-final``, ``train.py``): ``0.7 CE + 0.3 soft CE``
  (``alpha = 0.3``) with ``soft_i = -sum softmax(z_K/T) log softmax(z_i/T)`` at ``T = 3`` (no ``T^2``; it
  differs from the KL by the teacher's entropy, a constant: same gradient, larger value), and ``0.03``
  times the *unsquared* L2 distance ``||A_i(F_i) - F_K||`` over the whole batch (``torch.dist``), for every
  shallow exit but the one just below the deepest (the code skips it, although its comment says the
  shallowest).

``alpha``, ``temperature`` and ``feature_weight`` override a preset's numbers; the forms stay the preset's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_kd.errors import Refusal
from lightning_kd.losses.divergences import soft_cross_entropy, soft_target_kl
from lightning_kd.losses.label_smoothing import LabelSmoothing
from lightning_kd.losses.precision import full_precision
from lightning_kd.losses.validation import LossOutput, check_alpha, check_choice, check_temperature, check_weight

__all__ = [
    "SELF_DISTILLATION_PRESETS",
    "SelfDistillationLoss",
    "SelfDistillationPreset",
    "SelfDistillationWeights",
    "hint_distance",
    "self_distillation_loss",
    "self_distillation_weights",
]

SelfDistillationPreset = Literal["paper", "reproduction", "journal_code"]
"""The conference paper's weighting (with a reproduction's numbers), that reproduction's code, or the authors'
journal code's."""
SoftTerm = Literal["kl", "soft_ce"]
HintDistance = Literal["squared", "norm", "masked_sum"]


@dataclass(frozen=True)
class SelfDistillationWeights:
    """The numbers and forms of the shallow exits' terms (see the module).

    Attributes:
        alpha: Weight of the soft term; ``1 - alpha`` weights the shallow exits' label term.
        temperature: ``T`` of the soft term.
        feature_weight: ``lambda``, the weight of the feature hint (0 turns it off).
        soft_term: ``"kl"`` or ``"soft_ce"`` (cross-entropy against the softened deepest exit).
        hint_distance: ``"squared"`` (``||.||^2`` per sample, batch mean), ``"norm"`` (``||.||`` of the batch) or
            ``"masked_sum"`` (squared differences summed over the batch where either feature is positive).
        deepest_ce_scaled: The deepest exit's CE weighted by ``1 - alpha`` too (else by 1).
        soft_t_squared: The soft term times ``T^2``.
        skip_hint_below_deepest: No hint for the exit just below the deepest.
    """

    alpha: float
    temperature: float
    feature_weight: float
    soft_term: SoftTerm
    hint_distance: HintDistance
    deepest_ce_scaled: bool = False
    soft_t_squared: bool = False
    skip_hint_below_deepest: bool = False

    def __post_init__(self) -> None:
        check_alpha(self.alpha)
        check_temperature(self.temperature)
        check_weight(self.feature_weight, "feature_weight")
        check_choice("soft term", self.soft_term, get_args(SoftTerm))
        check_choice("hint distance", self.hint_distance, get_args(HintDistance))


SELF_DISTILLATION_PRESETS: dict[str, SelfDistillationWeights] = {
    "paper": SelfDistillationWeights(alpha=0.1, temperature=3.0, feature_weight=1e-6, soft_term="kl",
                                     hint_distance="squared"),
    "reproduction": SelfDistillationWeights(alpha=0.1, temperature=3.0, feature_weight=1e-6, soft_term="soft_ce",
                                            hint_distance="masked_sum", deepest_ce_scaled=True, soft_t_squared=True),
    "journal_code": SelfDistillationWeights(alpha=0.3, temperature=3.0, feature_weight=0.03, soft_term="soft_ce",
                                            hint_distance="norm", skip_hint_below_deepest=True),
}


def self_distillation_weights(preset: str = "paper", alpha: float | None = None, temperature: float | None = None,
                              feature_weight: float | None = None) -> SelfDistillationWeights:
    """A preset's weights, with the numbers given here in place of its own.

    Example:
        >>> self_distillation_weights("journal_code", alpha=0.5)  # doctest: +NORMALIZE_WHITESPACE
        SelfDistillationWeights(alpha=0.5, temperature=3.0, feature_weight=0.03, soft_term='soft_ce',
                                hint_distance='norm', deepest_ce_scaled=False, soft_t_squared=False,
                                skip_hint_below_deepest=True)
        >>> self_distillation_weights("conference")
        Traceback (most recent call last):
        ...
        lightning_kd.errors.Refusal: unknown self-distillation preset 'conference'; choose one of paper, reproduction, \
journal_code
    """
    check_choice("self-distillation preset", preset, SELF_DISTILLATION_PRESETS)
    given = {"alpha": alpha, "temperature": temperature, "feature_weight": feature_weight}
    return replace(SELF_DISTILLATION_PRESETS[preset], **{k: v for k, v in given.items() if v is not None})


def hint_distance(hints: Tensor, target: Tensor, distance: str = "squared") -> Tensor:
    """``||hints - target||^2`` per sample averaged over the batch (``"squared"``), or ``||hints - target||`` of
    the whole batch (``"norm"``, ``torch.dist``); ``target`` detached.

    Example:
        >>> a, b = torch.zeros(2, 2), torch.tensor([[3.0, 4.0], [0.0, 0.0]])
        >>> float(hint_distance(a, b, "squared")), float(hint_distance(a, b, "norm"))
        (12.5, 5.0)
    """
    if hints.shape != target.shape:
        raise Refusal(f"adapted features {tuple(hints.shape)} and deepest features {tuple(target.shape)} differ "
                         "in shape")
    difference = hints - target.detach()
    if distance == "squared":
        return difference.pow(2).flatten(1).sum(dim=1).mean()
    if distance == "masked_sum":  # the reproduction's: where either feature is positive, summed over the batch
        return (difference.pow(2) * ((hints > 0) | (target > 0))).sum()
    check_choice("hint distance", distance, get_args(HintDistance))
    return torch.linalg.vector_norm(difference)


@full_precision
def self_distillation_loss(
    exit_logits: Sequence[Tensor],
    targets: Tensor,
    hints: Sequence[Tensor] | None = None,
    deepest_features: Tensor | None = None,
    weights: SelfDistillationWeights = SELF_DISTILLATION_PRESETS["paper"],
    label_smoothing: LabelSmoothing | None = None,
) -> LossOutput:
    """The BYOT loss over every exit (see the module).

    Args:
        exit_logits: Each exit's ``(B, C)`` logits, shallowest first; the last (the teacher) detached as target.
        targets: ``(B,)`` class indices.
        hints: Each shallow exit's adapted features (one fewer than ``exit_logits``); needed when
            ``weights.feature_weight > 0``.
        deepest_features: The deepest exit's features, the hints' target (detached).
        weights: The preset's (or overridden) weights.
        label_smoothing: Smoothing of every exit's label term (none by default).

    Returns:
        ``{"loss": total, "exit_<i>/ce": ..., "exit_<i>/soft": ..., "exit_<i>/hint": ...}``, the parts
        unweighted; the deepest exit has only ``ce``.

    Example:
        >>> z = [torch.randn(4, 10), torch.randn(4, 10)]
        >>> out = self_distillation_loss(z, torch.randint(0, 10, (4,)), weights=replace(
        ...     SELF_DISTILLATION_PRESETS["paper"], feature_weight=0.0))
        >>> sorted(out)
        ['exit_1/ce', 'exit_1/soft', 'exit_2/ce', 'loss']
    """
    if len(exit_logits) < 2:
        raise Refusal(f"self-distillation needs at least 2 exits, got {len(exit_logits)}")
    use_hint = weights.feature_weight > 0
    if use_hint and (hints is None or deepest_features is None or len(hints) != len(exit_logits) - 1):
        raise Refusal("feature_weight > 0 needs one adapted feature tensor per shallow exit and the deepest "
                         "exit's features")
    smoothing = label_smoothing or LabelSmoothing()
    teacher = exit_logits[-1].detach()
    temperature = weights.temperature
    parts: dict[str, Tensor] = {}
    deepest = smoothing(exit_logits[-1], targets)
    parts[f"exit_{len(exit_logits)}/ce"] = deepest
    total = (1 - weights.alpha) * deepest if weights.deepest_ce_scaled else deepest
    for number, logits in enumerate(exit_logits[:-1], start=1):
        ce = smoothing(logits, targets)
        if weights.soft_term == "kl":  # soft_target_kl carries Hinton's T^2; this loss has none
            soft = soft_target_kl(logits, teacher, temperature) / temperature**2
        else:
            soft = soft_cross_entropy(logits / temperature, F.softmax(teacher / temperature, dim=1))
        scaled_soft = soft * temperature**2 if weights.soft_t_squared else soft
        total = total + (1 - weights.alpha) * ce + weights.alpha * scaled_soft
        parts[f"exit_{number}/ce"], parts[f"exit_{number}/soft"] = ce, soft
        if use_hint and not (weights.skip_hint_below_deepest and number == len(exit_logits) - 1):
            assert hints is not None and deepest_features is not None
            hint = hint_distance(hints[number - 1], deepest_features, weights.hint_distance)
            total = total + weights.feature_weight * hint
            parts[f"exit_{number}/hint"] = hint
    return {"loss": total, **parts}


class SelfDistillationLoss(nn.Module):
    """Module form of :func:`self_distillation_loss`, its weights checked once.

    Example:
        >>> SelfDistillationLoss(self_distillation_weights("paper"))
        SelfDistillationLoss(alpha=0.1, temperature=3.0, feature_weight=1e-06, soft_term='kl', hint_distance='squared')
    """

    def __init__(self, weights: SelfDistillationWeights = SELF_DISTILLATION_PRESETS["paper"],
                 label_smoothing: LabelSmoothing | None = None) -> None:
        super().__init__()
        self.weights = weights
        self.label_smoothing = label_smoothing or LabelSmoothing()

    def forward(self, exit_logits: Sequence[Tensor], targets: Tensor, hints: Sequence[Tensor] | None = None,
                deepest_features: Tensor | None = None) -> LossOutput:
        return self_distillation_loss(exit_logits, targets, hints, deepest_features, self.weights,
                                      self.label_smoothing)

    def extra_repr(self) -> str:
        w = self.weights
        forms = "".join(f", {name}=True" for name in ("deepest_ce_scaled", "soft_t_squared", "skip_hint_below_deepest")
                        if getattr(w, name))
        return (f"alpha={w.alpha}, temperature={w.temperature}, feature_weight={w.feature_weight}, "
                f"soft_term={w.soft_term!r}, hint_distance={w.hint_distance!r}{forms}")
