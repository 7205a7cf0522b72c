"""Multi-teacher KD: one student, K frozen teachers, weighted per batch or per sample.

Each teacher ``k`` gives soft targets ``p_k = softmax(zt_k / T)``; a weighting gives each sample ``i``
weights ``w_ik >= 0`` with ``sum_k w_ik = 1`` (constants for the loss: no gradient flows through them).
The loss is ``(1 - alpha) * CE(zs, y) + alpha * T^2 * D`` with one of two reductions:

* ``"targets"``: distil against the weighted average of the targets, ``D = mean_i KL(sum_k w_ik p_ik || q_i)``
  (You et al. 2017);
* ``"terms"``: average the per-teacher KD terms, ``D = mean_i sum_k w_ik KL(p_ik || q_i)``.

``q = softmax(zs / T)``. They differ in value, not in gradient: ``"terms"`` exceeds ``"targets"`` by
``H(sum_k w_k p_k) - sum_k w_k H(p_k)`` (the teachers' weighted disagreement, a generalised
Jensen-Shannon divergence, >= 0), which does not depend on the student. With weights that are
constants, as here, both give the student the same gradient, ``T * (q - sum_k w_k p_k)`` per sample,
so they train alike; ``train/kd_loss`` shows the difference. (Reductions that also differ in training
need a divergence not linear in the target, such as the reverse KL.)

Weightings (:data:`MULTI_TEACHER_WEIGHTINGS`):

* ``"fixed"``: given weights, normalised to sum to 1 (equal by default), the same for every sample;
* ``"ebkd"`` (entropy-based, Kwon et al. 2020): ``w_ik = (1 - H_ik / sum_j H_ij) / (K - 1)``, ``H_ik`` the
  entropy of teacher ``k``'s softmax (``T = 1``) on sample ``i``: the surer teacher weighs more;
* ``"ca-mkd"`` (confidence-aware, Zhang et al. 2022): ``w_ik = (1 - softmax_k(CE(zt_ik, y_i))) / (K - 1)``:
  the teacher with the lower cross-entropy on the label weighs more;
* ``"ae-kd"`` (adaptive ensemble, Du et al. 2020): one weight per teacher per batch, the min-norm point
  of the convex hull of the per-teacher KD gradients with respect to the student's logits,
  ``argmin_{w in simplex} || sum_k w_k g_k ||^2`` with ``g_k = d(T^2 KL(p_k || q)) / d zs`` (the dual of a
  one-class SVM over the gradients). The gradients come from ``torch.autograd.grad`` on the logits only,
  never a backward pass through the network.

With one teacher every weighting gives ``w = 1`` and both reductions are vanilla KD.

``convention: authors_code`` (:data:`MULTI_TEACHER_CONVENTIONS`) gives the KD term as the CA-MKD authors' code
computes it (``Rorozhl/CA-MKD``, ``helper/loops.py``, which also implements EBKD): the per-teacher terms, summed
with the weights and divided by ``B * K`` where the paper averages over ``B``. For ``"ca-mkd"``, whose weights
sum to 1, the term is the paper's divided by ``K``; for ``"ebkd"``, whose weights there are
``1 - H_ik / sum_j H_ij`` (summing to ``K - 1``, not normalised), the paper's times ``(K - 1) / K``. Only these
two weightings change their KD term here, with ``reduction="terms"`` (what the code computes).

For ``"ae-kd"``, ``convention: authors_code`` keeps the KD term (the AE-KD code's, ``AnTuo1998/AE-KD``, is the
paper's ``"terms"``) and changes the weights as that code computes them (:func:`ae_kd_weights`): from the
Gram matrix of each teacher's gradient averaged over the batch, not of the whole batch's gradients, and with
every weight capped at ``0.6`` (its one-class SVM's ``nu = 1 / (0.6 K)``), where the paper's weights range
over the whole simplex.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_kd.errors import Refusal
from lightning_kd.losses.divergences import alpha_mix
from lightning_kd.losses.kd import DEFAULT_ALPHA, DEFAULT_TEMPERATURE
from lightning_kd.losses.label_smoothing import LabelSmoothing
from lightning_kd.losses.positions import per_position
from lightning_kd.losses.precision import in_float32
from lightning_kd.losses.validation import LossOutput, check_alpha, check_choice, check_same_shape, check_temperature
from lightning_kd.models.ensemble import check_mixture_weights

__all__ = [
    "MULTI_TEACHER_CONVENTIONS",
    "MultiTeacherConvention",
    "MULTI_TEACHER_REDUCTIONS",
    "MULTI_TEACHER_WEIGHTINGS",
    "MultiTeacherKDLoss",
    "MultiTeacherReduction",
    "MultiTeacherWeighting",
    "AE_KD_CODE_C",
    "ae_kd_weights",
    "confidence_weights",
    "entropy_weights",
    "fixed_weights",
    "min_norm_weights",
    "multi_teacher_kd_loss",
    "multi_teacher_weights",
    "per_teacher_kd_gradients",
]

MultiTeacherWeighting = Literal["fixed", "ebkd", "ca-mkd", "ae-kd"]
MultiTeacherConvention = Literal["paper", "authors_code"]
MULTI_TEACHER_CONVENTIONS: tuple[str, ...] = get_args(MultiTeacherConvention)
"""How the teachers are weighted (see the module)."""
MULTI_TEACHER_WEIGHTINGS: tuple[str, ...] = get_args(MultiTeacherWeighting)
MultiTeacherReduction = Literal["targets", "terms"]
"""Distil against the averaged targets, or average the per-teacher KD terms."""
MULTI_TEACHER_REDUCTIONS: tuple[str, ...] = get_args(MultiTeacherReduction)


def _stack(teacher_logits: Sequence[Tensor] | Tensor, student_logits: Tensor | None = None) -> Tensor:
    """The teachers' logits as one detached ``(K, B, C)`` tensor, shapes checked."""
    stacked = teacher_logits if isinstance(teacher_logits, Tensor) else torch.stack(list(teacher_logits))
    if stacked.ndim != 3 or stacked.shape[0] < 1:
        raise Refusal(f"teacher logits must be K >= 1 tensors of shape (B, C), got shape {tuple(stacked.shape)}")
    if student_logits is not None:
        for k in range(stacked.shape[0]):
            check_same_shape(student_logits, stacked[k], what=f"teacher {k + 1}'s logits")
    return stacked.detach()


