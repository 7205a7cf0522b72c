"""Multi-teacher KD: every weighting and both reductions against their formulas, one teacher = vanilla KD."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import minimize

from lightning_kd import MultiTeacherKD
from lightning_kd.callbacks import RunSummary
from lightning_kd.data import DigitsDataModule
from lightning_kd.losses import (
    MULTI_TEACHER_REDUCTIONS,
    MULTI_TEACHER_WEIGHTINGS,
    confidence_weights,
    entropy_weights,
    fixed_weights,
    hinton_kd_loss,
    min_norm_weights,
    multi_teacher_kd_loss,
    multi_teacher_weights,
    per_teacher_kd_gradients,
)
from lightning_kd.models import MLP, SmallCNN
from tests.helpers import cpu_trainer

K, B, C = 3, 5, 4


def _inputs(seed: int = 0) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    student = (2 * torch.randn(B, C, generator=generator)).requires_grad_()
    teachers = [3 * torch.randn(B, C, generator=generator) for _ in range(K)]
    return student, teachers, torch.randint(0, C, (B,), generator=generator)


def _softmax(row: list[float]) -> list[float]:
    top = max(row)
    exps = [math.exp(v - top) for v in row]
    return [e / sum(exps) for e in exps]


def test_fixed_weights_are_normalised_and_equal_by_default() -> None:
    assert torch.allclose(fixed_weights(3, 2), torch.full((2, 3), 1 / 3))
    assert torch.allclose(fixed_weights(2, 1, [2.0, 6.0]), torch.tensor([[0.25, 0.75]]))
    for bad in ([1.0], [-1.0, 2.0], [0.0, 0.0], [float("nan"), 1.0]):
        with pytest.raises(ValueError, match="teacher_weights"):
            fixed_weights(2, 1, bad)


def test_entropy_weights_match_the_formula() -> None:
    _, teachers, _ = _inputs()
    got = entropy_weights(teachers)
    for i in range(B):
        entropies = []
        for k in range(K):
            p = _softmax(teachers[k][i].tolist())
            entropies.append(-sum(v * math.log(v) for v in p))
        expected = [(1 - h / sum(entropies)) / (K - 1) for h in entropies]
        assert got[i].tolist() == pytest.approx(expected, abs=1e-6)


def test_confidence_weights_match_the_formula() -> None:
    _, teachers, y = _inputs()
    got = confidence_weights(teachers, y)
    for i in range(B):
        losses = [-math.log(_softmax(teachers[k][i].tolist())[int(y[i])]) for k in range(K)]
        shares = _softmax(losses)
        expected = [(1 - s) / (K - 1) for s in shares]
        assert got[i].tolist() == pytest.approx(expected, abs=1e-6)


def test_ae_kd_gradients_are_the_kd_terms_gradients_on_the_logits() -> None:
    student, teachers, _ = _inputs()
    temperature = 3.0
    got = per_teacher_kd_gradients(student, teachers, temperature)
    q = F.softmax(student.detach() / temperature, dim=1)
    for k in range(K):  # d/dz [T^2 KL(p || softmax(z/T))], averaged over the batch: T (q - p) / B
        expected = temperature * (q - F.softmax(teachers[k] / temperature, dim=1)) / B
        assert torch.allclose(got[k], expected, atol=1e-6)
    assert student.grad is None  # nothing back-propagated into the logits' producer


@pytest.mark.parametrize(("seed", "cap"), [(seed, None) for seed in range(5)] + [(seed, 0.4) for seed in range(5)])
def test_min_norm_weights_solve_the_quadratic_programme(seed: int, cap: float | None) -> None:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(4, 6))
    gram = vectors @ vectors.T
    got = min_norm_weights(torch.tensor(gram), cap=cap).numpy()
    reference = minimize(lambda w: w @ gram @ w, np.full(4, 0.25), method="SLSQP", bounds=[(0, cap or 1)] * 4,
                         constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1}], options={"ftol": 1e-14})
    assert got.sum() == pytest.approx(1) and (got >= 0).all() and (got <= (cap or 1) + 1e-12).all()
    assert got @ gram @ got <= reference.fun + 1e-9
    assert np.allclose(got, reference.x, atol=1e-4)


def test_min_norm_weights_of_two_teachers_have_the_closed_form() -> None:
    # w = clip((g2 - g1) . g2 / |g1 - g2|^2, 0, 1) on g1
    g1, g2 = torch.tensor([1.0, 0.0]), torch.tensor([0.5, 2.0])
    gram = torch.stack([g1, g2]) @ torch.stack([g1, g2]).T
    expected = float(((g2 - g1) @ g2) / ((g1 - g2) @ (g1 - g2)))
    assert min_norm_weights(gram)[0].item() == pytest.approx(min(max(expected, 0), 1))


@pytest.mark.parametrize("weighting", MULTI_TEACHER_WEIGHTINGS)
def test_weights_sum_to_one_over_teachers_and_are_constants(weighting: str) -> None:
    student, teachers, y = _inputs()
    weights = multi_teacher_weights(weighting, student, teachers, y, temperature=2.0)
    assert weights.shape == (B, K) and (weights >= 0).all()
    assert torch.allclose(weights.sum(dim=1), torch.ones(B))
    assert not weights.requires_grad
    # the loss's gradient is that of the same loss with the weights frozen as plain numbers
    loss = multi_teacher_kd_loss(student, teachers, y, weights, alpha=0.7, temperature=2.0)["loss"]
    frozen = multi_teacher_kd_loss(student, teachers, y, weights.clone(), alpha=0.7, temperature=2.0)["loss"]
    assert torch.allclose(torch.autograd.grad(loss, student)[0], torch.autograd.grad(frozen, student)[0])


def _naive_kd(student: torch.Tensor, teachers: list[torch.Tensor], weights: torch.Tensor, reduction: str,
              temperature: float) -> torch.Tensor:
    """T^2 * mean_i of KL(sum_k w p_k || q) or sum_k w KL(p_k || q), one sample at a time."""
    total = student.new_zeros(())
    for i in range(B):
        log_q = torch.log_softmax(student[i] / temperature, dim=0)
        ps = [_softmax((teachers[k][i] / temperature).tolist()) for k in range(K)]
        if reduction == "targets":
            mixed = [sum(float(weights[i, k]) * ps[k][c] for k in range(K)) for c in range(C)]
            total = total + sum(m * (math.log(m) - log_q[c]) for c, m in enumerate(mixed))
        else:
            for k in range(K):
                total = total + float(weights[i, k]) * sum(p * (math.log(p) - log_q[c]) for c, p in enumerate(ps[k]))
    return temperature**2 * total / B


@pytest.mark.parametrize("reduction", MULTI_TEACHER_REDUCTIONS)
def test_both_reductions_match_their_formula(reduction: str) -> None:
    student, teachers, y = _inputs()
    weights = confidence_weights(teachers, y)
    got = multi_teacher_kd_loss(student, teachers, y, weights, reduction, alpha=0.6, temperature=2.5)
    expected_kd = _naive_kd(student, teachers, weights, reduction, 2.5)
    assert torch.allclose(got["kd"], expected_kd, atol=1e-5)
    expected = 0.4 * F.cross_entropy(student, y) + 0.6 * expected_kd
    assert torch.allclose(got["loss"], expected, atol=1e-5)
    assert torch.allclose(torch.autograd.grad(got["loss"], student)[0],
                          torch.autograd.grad(expected, student)[0], atol=1e-6)


def test_the_reductions_differ_by_the_teachers_disagreement_and_share_their_gradient() -> None:
    student, teachers, y = _inputs()
    weights, temperature = entropy_weights(teachers), 2.0
    targets = multi_teacher_kd_loss(student, teachers, y, weights, "targets", alpha=1.0, temperature=temperature)
    terms = multi_teacher_kd_loss(student, teachers, y, weights, "terms", alpha=1.0, temperature=temperature)
    p = F.softmax(torch.stack(teachers) / temperature, dim=2)  # (K, B, C)
    mixed = (weights.T.unsqueeze(2) * p).sum(0)
    entropy = lambda d: -(d * d.log()).sum(-1)  # noqa: E731
    gap = (entropy(mixed) - (weights.T * entropy(p)).sum(0)).mean() * temperature**2
    assert gap > 0.01
    assert torch.allclose(terms["kd"] - targets["kd"], gap, atol=1e-5)
    assert torch.allclose(torch.autograd.grad(terms["loss"], student)[0],
                          torch.autograd.grad(targets["loss"], student)[0], atol=1e-6)


@pytest.mark.parametrize("weighting", MULTI_TEACHER_WEIGHTINGS)
@pytest.mark.parametrize("reduction", MULTI_TEACHER_REDUCTIONS)
def test_with_one_teacher_every_weighting_is_vanilla_kd(weighting: str, reduction: str) -> None:
    student, teachers, y = _inputs()
    weights = multi_teacher_weights(weighting, student, teachers[:1], y, temperature=4.0)
    assert torch.equal(weights, torch.ones(B, 1))
    got = multi_teacher_kd_loss(student, teachers[:1], y, weights, reduction, alpha=0.9, temperature=4.0)
    expected = hinton_kd_loss(student, teachers[0], y, alpha=0.9, temperature=4.0)
    assert torch.allclose(got["loss"], expected["loss"], atol=1e-6)
    assert torch.allclose(torch.autograd.grad(got["loss"], student)[0],
                          torch.autograd.grad(expected["loss"], student)[0], atol=1e-7)


def _task(weighting: str = "fixed", classes: tuple[int, int] = (10, 10), **kwargs) -> MultiTeacherKD:
    teachers = [SmallCNN(widths=(8, 16), num_classes=classes[0]), MLP(hidden_sizes=(16,), num_classes=classes[1])]
    return MultiTeacherKD(MLP(hidden_sizes=(16,), num_classes=10), teachers, weighting=weighting, **kwargs)


def test_a_teacher_with_another_class_count_is_refused_by_role() -> None:
    with pytest.raises(ValueError, match=r"the teacher_2 network \(MLP\) predicts \(5,\) outputs per sample but the "
                                         "data has 10 classes"):
        cpu_trainer(max_epochs=1).fit(_task(classes=(10, 5)), DigitsDataModule(batch_size=64))


@pytest.mark.parametrize(("arguments", "message"), [
    ({"weighting": "mean"}, "unknown multi-teacher weighting 'mean'; choose one of fixed, ebkd, ca-mkd, ae-kd"),
    ({"reduction": "sum"}, "unknown multi-teacher reduction 'sum'; choose one of targets, terms"),
    ({"teacher_weights": [1.0, 2.0, 3.0]}, "teacher_weights has 3 entries for 2 teachers"),
    ({"weighting": "ebkd", "teacher_weights": [1.0, 2.0]}, "teacher_weights apply to weighting='fixed' only"),
    ({"teacher_weights": [-1.0, 2.0]}, "teacher_weights must be finite, >= 0 and not all 0"),
    ({"alpha": -0.5}, r"alpha must be in \[0, 1\]"),
])
def test_bad_arguments_are_refused_before_training(arguments: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _task(**arguments)


@pytest.mark.parametrize("weighting", ["fixed", "ae-kd"])
def test_training_logs_weights_teachers_and_their_ensemble(weighting: str) -> None:
    torch.manual_seed(0)
    summary = RunSummary(print_table=False)
    task = _task(weighting, **({"teacher_weights": [3.0, 1.0]} if weighting == "fixed" else {}))
    trainer = cpu_trainer(max_epochs=1, limit_train_batches=5, callbacks=[summary])
    trainer.fit(task, DigitsDataModule(batch_size=64))
    metrics = trainer.callback_metrics
    assert {"train/teacher/weight", "train/teacher_2/weight", "val/teacher/acc", "val/teacher_2/acc",
            "val/agreement", "val/agreement/teacher_2", "val/teachers_ensemble_acc"} <= set(metrics)
    means = {role: summary.summary[f"summary/{role}/mean weight"] for role in ("teacher", "teacher_2")}
    assert sum(means.values()) == pytest.approx(1, abs=1e-5)
    if weighting == "fixed":
        assert means == pytest.approx({"teacher": 0.75, "teacher_2": 0.25})
    assert "summary/val/teachers_ensemble_acc" in summary.summary


def test_the_authors_code_convention_equals_the_ca_mkd_codes_kd_term() -> None:
    """The KD term as Rorozhl/CA-MKD's helper/loops.py computes it (CAMKD and EBKD), written out here."""
    from lightning_kd.errors import Refusal
    from lightning_kd.losses.multi_teacher import MultiTeacherKDLoss

    generator = torch.Generator().manual_seed(0)
    zs = torch.randn(6, 5, dtype=torch.float64, generator=generator, requires_grad=True)
    zt = torch.randn(3, 6, 5, dtype=torch.float64, generator=generator) * 2
    y = torch.randint(0, 5, (6,), generator=generator)
    T, (K, B) = 4.0, zt.shape[:2]
    log_q = torch.log_softmax(zs / T, dim=1)
    kl = torch.stack([(torch.softmax(t / T, 1) * (torch.log_softmax(t / T, 1) - log_q)).sum(1) * T**2 for t in zt])
    cross_entropy = torch.stack([torch.nn.functional.cross_entropy(t, y, reduction="none") for t in zt])
    attention = (1 - torch.softmax(cross_entropy, dim=0)) / (K - 1)
    entropy = torch.stack([-(torch.softmax(t, 1) * torch.log_softmax(t, 1)).sum(1) for t in zt])
    entropy_weight = 1 - entropy / entropy.sum(0)  # sums to K - 1 over the teachers
    for weighting, weights in (("ca-mkd", attention), ("ebkd", entropy_weight)):
        theirs = (weights * kl).sum() / (B * K)
        ours = MultiTeacherKDLoss(weighting, "terms", temperature=T, convention="authors_code")(zs, list(zt), y)["kd"]
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(torch.autograd.grad(ours, zs, retain_graph=True)[0],
                                   torch.autograd.grad(theirs, zs, retain_graph=True)[0])
        paper = MultiTeacherKDLoss(weighting, "terms", temperature=T)(zs, list(zt), y)["kd"]
        assert not torch.isclose(paper, theirs)  # the paper's term is the weighted mean over samples
    with pytest.raises(Refusal, match="convention authors_code is the CA-MKD code's KD term"):
        MultiTeacherKDLoss("fixed", "terms", convention="authors_code")


