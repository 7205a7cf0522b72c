"""Distances between two batches of features, for distribution matching (KD^2M, Montesuma 2025).

Each distance is a pure function ``distance(student, teacher, **options)`` of two batches of features,
``(n, d)`` and ``(m, d)`` (the teacher's detached: gradients reach the student's features only), that
treats each batch as an empirical distribution with uniform weights. The optimal-transport solvers are
POT's (``ot``), run on PyTorch tensors.

============================  =====================================================================
name                          what it computes
============================  =====================================================================
``mmd_linear``                MMD^2 with ``k(a, b) = a . b`` (biased: ``||mean_s - mean_t||^2``)
``mmd_rbf``                   MMD^2 with ``k(a, b) = exp(-||a - b||^2 / (2 sigma^2))``; ``bandwidth``
                              ``"median"`` or ``"mean"`` (sigma = the median or mean pairwise distance
                              of both batches together, no gradient), a number, or a list (a sum of
                              kernels)
``mmd_polynomial``            MMD^2 with ``k(a, b) = (gamma a . b + coef0)^degree`` (``gamma`` 1/d)
``wasserstein_exact``         ``<P, C>``: the squared-Euclidean cost ``C`` and its exact optimal plan
                              ``P`` (``ot.emd``, computed without gradient): W2^2
``sinkhorn``                  ``<P_reg, C>`` with the entropic plan of regularisation ``reg`` (in units
                              of the cost; ``ot.sinkhorn``, log domain); tends to W2^2 as ``reg`` -> 0
``sliced_wasserstein``        SW2^2 over ``n_projections`` random directions (``ot.sliced_wasserstein_distance``)
``gaussian_w2_diag``          W2^2 between diagonal Gaussians: ``||mu_s - mu_t||^2 + ||sd_s - sd_t||^2``
``gaussian_w2_full``          W2^2 between Gaussians (Bures): ``||mu_s - mu_t||^2 + tr(S_s + S_t -
                              2 (S_t^1/2 S_s S_t^1/2)^1/2)``
``gaussian_kl_diag``          ``KL(N_s || N_t)`` between diagonal Gaussians
``gaussian_kl_full``          ``KL(N_s || N_t)`` between Gaussians with full covariances
``gromov_wasserstein``        GW discrepancy between the batches' own squared-distance matrices
                              (``ot.gromov.gromov_wasserstein2``): works across feature widths
============================  =====================================================================

Covariances are the unbiased sample covariances plus ``eps`` on the diagonal (default 1e-5: a batch
smaller than the width has a singular covariance). MMD's ``estimator`` is ``"biased"`` (V-statistic,
>= 0, 0 for identical batches) or ``"unbiased"`` (U-statistic: the diagonal terms left out; can be
negative; its floor for identical batches is ``-2/(n-1)`` times the off-diagonal kernel mean's excess).

:func:`class_conditional_distance` applies a distance per class: over the classes present on *both*
sides with at least the distance's minimum of samples on each (one, or two for the Gaussian distances
and unbiased MMD), summed or averaged (``reduction``). A class present on one side only, or too rarely,
is left out; when no class qualifies the distance is 0 (with the student's graph, so the step still runs).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
from torch import Tensor

from lightning_kd.errors import Refusal, is_count
from lightning_kd.losses.precision import full_precision
from lightning_kd.losses.validation import check_choice

__all__ = [
    "DISTANCES",
    "class_conditional_distance",
    "feature_distance",
    "gaussian_kl_diag",
    "gaussian_kl_full",
    "gaussian_w2_diag",
    "gaussian_w2_full",
    "gromov_wasserstein",
    "mmd",
    "sinkhorn",
    "sliced_wasserstein",
    "wasserstein_exact",
]

Bandwidth = Literal["median", "mean"] | float | Sequence[float]
MMDEstimator = Literal["biased", "unbiased"]
ClassReduction = Literal["sum", "mean"]
CLASS_REDUCTIONS: tuple[str, ...] = get_args(ClassReduction)
DEFAULT_EPS = 1e-5
Convention = Literal["paper", "authors_code"]
CONVENTIONS: tuple[str, ...] = get_args(Convention)


def _ot() -> Any:
    import ot  # POT: imported on use, it is only needed by the transport distances

    return ot


def _check_batches(student: Tensor, teacher: Tensor, same_width: bool = True) -> None:
    if student.ndim != 2 or teacher.ndim != 2:
        raise Refusal(f"distances take (batch, width) features, got {tuple(student.shape)} and "
                         f"{tuple(teacher.shape)}: pool or flatten feature maps first")
    if same_width and student.shape[1] != teacher.shape[1]:
        raise Refusal(f"student features of width {student.shape[1]} and teacher features of width "
                         f"{teacher.shape[1]} differ: give the pair a projector (projector: linear)")
    if len(student) == 0 or len(teacher) == 0:
        raise Refusal("distances need at least one sample on each side")


def _squared_distances(a: Tensor, b: Tensor) -> Tensor:
    """``||a_i - b_j||^2``, exact (no negative round-off) and differentiable at 0."""
    return (a.unsqueeze(1) - b.unsqueeze(0)).pow(2).sum(dim=-1)


# -- MMD --------------------------------------------------------------------------------------------
def _bandwidths(student: Tensor, teacher: Tensor, bandwidth: Bandwidth) -> list[float]:
    if isinstance(bandwidth, str):
        check_choice("RBF bandwidth heuristic", bandwidth, ("median", "mean"))
        with torch.no_grad():
            pooled = torch.cat([student, teacher]).detach()
            distances = _squared_distances(pooled, pooled).sqrt()
            off_diagonal = distances[~torch.eye(len(pooled), dtype=torch.bool, device=pooled.device)]
            value = off_diagonal.median() if bandwidth == "median" else off_diagonal.mean()
        return [max(float(value), 1e-12)]
    values = [float(bandwidth)] if isinstance(bandwidth, (int, float)) else [float(b) for b in bandwidth]
    if not values or any(not b > 0 for b in values):
        raise Refusal(f"RBF bandwidths must be > 0, got {bandwidth}")
    return values


def _kernel(kernel: str, a: Tensor, b: Tensor, sigmas: list[float], degree: int, gamma: float | None,
            coef0: float) -> Tensor:
    if kernel == "linear":
        return a @ b.T
    if kernel == "polynomial":
        return ((gamma if gamma is not None else 1.0 / a.shape[1]) * (a @ b.T) + coef0) ** degree
    squared = _squared_distances(a, b)
    return sum(torch.exp(-squared / (2 * sigma**2)) for sigma in sigmas)  # type: ignore[return-value]


def mmd(student: Tensor, teacher: Tensor, kernel: str = "rbf", estimator: MMDEstimator = "biased",
        bandwidth: Bandwidth = "median", degree: int = 2, gamma: float | None = None, coef0: float = 1.0,
        convention: Convention = "paper") -> Tensor:
    """Squared maximum mean discrepancy between the two batches.

    Example:
        >>> x, y = torch.randn(8, 3), torch.randn(6, 3)
        >>> bool(torch.isclose(mmd(x, y, "linear"), (x.mean(0) - y.mean(0)).pow(2).sum(), atol=1e-5))
        True
    """
    _check_batches(student, teacher)
    check_choice("MMD kernel", kernel, ("linear", "rbf", "polynomial"))
    check_choice("MMD estimator", estimator, get_args(MMDEstimator))
    teacher = teacher.detach()
    if kernel == "rbf" and convention == "authors_code":
        sigmas = [_authors_bandwidth(student, teacher)]
    else:
        sigmas = _bandwidths(student, teacher, bandwidth) if kernel == "rbf" else []
    k_ss = _kernel(kernel, student, student, sigmas, degree, gamma, coef0)
    k_tt = _kernel(kernel, teacher, teacher, sigmas, degree, gamma, coef0)
    k_st = _kernel(kernel, student, teacher, sigmas, degree, gamma, coef0)
    if estimator == "biased":
        return k_ss.mean() + k_tt.mean() - 2 * k_st.mean()
    n, m = len(student), len(teacher)
    if n < 2 or m < 2:
        raise Refusal("the unbiased MMD estimator needs at least 2 samples on each side")
    within_s = (k_ss.sum() - k_ss.diagonal().sum()) / (n * (n - 1))
    within_t = (k_tt.sum() - k_tt.diagonal().sum()) / (m * (m - 1))
    return within_s + within_t - 2 * k_st.mean()


def mmd_linear(student: Tensor, teacher: Tensor, estimator: MMDEstimator = "biased") -> Tensor:
    """MMD^2 with the linear kernel (see :func:`mmd`)."""
    return mmd(student, teacher, "linear", estimator)


def mmd_rbf(student: Tensor, teacher: Tensor, estimator: MMDEstimator = "biased",
            bandwidth: Bandwidth | None = None, convention: Convention = "paper") -> Tensor:
    """MMD^2 with the Gaussian (RBF) kernel (see :func:`mmd`); ``bandwidth`` defaults to ``"median"``.

    ``convention: authors_code`` takes the KD^2M authors' bandwidth: the mean of every Euclidean distance of
    student-student, teacher-teacher and student-teacher pairs, the zero self-distances included (each cross pair
    once), without gradient; ``bandwidth`` is then theirs and may not be given.
    """
    if convention == "authors_code" and bandwidth is not None:
        raise Refusal("mmd_rbf with convention authors_code takes the authors' bandwidth; drop the bandwidth option")
    return mmd(student, teacher, "rbf", estimator, bandwidth or "median", convention=convention)


def _authors_bandwidth(student: Tensor, teacher: Tensor) -> float:
    """The KD^2M code's bandwidth: the mean of all of ``d(s, s')``, ``d(t, t')`` and ``d(s, t)``, zeros included."""
    with torch.no_grad():
        s, t = student.detach(), teacher.detach()
        distances = [_squared_distances(a, b).sqrt().flatten() for a, b in ((s, s), (t, t), (s, t))]
        return max(float(torch.cat(distances).mean()), 1e-12)


def mmd_polynomial(student: Tensor, teacher: Tensor, estimator: MMDEstimator = "biased", degree: int = 2,
                   gamma: float | None = None, coef0: float = 1.0) -> Tensor:
    """MMD^2 with the polynomial kernel (see :func:`mmd`)."""
    return mmd(student, teacher, "polynomial", estimator, degree=degree, gamma=gamma, coef0=coef0)


# -- optimal transport --------------------------------------------------------------------------------
def _uniform(n: int, like: Tensor) -> Tensor:
    return torch.full((n,), 1.0 / n, dtype=like.dtype, device=like.device)


def wasserstein_exact(student: Tensor, teacher: Tensor) -> Tensor:
    """W2^2: ``<P, C>`` with the squared-Euclidean cost and its exact plan (``ot.emd``, no gradient through it).

    Example:
        >>> x = torch.tensor([[0.0], [1.0]])
        >>> float(wasserstein_exact(x, x + 2.0))  # every point moves by 2
        4.0
    """
    _check_batches(student, teacher)
    cost = _squared_distances(student, teacher.detach())
    with torch.no_grad():
        plan = _ot().emd(_uniform(len(student), cost), _uniform(len(teacher), cost), cost.detach())
    return (plan * cost).sum()


def sinkhorn(student: Tensor, teacher: Tensor, reg: float = 0.1, max_iterations: int = 1000) -> Tensor:
    """``<P_reg, C>``: the squared-Euclidean cost under the entropic plan of regularisation ``reg`` (log domain)."""
    _check_batches(student, teacher)
    if not reg > 0:
        raise Refusal(f"the Sinkhorn regularisation reg must be > 0, got {reg}")
    cost = _squared_distances(student, teacher.detach())
    with torch.no_grad():
        plan = _ot().sinkhorn(_uniform(len(student), cost), _uniform(len(teacher), cost), cost.detach(), reg,
                              method="sinkhorn_log", numItermax=max_iterations)
    return (plan * cost).sum()


def sliced_wasserstein(student: Tensor, teacher: Tensor, n_projections: int = 50, seed: int | None = None) -> Tensor:
    """SW2^2 over ``n_projections`` random directions (drawn from ``seed``, else from torch's global generator)."""
    _check_batches(student, teacher)
    if seed is None:  # from torch's generator, so that seed_everything makes runs repeat
        seed = int(torch.randint(0, 2**31 - 1, (1,)))
    return _ot().sliced_wasserstein_distance(student, teacher.detach(), n_projections=n_projections, p=2,
                                             seed=seed) ** 2


def gromov_wasserstein(student: Tensor, teacher: Tensor, convention: Convention = "paper") -> Tensor:
    """GW discrepancy between the batches' squared-distance matrices (square loss); widths may differ.

    ``authors_code``: the KD^2M code's Euclidean (not squared) distance matrices.
    """
    _check_batches(student, teacher, same_width=False)
    c_student = _squared_distances(student, student)
    c_teacher = _squared_distances(teacher.detach(), teacher.detach())
    if convention == "authors_code":
        c_student, c_teacher = _euclidean(c_student), _euclidean(c_teacher)
    return _ot().gromov.gromov_wasserstein2(c_student, c_teacher, _uniform(len(student), c_student),
                                            _uniform(len(teacher), c_student), loss_fun="square_loss")


# -- Gaussians ----------------------------------------------------------------------------------------
def _moments(features: Tensor, eps: float, diagonal: bool, convention: Convention = "paper") -> tuple[Tensor, Tensor]:
    if len(features) < 2:
        raise Refusal("a Gaussian fit needs at least 2 samples")
    mean = features.mean(dim=0)
    centred = features - mean
    if diagonal and convention == "authors_code":  # the KD^2M code: the biased variance (over n), no eps
        return mean, centred.pow(2).mean(dim=0)
    if diagonal:
        return mean, centred.pow(2).sum(dim=0) / (len(features) - 1) + eps
    covariance = centred.T @ centred / (len(features) - 1)
    return mean, covariance + eps * torch.eye(features.shape[1], dtype=features.dtype, device=features.device)


def gaussian_w2_diag(student: Tensor, teacher: Tensor, eps: float = DEFAULT_EPS,
                     convention: Convention = "paper") -> Tensor:
    """W2^2 between diagonal Gaussians fitted to the batches: ``||mu_s - mu_t||^2 + ||sd_s - sd_t||^2``.

    ``paper``: unbiased variances plus ``eps``; ``authors_code``: the KD^2M code's biased standard deviations
    (over ``n``) without ``eps``.
    """
    _check_batches(student, teacher)
    mu_s, var_s = _moments(student, eps, diagonal=True, convention=convention)
    mu_t, var_t = _moments(teacher.detach(), eps, diagonal=True, convention=convention)
    return (mu_s - mu_t).pow(2).sum() + (var_s.sqrt() - var_t.sqrt()).pow(2).sum()


def gaussian_w2_full(student: Tensor, teacher: Tensor, eps: float = DEFAULT_EPS) -> Tensor:
    """W2^2 between Gaussians fitted to the batches (the Bures metric on covariances).

    ``tr((S_t^1/2 S_s S_t^1/2)^1/2)`` is computed as the nuclear norm of ``X_s S_t^1/2 / sqrt(n - 1)`` (``X_s``
    the centred student features, plus the ``eps`` term): its gradient stays finite when the covariance
    is singular, where a matrix square root's would not.
    """
    _check_batches(student, teacher)
    teacher = teacher.detach()
    mu_s, cov_s = _moments(student, eps, diagonal=False)
    mu_t, cov_t = _moments(teacher, eps, diagonal=False)
    with torch.no_grad():
        values, vectors = torch.linalg.eigh(cov_t)
        root_t = vectors @ torch.diag(values.clamp(min=0).sqrt()) @ vectors.T
    # S_s = X^T X / (n-1) + eps I, so S_t^1/2 S_s S_t^1/2 = Z^T Z with Z = [X S_t^1/2 / sqrt(n-1); sqrt(eps) S_t^1/2]
    centred = (student - mu_s) @ root_t / (len(student) - 1) ** 0.5
    stacked = torch.cat([centred, eps**0.5 * root_t])
    cross = torch.linalg.matrix_norm(stacked, ord="nuc")
    return (mu_s - mu_t).pow(2).sum() + cov_s.trace() + cov_t.trace() - 2 * cross


def gaussian_kl_diag(student: Tensor, teacher: Tensor, eps: float = DEFAULT_EPS,
                     convention: Convention = "paper") -> Tensor:
    """``KL(N_s || N_t)`` between diagonal Gaussians fitted to the batches.

    ``paper``: unbiased variances plus ``eps``; ``authors_code``: the KD^2M code's biased standard deviations
    without ``eps``, each divisor and the log's argument guarded by adding ``1e-9`` to a standard deviation.
    """
    _check_batches(student, teacher)
    mu_s, var_s = _moments(student, eps, diagonal=True, convention=convention)
    mu_t, var_t = _moments(teacher.detach(), eps, diagonal=True, convention=convention)
    if convention == "authors_code":
        sd_s, sd_t = var_s.sqrt(), var_t.sqrt()
        return 0.5 * (((sd_s / (sd_t + 1e-9)) ** 2).sum() + (((mu_s - mu_t) / (sd_t + 1e-9)) ** 2).sum()
                      - student.shape[1] + 2 * (sd_t / (sd_s + 1e-9)).log().sum())
    return 0.5 * (var_s / var_t + (mu_t - mu_s).pow(2) / var_t - 1 + var_t.log() - var_s.log()).sum()


def gaussian_kl_full(student: Tensor, teacher: Tensor, eps: float = DEFAULT_EPS) -> Tensor:
    """``KL(N_s || N_t)`` between Gaussians with full covariances fitted to the batches."""
    _check_batches(student, teacher)
    mu_s, cov_s = _moments(student, eps, diagonal=False)
    mu_t, cov_t = _moments(teacher.detach(), eps, diagonal=False)
    chol_t = torch.linalg.cholesky(cov_t)
    difference = (mu_t - mu_s).unsqueeze(1)
    trace = torch.cholesky_solve(cov_s, chol_t).trace()
    mahalanobis = (difference.T @ torch.cholesky_solve(difference, chol_t)).squeeze()
    logdet_t = 2 * chol_t.diagonal().log().sum()
    return 0.5 * (trace + mahalanobis - student.shape[1] + logdet_t - torch.linalg.slogdet(cov_s).logabsdet)


def _euclidean(squared: Tensor) -> Tensor:
    """Distances from squared distances, with a finite gradient at the zero diagonal."""
    return torch.where(squared > 0, squared.clamp(min=torch.finfo(squared.dtype).tiny).sqrt(), squared)


# -- the registry -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DistanceSpec:
    """A named distance: its function and the fewest samples per side (and per class) it needs."""

    function: Callable[..., Tensor]
    min_samples: int = 1

    def samples_needed(self, options: dict[str, Any]) -> int:
        """Fewest samples per side (and per class) with these options: the distance's own minimum, 2 for an
        unbiased MMD."""
        return max(self.min_samples, 2 if options.get("estimator") == "unbiased" else 1)

    def options(self) -> list[str]:
        """The options the distance takes (its keyword arguments)."""
        return list(inspect.signature(self.function).parameters)[2:]


DISTANCES: dict[str, DistanceSpec] = {
    "mmd_linear": DistanceSpec(mmd_linear),
    "mmd_rbf": DistanceSpec(mmd_rbf),
    "mmd_polynomial": DistanceSpec(mmd_polynomial),
    "wasserstein_exact": DistanceSpec(wasserstein_exact),
    "sinkhorn": DistanceSpec(sinkhorn),
    "sliced_wasserstein": DistanceSpec(sliced_wasserstein),
    "gaussian_w2_diag": DistanceSpec(gaussian_w2_diag, min_samples=2),
    "gaussian_w2_full": DistanceSpec(gaussian_w2_full, min_samples=2),
    "gaussian_kl_diag": DistanceSpec(gaussian_kl_diag, min_samples=2),
    "gaussian_kl_full": DistanceSpec(gaussian_kl_full, min_samples=2),
    "gromov_wasserstein": DistanceSpec(gromov_wasserstein),
}
"""Every distance by name (what a task's ``distance`` names)."""


def _positive(name: str, value: Any, why: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not value > 0:
        raise Refusal(f"{name} must be finite and > 0, got {value!r}{why}")


def _at_least_one(name: str, value: Any, why: str) -> None:
    if not is_count(value):
        raise Refusal(f"{name} must be an integer >= 1, got {value!r}{why}")


def _check_bandwidth(value: Any) -> None:
    if value is None:
        return
    if isinstance(value, str):
        check_choice("RBF bandwidth heuristic", value, ("median", "mean"))
        return
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if not values:
        raise Refusal("bandwidth must be 'median', 'mean', a number or a list of numbers, got []")
    for item in values:
        _positive("bandwidth", item, " (an infinite bandwidth makes every kernel value 1 and the MMD 0: the term "
                  "would be switched off)")


def _check_coef0(value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise Refusal(f"coef0 must be finite and >= 0, got {value!r} (a negative offset breaks the kernel's positive "
                      "definiteness: the 'MMD^2' can turn negative)")


def _check_eps(value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise Refusal(f"eps must be finite and >= 0, got {value!r}")


_OPTION_CHECKS: dict[str, Callable[[Any], None]] = {
    "bandwidth": _check_bandwidth,
    "degree": lambda v: _at_least_one("degree", v, " (a polynomial kernel of degree < 1 is no kernel: the "
                                      "'MMD^2' can turn negative)"),
    "gamma": lambda v: v is None or _positive("gamma", v, ""),
    "coef0": _check_coef0,
    "estimator": lambda v: check_choice("MMD estimator", v, get_args(MMDEstimator)),
    "reg": lambda v: _positive("the Sinkhorn regularisation reg", v, ""),
    "max_iterations": lambda v: _at_least_one("max_iterations", v, " (0 iterations leave the plan at zero: the "
                                              "term would be 0)"),
    "n_projections": lambda v: _at_least_one("n_projections", v, ""),
    "seed": lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 0) or _refuse_seed(v),
    "eps": _check_eps,
    "convention": lambda v: check_choice("convention", v, CONVENTIONS),
}
"""Each distance option's check: a value that would switch a term off or break its meaning is refused."""


def _refuse_seed(value: Any) -> None:
    raise Refusal(f"seed must be null or an integer >= 0, got {value!r}")


def distance_spec(name: str, options: dict[str, Any] | None = None) -> DistanceSpec:
    """The distance ``name``, its ``options`` checked against the ones it takes and for their values.

    Example:
        >>> distance_spec("sinkhorn", {"epsilon": 0.1})
        Traceback (most recent call last):
        ...
        lightning_kd.errors.Refusal: distance 'sinkhorn' takes no option 'epsilon'; its options: reg, max_iterations
        >>> distance_spec("sinkhorn", {"max_iterations": 0})
        Traceback (most recent call last):
        ...
        lightning_kd.errors.Refusal: max_iterations must be an integer >= 1, got 0 (0 iterations leave the plan at \
zero: the term would be 0)
    """
    check_choice("distance", name, DISTANCES)
    spec = DISTANCES[name]
    unknown = sorted(set(options or {}) - set(spec.options()))
    if unknown:
        raise Refusal(f"distance {name!r} takes no option {unknown[0]!r}; its options: "
                         f"{', '.join(spec.options()) or 'none'}")
    for option, value in (options or {}).items():
        _OPTION_CHECKS[option](value)
    return spec


@full_precision
def feature_distance(name: str, student: Tensor, teacher: Tensor, **options: Any) -> Tensor:
    """The distance ``name`` between two feature batches (see the module's table).

    Example:
        >>> x = torch.randn(6, 4)
        >>> float(feature_distance("gaussian_w2_diag", x, x))
        0.0
    """
    spec = distance_spec(name, options)
    needed = spec.samples_needed(options)
    if min(len(student), len(teacher)) < needed:
        estimator = " (the unbiased MMD estimator)" if needed > spec.min_samples else ""
        raise Refusal(f"distance {name!r}{estimator} needs at least {needed} samples on each side")
    return spec.function(student, teacher, **options)


@full_precision
def class_conditional_distance(name: str, student: Tensor, student_labels: Tensor, teacher: Tensor,
                               teacher_labels: Tensor, reduction: ClassReduction = "sum",
                               **options: Any) -> tuple[Tensor, int]:
    """The distance ``name`` per class present on both sides, summed or averaged; and how many classes counted.

    A class present on one side only, or with fewer samples on a side than the distance needs, is left
    out. With no class left the distance is 0, still attached to the student's graph.

    Example:
        >>> x, y = torch.randn(6, 2), torch.tensor([0, 0, 1, 1, 2, 2])
        >>> value, classes = class_conditional_distance("mmd_linear", x, y, x[:4], y[:4])  # class 2: student only
        >>> float(value), classes
        (0.0, 2)
    """
    check_choice("class reduction", reduction, CLASS_REDUCTIONS)
    spec = distance_spec(name, options)
    needed = spec.samples_needed(options)
    values = []
    for label in torch.unique(student_labels).tolist():
        in_student, in_teacher = student_labels == label, teacher_labels == label
        if int(in_student.sum()) >= needed and int(in_teacher.sum()) >= needed:
            values.append(spec.function(student[in_student], teacher[in_teacher], **options))
    if not values:
        return student.sum() * 0.0, 0
    stacked = torch.stack(values)
    return (stacked.sum() if reduction == "sum" else stacked.mean()), len(values)