def _normalise_complements(scores: Tensor) -> Tensor:
    """``(1 - s_ik) / (K - 1)`` for scores ``s`` that sum to 1 over teachers; 1 with a single teacher."""
    count = scores.shape[1]
    if count == 1:
        return torch.ones_like(scores)
    return (1 - scores) / (count - 1)


def fixed_weights(num_teachers: int, batch_size: int, weights: Sequence[float] | None = None,
                  device: torch.device | None = None) -> Tensor:
    """``(B, K)``: the given weights normalised to sum to 1 (equal weights by default), for every sample.

    Example:
        >>> fixed_weights(2, 1, [1.0, 3.0])
        tensor([[0.2500, 0.7500]])
    """
    check_fixed_weights(weights, num_teachers)
    values = torch.ones(num_teachers) if weights is None else torch.tensor([float(w) for w in weights])
    return (values / values.sum()).to(device).expand(batch_size, num_teachers).clone()


def check_fixed_weights(weights: Sequence[float] | None, num_teachers: int | None = None) -> None:
    """Refuse ``teacher_weights`` unless finite, ``>= 0``, not all zero, one per teacher (none: equal weights)."""
    if weights is not None:
        check_mixture_weights(weights, num_teachers, name="teacher_weights", per="teacher")


def entropy_weights(teacher_logits: Sequence[Tensor] | Tensor) -> Tensor:
    """EBKD: ``(B, K)`` weights ``(1 - H_ik / sum_j H_ij) / (K - 1)`` from each teacher's entropy (``T = 1``).

    Where every teacher is certain (all entropies 0) the teachers weigh alike.

    Example:
        >>> sure, unsure = torch.tensor([[9.0, 0.0, 0.0]]), torch.zeros(1, 3)
        >>> entropy_weights([sure, unsure]).round(decimals=3)
        tensor([[0.9980, 0.0020]])
    """
    stacked = _stack(teacher_logits)
    log_p = F.log_softmax(in_float32(stacked), dim=2)
    entropy = -(log_p.exp() * log_p).sum(dim=2).T  # (B, K)
    total = entropy.sum(dim=1, keepdim=True)
    shares = torch.where(total > 0, entropy / total.clamp_min(torch.finfo(entropy.dtype).tiny),
                         torch.full_like(entropy, 1 / entropy.shape[1]))
    return _normalise_complements(shares)