@pytest.mark.parametrize("teachers", [2, 3, 5])
def test_the_authors_code_convention_gives_the_ae_kd_codes_weights(teachers: int) -> None:
    """AnTuo1998/AE-KD's find_optimal_svm, written out: the Gram matrix of each teacher's batch-mean gradient
    of T^2 KL (batchmean) with respect to the student's logits, and scikit-learn's one-class SVM with
    nu = 1 / (0.6 K) on it; the weights are its dual coefficients over K nu."""
    from sklearn.svm import OneClassSVM

    from lightning_kd.losses.multi_teacher import MultiTeacherKDLoss

    generator = torch.Generator().manual_seed(teachers)
    B, C, T = 16, 10, 4.0
    zs = torch.randn(B, C, dtype=torch.float64, generator=generator) * 2
    zt = torch.randn(teachers, B, C, dtype=torch.float64, generator=generator) * 3
    y = torch.randint(0, C, (B,), generator=generator)
    q = torch.softmax(zs / T, dim=1)
    gradients = torch.stack([T * (q - torch.softmax(t / T, dim=1)) / B for t in zt])  # d(T^2 KL) / d zs
    mean = gradients.mean(dim=1)
    gram = (mean @ mean.T).numpy()
    nu = 1 / (0.6 * teachers)
    # the code's libsvm stops at tol 1e-6 on a Gram matrix of size ~1e-4: rescaled, the same problem solved closely
    svm = OneClassSVM(kernel="precomputed", nu=nu, tol=1e-12).fit(gram / gram.max())
    theirs = torch.zeros(teachers, dtype=torch.float64)
    theirs[torch.as_tensor(svm.support_)] = torch.as_tensor(svm.dual_coef_[0]) / (teachers * nu)
    loss = MultiTeacherKDLoss("ae-kd", "terms", temperature=T, convention="authors_code")
    ours = loss.weights(zs, list(zt), y)
    assert ours.shape == (B, teachers) and bool((ours == ours[0]).all())  # one weight per teacher per batch
    torch.testing.assert_close(ours[0].double(), theirs, atol=1e-5, rtol=0)
    paper = MultiTeacherKDLoss("ae-kd", "terms", temperature=T)
    assert float((paper.weights(zs, list(zt), y) - ours).abs().max()) > 1e-3  # whole-batch gradients differ
    # a teacher that agrees with the student (zero gradient) takes all the weight in the paper, 0.6 in the code
    agreeing = torch.cat([zs.unsqueeze(0), zt[1:]])
    assert paper.weights(zs, list(agreeing), y)[0, 0].item() == pytest.approx(1.0)
    assert loss.weights(zs, list(agreeing), y)[0, 0].item() == pytest.approx(0.6)
    # the KD term is the paper's (the code's DistillKL per teacher, dotted with the weights)
    kl = torch.stack([(torch.softmax(t / T, 1) * (torch.log_softmax(t / T, 1) - torch.log_softmax(zs / T, 1)))
                      .sum() * T**2 / B for t in zt])
    torch.testing.assert_close(loss(zs, list(zt), y, ours)["kd"], (ours[0].double() * kl).sum())