def confidence_weights(teacher_logits: Sequence[Tensor] | Tensor, targets: Tensor) -> Tensor:
    """CA-MKD: ``(B, K)`` weights ``(1 - softmax_k(CE(zt_ik, y_i))) / (K - 1)`` from each teacher's label loss.

    Example:
        >>> right, wrong = torch.tensor([[5.0, 0.0]]), torch.tensor([[0.0, 5.0]])
        >>> confidence_weights([right, wrong], torch.tensor([0])).round(decimals=3)
        tensor([[0.9930, 0.0070]])
    """
    stacked = _stack(teacher_logits)
    losses = torch.stack([F.cross_entropy(in_float32(z), targets, reduction="none") for z in stacked], dim=1)  # (B, K)
    return _normalise_complements(F.softmax(losses, dim=1))


def min_norm_weights(gram: Tensor, cap: float | None = None) -> Tensor:
    """``argmin w^T G w`` over ``w >= 0, sum w = 1`` (and ``w <= cap`` if given), for a ``(K, K)`` Gram ``G``, exactly.

    The minimum lies in the relative interior of some face of the feasible polytope: some weights free,
    the others at 0 or at ``cap``; there it solves an equality-constrained problem (its KKT system, by least
    squares when ``G`` is singular). Every face is tried, most free weights first, and the best feasible point
    kept, so that among equally good points (identical teachers) the spread-out one wins. ``2^K - 1`` faces
    (``3^K`` with a cap): fine for a handful of teachers.

    Example:
        >>> min_norm_weights(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))  # orthogonal gradients of equal size
        tensor([0.5000, 0.5000], dtype=torch.float64)
        >>> min_norm_weights(torch.tensor([[1.0, 0.0], [0.0, 4.0]]), cap=0.6)  # 0.8 unconstrained
        tensor([0.6000, 0.4000], dtype=torch.float64)
    """
    gram = gram.detach().double().cpu()
    count = gram.shape[0]
    if cap is not None and not (cap * count >= 1 - 1e-12 and cap > 0):
        raise Refusal(f"a weight cap of {cap} cannot hold {count} weights summing to 1")
    best, best_value = None, 0.0
    for size in range(count, -1, -1):
        for face in itertools.combinations(range(count), size):
            others = [k for k in range(count) if k not in face]
            capped_sets = [()] if cap is None else itertools.chain.from_iterable(
                itertools.combinations(others, n) for n in range(len(others), -1, -1))
            for capped in capped_sets:
                weights = _face_minimum(gram, list(face), list(capped), cap)
                if weights is None:
                    continue
                value = float(weights @ gram @ weights)
                if best is None or value < best_value - 1e-12 * max(best_value, 1e-300):
                    best, best_value = weights, value
    assert best is not None, "a vertex of the simplex is always feasible"
    return best / best.sum()


def _face_minimum(gram: Tensor, free: list[int], capped: list[int], cap: float | None) -> Tensor | None:
    """The stationary point of ``w^T G w`` with ``w_free`` summing to what ``w_capped = cap`` leaves, the rest 0;
    ``None`` if it is not feasible."""
    weights = torch.zeros(gram.shape[0], dtype=torch.float64)
    rest = 1 - len(capped) * (cap or 0.0)
    weights[capped] = cap or 0.0
    if not free:
        return weights if abs(rest) <= 1e-9 else None
    size = len(free)
    system = torch.zeros(size + 1, size + 1, dtype=torch.float64)
    system[:size, :size] = 2 * gram[free][:, free]
    system[:size, size] = 1
    system[size, :size] = 1
    rhs = torch.zeros(size + 1, dtype=torch.float64)
    rhs[:size] = -2 * gram[free][:, capped].sum(dim=1) * (cap or 0.0) if capped else 0.0
    rhs[size] = rest
    solution = torch.linalg.lstsq(system, rhs.unsqueeze(1), driver="gelsd").solution.squeeze(1)[:size]
    if (solution < -1e-12).any() or abs(float(solution.sum()) - rest) > 1e-9:
        return None
    if cap is not None and (solution > cap + 1e-12).any():
        return None
    weights[free] = solution.clamp(0, cap)
    return weights


def per_teacher_kd_gradients(student_logits: Tensor, teacher_logits: Sequence[Tensor] | Tensor,
                             temperature: float = DEFAULT_TEMPERATURE) -> Tensor:
    """``(K, B, C)``: ``d(T^2 KL(p_k || q)) / d zs`` for each teacher, from ``torch.autograd.grad`` on the logits.

    Only the KL's own graph is differentiated (from a detached copy of the logits): the network is
    never back-propagated through.
    """
    check_temperature(temperature)
    stacked = _stack(teacher_logits, student_logits)
    logits = student_logits.detach().requires_grad_()
    gradients = []
    with torch.enable_grad():
        log_q = F.log_softmax(logits / temperature, dim=1)
        for k in range(stacked.shape[0]):
            log_p = F.log_softmax(stacked[k] / temperature, dim=1)
            term = F.kl_div(log_q, log_p, reduction="batchmean", log_target=True) * temperature**2
            gradients.append(torch.autograd.grad(term, logits, retain_graph=k < stacked.shape[0] - 1)[0])
    return torch.stack(gradients)


AE_KD_CODE_C = 0.6
"""The AE-KD code's ``C`` (``train_student.py``'s ``-C`` default): ``nu = 1 / (C K)``, each weight at most ``C``."""


def ae_kd_weights(student_logits: Tensor, teacher_logits: Sequence[Tensor] | Tensor,
                  temperature: float = DEFAULT_TEMPERATURE, convention: str = "paper") -> Tensor:
    """AE-KD: ``(B, K)``, one weight per teacher for the whole batch: the min-norm point of the gradients' hull.

    ``convention="paper"`` takes the per-teacher gradients over the whole batch (``(K, B * C)``) and the simplex;
    ``"authors_code"`` what ``AnTuo1998/AE-KD`` (``helper/optimization.py``, ``find_optimal_svm``) solves: the
    Gram matrix of the batch-mean gradients (``(K, C)``) and a one-class SVM with ``nu = 1 / (0.6 K)`` clipped
    to ``[1/K, 1]``, whose dual caps each weight at ``1 / (nu K)`` (0.6 for two teachers or more).

    Example:
        >>> zs = torch.zeros(2, 3)
        >>> same = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
        >>> ae_kd_weights(zs, [same, same]).tolist()  # identical teachers: any split is optimal, equal is chosen
        [[0.5, 0.5], [0.5, 0.5]]
    """
    gradients = per_teacher_kd_gradients(student_logits, teacher_logits, temperature).double()
    if convention == "authors_code":
        count = gradients.shape[0]
        nu = min(max(1 / (AE_KD_CODE_C * count), 1 / count), 1.0)
        mean = gradients.mean(dim=1)  # (K, C): the code averages each teacher's gradient over the batch
        weights = min_norm_weights(mean @ mean.T, cap=1 / (nu * count))
    else:
        flat = gradients.flatten(1)
        weights = min_norm_weights(flat @ flat.T)
    return weights.to(device=student_logits.device, dtype=torch.float32).expand(student_logits.shape[0], -1).clone()


@per_position
def multi_teacher_weights(
    weighting: str,
    student_logits: Tensor,
    teacher_logits: Sequence[Tensor] | Tensor,
    targets: Tensor,
    temperature: float = DEFAULT_TEMPERATURE,
    fixed: Sequence[float] | None = None,
    convention: str = "paper",
) -> Tensor:
    """The ``(B, K)`` weights of a named weighting: each row sums to 1; constants (no gradient).

    ``convention="authors_code"`` changes the ``"ae-kd"`` weights only (:func:`ae_kd_weights`).

    Example:
        >>> zs, zt, y = torch.randn(4, 3), [torch.randn(4, 3), torch.randn(4, 3)], torch.tensor([0, 1, 2, 0])
        >>> [bool(torch.allclose(multi_teacher_weights(w, zs, zt, y).sum(1), torch.ones(4)))
        ...  for w in ("fixed", "ebkd", "ca-mkd", "ae-kd")]
        [True, True, True, True]
    """
    check_choice("multi-teacher weighting", weighting, MULTI_TEACHER_WEIGHTINGS)
    if fixed is not None and weighting != "fixed":
        raise Refusal(f"teacher_weights apply to weighting='fixed' only; {weighting!r} computes its own")
    stacked = _stack(teacher_logits, student_logits)
    if weighting == "fixed":
        weights = fixed_weights(stacked.shape[0], stacked.shape[1], fixed, stacked.device)
    elif weighting == "ebkd":
        weights = entropy_weights(stacked)
    elif weighting == "ca-mkd":
        weights = confidence_weights(stacked, targets)
    else:
        weights = ae_kd_weights(student_logits, stacked, temperature, convention)
    return weights.detach()


@per_position
def multi_teacher_kd_loss(
    student_logits: Tensor,
    teacher_logits: Sequence[Tensor] | Tensor,
    targets: Tensor,
    weights: Tensor,
    reduction: str = "targets",
    alpha: float = DEFAULT_ALPHA,
    temperature: float = DEFAULT_TEMPERATURE,
    label_smoothing: LabelSmoothing | None = None,
) -> LossOutput:
    """``(1 - alpha) * CE(zs, y) + alpha * T^2 * D`` with per-sample teacher ``weights`` (``(B, K)``).

    Args:
        student_logits: ``(B, C)``.
        teacher_logits: ``K`` tensors ``(B, C)``, or one ``(K, B, C)``; constants.
        targets: ``(B,)`` class indices.
        weights: ``(B, K)`` from :func:`multi_teacher_weights`; each row sums to 1; used as constants.
        reduction: ``"targets"`` (distil against the weighted average target) or ``"terms"`` (weighted
            average of the per-teacher KD terms).
        alpha: Weight of the distillation term (Hinton's convention).
        temperature: ``T > 0``.
        label_smoothing: Smoothing of the label term (none by default).

    Returns:
        ``{"loss": total, "ce": ce, "kd": T^2 * D}``.

    Example:
        >>> from lightning_kd.losses import hinton_kd_loss
        >>> zs, zt, y = torch.randn(4, 3), torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
        >>> one = multi_teacher_kd_loss(zs, [zt], y, torch.ones(4, 1))
        >>> bool(torch.allclose(one["loss"], hinton_kd_loss(zs, zt, y)["loss"]))
        True
    """
    check_alpha(alpha)
    check_temperature(temperature)
    check_choice("multi-teacher reduction", reduction, MULTI_TEACHER_REDUCTIONS)
    stacked = _stack(teacher_logits, student_logits)
    weights = weights.detach().to(student_logits.dtype)
    if weights.shape != (stacked.shape[1], stacked.shape[0]):
        raise Refusal(f"weights must be (B, K) = {(stacked.shape[1], stacked.shape[0])}, got {tuple(weights.shape)}")
    log_q = F.log_softmax(student_logits / temperature, dim=1)
    p = F.softmax(stacked / temperature, dim=2)  # (K, B, C)
    if reduction == "targets":
        target = (weights.T.unsqueeze(2) * p).sum(dim=0)  # (B, C)
        kd = F.kl_div(log_q, target, reduction="batchmean")
    else:
        per_teacher = (p * (torch.log(p.clamp_min(torch.finfo(p.dtype).tiny)) - log_q.unsqueeze(0))).sum(dim=2)
        kd = (weights.T * per_teacher).sum(dim=0).mean()
    kd = kd * temperature**2
    ce = (label_smoothing or LabelSmoothing())(student_logits, targets)
    return {"loss": alpha_mix(ce, kd, alpha), "ce": ce, "kd": kd}


class MultiTeacherKDLoss(nn.Module):
    """Module form: a weighting and a reduction by name, ``alpha``, ``T`` and fixed weights checked once.

    Example:
        >>> loss = MultiTeacherKDLoss("ca-mkd", "terms", alpha=0.5, temperature=2.0)
        >>> zs, zt, y = torch.randn(4, 3), [torch.randn(4, 3), torch.randn(4, 3)], torch.tensor([0, 1, 2, 0])
        >>> sorted(loss(zs, zt, y))
        ['ce', 'kd', 'loss']
    """

    def __init__(
        self,
        weighting: MultiTeacherWeighting = "fixed",
        reduction: MultiTeacherReduction = "targets",
        alpha: float = DEFAULT_ALPHA,
        temperature: float = DEFAULT_TEMPERATURE,
        teacher_weights: Sequence[float] | None = None,
        label_smoothing: LabelSmoothing | None = None,
        convention: MultiTeacherConvention = "paper",
    ) -> None:
        super().__init__()
        check_choice("multi-teacher weighting", weighting, MULTI_TEACHER_WEIGHTINGS)
        check_choice("multi-teacher convention", convention, MULTI_TEACHER_CONVENTIONS)
        if convention == "authors_code" and (weighting == "fixed" or reduction != "terms"):
            raise Refusal(f"convention authors_code is the CA-MKD code's KD term (weighting 'ca-mkd' or 'ebkd') or "
                          f"the AE-KD code's weights ('ae-kd'), with reduction 'terms'; got weighting {weighting!r}, "
                          f"reduction {reduction!r}")
        self.convention = convention
        check_choice("multi-teacher reduction", reduction, MULTI_TEACHER_REDUCTIONS)
        check_alpha(alpha)
        check_temperature(temperature)
        if teacher_weights is not None and weighting != "fixed":
            raise Refusal(f"teacher_weights apply to weighting='fixed' only; {weighting!r} computes its own")
        check_fixed_weights(teacher_weights)
        self.weighting, self.reduction, self.alpha, self.temperature = weighting, reduction, alpha, temperature
        self.teacher_weights = None if teacher_weights is None else [float(w) for w in teacher_weights]
        self.label_smoothing = label_smoothing or LabelSmoothing()

    def weights(self, student_logits: Tensor, teacher_logits: Sequence[Tensor] | Tensor, targets: Tensor) -> Tensor:
        """The ``(B, K)`` weights this loss applies to a batch."""
        return multi_teacher_weights(self.weighting, student_logits, teacher_logits, targets, self.temperature,
                                     self.teacher_weights, self.convention)

    def forward(self, student_logits: Tensor, teacher_logits: Sequence[Tensor] | Tensor, targets: Tensor,
                weights: Tensor | None = None) -> LossOutput:
        if weights is None:
            weights = self.weights(student_logits, teacher_logits, targets)
        if self.convention == "authors_code" and self.weighting != "ae-kd":  # CA-MKD's code: the terms / (B * K)
            teachers = weights.shape[-1]
            scale = 1 / teachers if self.weighting == "ca-mkd" else (teachers - 1) / teachers
            parts = multi_teacher_kd_loss(student_logits, teacher_logits, targets, weights, self.reduction, 0.5,
                                          self.temperature, self.label_smoothing)
            kd = parts["kd"] * scale
            return {"loss": alpha_mix(parts["ce"], kd, self.alpha), "ce": parts["ce"], "kd": kd}
        return multi_teacher_kd_loss(student_logits, teacher_logits, targets, weights, self.reduction, self.alpha,
                                     self.temperature, self.label_smoothing)

    def extra_repr(self) -> str:
        fixed = f", teacher_weights={self.teacher_weights}" if self.teacher_weights is not None else ""
        convention = f", convention={self.convention!r}" if self.convention != "paper" else ""
        return (f"weighting={self.weighting!r}, reduction={self.reduction!r}, alpha={self.alpha}, "
                f"temperature={self.temperature}{fixed}{convention}")
