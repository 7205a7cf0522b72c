"""Teacher-free KD: label smoothing (both conventions), Tf-KD reg (paper and reference), against the formulas."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_kd import BornAgain, Classifier, TeacherFreeKD, VanillaKD
from lightning_kd.losses import (
    BornAgainLoss,
    HintonKDLoss,
    LabelSmoothing,
    TfKDRegLoss,
    smoothed_targets,
    tf_kd_reg_loss,
    virtual_teacher,
    virtual_teacher_target,
)
from lightning_kd.models import MLP


def _logits(batch: int = 6, classes: int = 5, seed: int = 0) -> torch.Tensor:
    return (3 * torch.randn(batch, classes, generator=torch.Generator().manual_seed(seed))).requires_grad_()


def _targets(batch: int = 6, classes: int = 5, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, classes, (batch,), generator=torch.Generator().manual_seed(seed))


def _naive_cross_entropy(logits: torch.Tensor, distribution: list[list[float]]) -> torch.Tensor:
    """-(1/B) sum_i sum_k q_ik log softmax(z_i)_k, one term at a time."""
    total = logits.new_zeros(())
    for i, row in enumerate(distribution):
        log_norm = torch.log(sum(torch.exp(logits[i, k]) for k in range(len(row))))
        for k, q in enumerate(row):
            total = total - q * (logits[i, k] - log_norm)
    return total / len(distribution)


def _naive_kl(p: list[list[float]], log_q: torch.Tensor) -> torch.Tensor:
    """sum_i sum_k p_ik (log p_ik - log q_ik), zero where p_ik = 0, not yet divided by anything."""
    total = log_q.new_zeros(())
    for i, row in enumerate(p):
        for k, value in enumerate(row):
            if value > 0:
                total = total + value * (math.log(value) - log_q[i, k])
    return total


def _grad(loss: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    return torch.autograd.grad(loss, logits)[0]


# -- label smoothing ----------------------------------------------------------------------------------
def test_both_smoothing_conventions_match_a_hand_computation() -> None:
    # C = 4, eps = 0.2. uniform: 1 - 0.2 + 0.2/4 = 0.85 on the true class, 0.2/4 = 0.05 elsewhere.
    # others: 1 - 0.2 = 0.8 on the true class, 0.2/3 elsewhere.
    y = torch.tensor([2, 0])
    assert torch.allclose(smoothed_targets(y, 4, 0.2, "uniform"),
                          torch.tensor([[0.05, 0.05, 0.85, 0.05], [0.85, 0.05, 0.05, 0.05]]))
    third = 0.2 / 3
    assert torch.allclose(smoothed_targets(y, 4, 0.2, "others"),
                          torch.tensor([[third, third, 0.8, third], [0.8, third, third, third]]))


@pytest.mark.parametrize("convention", ["uniform", "others"])
def test_smoothed_cross_entropy_matches_the_formula_in_value_and_gradient(convention: str) -> None:
    logits, y, eps, classes = _logits(), _targets(), 0.3, 5
    on = 1 - eps + eps / classes if convention == "uniform" else 1 - eps
    off = eps / classes if convention == "uniform" else eps / (classes - 1)
    distribution = [[on if k == int(label) else off for k in range(classes)] for label in y]
    expected = _naive_cross_entropy(logits, distribution)
    got = LabelSmoothing(eps, convention)(logits, y)
    assert torch.allclose(got, expected, atol=1e-5)
    assert torch.allclose(_grad(got, logits), _grad(_naive_cross_entropy(logits, distribution), logits), atol=1e-6)
    per_sample = LabelSmoothing(eps, convention)(logits, y, reduction="none")
    assert per_sample.shape == (6,) and torch.allclose(per_sample.mean(), expected, atol=1e-5)


def test_without_smoothing_the_label_term_is_plain_cross_entropy() -> None:
    logits, y = _logits(), _targets()
    for convention in ("uniform", "others"):
        assert torch.allclose(LabelSmoothing(0.0, convention)(logits, y), F.cross_entropy(logits, y))


@pytest.mark.parametrize("eps", [-0.1, 1.0, 1.5, float("nan")])
def test_bad_smoothing_is_refused(eps: float) -> None:
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\)"):
        LabelSmoothing(eps)
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\)"):
        Classifier(MLP(hidden_sizes=(8,), num_classes=10), label_smoothing=eps)


def test_an_unknown_convention_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="unknown label smoothing convention 'torch'; choose one of uniform, others"):
        VanillaKD(MLP(hidden_sizes=(8,)), MLP(hidden_sizes=(8,)), label_smoothing=0.1, smoothing_convention="torch")


def _batch(classes: int = 10) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    return {"input": torch.randn(8, 1, 8, 8, generator=generator),
            "target": torch.randint(0, classes, (8,), generator=generator), "index": torch.arange(8)}


@pytest.mark.parametrize("convention", ["uniform", "others"])
def test_every_methods_label_term_takes_the_smoothing(convention: str) -> None:
    """Classifier, VanillaKD, BornAgain (generation 0, ban+l, cwtm, kd) and TeacherFreeKD smooth their label term."""
    torch.manual_seed(0)
    batch, smoothing = _batch(), LabelSmoothing(0.2, convention)
    net = lambda: MLP(hidden_sizes=(8,), num_classes=10)  # noqa: E731
    arguments = {"label_smoothing": 0.2, "smoothing_convention": convention}

    task = Classifier(net(), **arguments)
    losses, logits = task.training_losses(batch)
    assert torch.allclose(losses["loss"], smoothing(logits, batch["target"]))

    for task in (VanillaKD(net(), net(), **arguments), BornAgain(net(), net(), loss="ban+l", **arguments),
                 BornAgain(net(), net(), loss="kd", **arguments), TeacherFreeKD(net(), **arguments)):
        losses, logits = task.training_losses(batch)
        assert torch.allclose(losses["ce"], smoothing(logits, batch["target"])), type(task).__name__
        plain = type(task)(net(), *([net()] if isinstance(task, VanillaKD | BornAgain) else []),
                           **({"loss": task.hparams["loss"]} if isinstance(task, BornAgain) else {}))
        plain.load_state_dict(task.state_dict())
        assert not torch.allclose(plain.training_losses(batch)[0]["ce"], losses["ce"])

    generation_0 = BornAgain(net(), loss="ban", **arguments)  # no teacher: cross-entropy from labels
    losses, logits = generation_0.training_losses(batch)
    assert torch.allclose(losses["loss"], smoothing(logits, batch["target"]))

    cwtm = BornAgain(net(), net(), loss="cwtm", **arguments)
    losses, logits = cwtm.training_losses(batch)
    (teacher,) = cwtm.teacher_outputs(batch)
    confidence = teacher.logits.softmax(1).amax(1)
    expected = (confidence / confidence.sum() * smoothing(logits, batch["target"], reduction="none")).sum()
    assert torch.allclose(losses["loss"], expected)


def test_loss_modules_show_their_smoothing() -> None:
    assert "convention='others'" in repr(HintonKDLoss(label_smoothing=LabelSmoothing(0.1, "others")))
    assert "label_smoothing" in repr(BornAgainLoss("ban+l", label_smoothing=LabelSmoothing(0.1)))
    assert "label_smoothing" not in repr(BornAgainLoss("ban+l"))


def test_run_names_show_the_smoothing() -> None:
    assert Classifier.run_variant({"label_smoothing": 0.1}) == "ls0.1"
    others = {"label_smoothing": 0.1, "smoothing_convention": "others"}
    assert VanillaKD.run_variant(others) == "T4-alpha0.9-ls0.1-others"
    assert BornAgain.run_variant({"loss": "ban+l"}) == "ban+l"
    assert TeacherFreeKD.run_variant({"mode": "reference"}) == "reference-a0.99-T20-alpha0.1"


# -- Tf-KD reg ----------------------------------------------------------------------------------------
def _virtual_teacher_rows(y: torch.Tensor, classes: int, a: float) -> list[list[float]]:
    return [[a if k == int(label) else (1 - a) / (classes - 1) for k in range(classes)] for label in y]


def _soften(rows: list[list[float]], temperature: float, of_log: bool) -> list[list[float]]:
    """softmax(log(p)/T) = p^(1/T) / sum p^(1/T) (paper), or softmax(p/T) (reference), row by row."""
    out = []
    for row in rows:
        scores = [(p ** (1 / temperature) if p > 0 else 0.0) if of_log else math.exp(p / temperature) for p in row]
        out.append([s / sum(scores) for s in scores])
    return out


def test_the_virtual_teacher_is_a_on_the_true_class_and_uniform_elsewhere() -> None:
    y = torch.tensor([1, 3])
    expected = torch.tensor(_virtual_teacher_rows(y, 4, 0.7))
    assert torch.allclose(virtual_teacher(y, 4, 0.7), expected)
    assert torch.allclose(virtual_teacher(y, 4, 0.7).sum(1), torch.ones(2))


@pytest.mark.parametrize(("a", "temperature", "alpha"), [(0.99, 20.0, 0.1), (0.9, 4.0, 0.7), (1.0, 20.0, 0.5)])
def test_tf_kd_reg_paper_mode_matches_the_formula(a: float, temperature: float, alpha: float) -> None:
    logits, y, classes = _logits(), _targets(), 5
    target = _soften(_virtual_teacher_rows(y, classes, a), temperature, of_log=True)

    def naive() -> torch.Tensor:
        ce = F.cross_entropy(logits, y)
        log_q = torch.log_softmax(logits / temperature, dim=1)
        reg = temperature**2 * _naive_kl(target, log_q) / len(y)  # KL averaged over the batch, times tau^2
        return (1 - alpha) * ce + alpha * reg

    got = tf_kd_reg_loss(logits, y, a, temperature, alpha, mode="paper")
    assert torch.isfinite(got["loss"])
    assert torch.allclose(got["loss"], naive(), atol=1e-5)
    assert torch.allclose(_grad(got["loss"], logits), _grad(naive(), logits), atol=1e-6)
    assert torch.allclose(virtual_teacher_target(y, classes, a, temperature, "paper"), torch.tensor(target), atol=1e-6)


@pytest.mark.parametrize("multiplier", [None, 5.0])
def test_tf_kd_reg_reference_mode_is_the_authors_code(multiplier: float | None) -> None:
    logits, y, classes, a, temperature, alpha = _logits(), _targets(), 5, 0.99, 20.0, 0.3

    def authors_code() -> torch.Tensor:  # loss_kd_regularization of the Tf-KD repository, loop and all
        teacher_soft = torch.ones_like(logits) * (1 - a) / (classes - 1)
        for i in range(logits.shape[0]):
            teacher_soft[i, y[i]] = a
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # KLDivLoss's 'mean' warns that it is not 'batchmean': that is the point
            reg = nn.KLDivLoss()(F.log_softmax(logits, dim=1), F.softmax(teacher_soft / temperature, dim=1))
        return (1 - alpha) * F.cross_entropy(logits, y) + alpha * reg * (multiplier or 1.0)

    def formula() -> torch.Tensor:  # the same from its definition: sum over B * C entries, divided by B * C
        target = _soften(_virtual_teacher_rows(y, classes, a), temperature, of_log=False)
        reg = _naive_kl(target, torch.log_softmax(logits, dim=1)) / (len(y) * classes) * (multiplier or 1.0)
        return (1 - alpha) * F.cross_entropy(logits, y) + alpha * reg

    for expected in (authors_code(), formula()):
        got = tf_kd_reg_loss(logits, y, a, temperature, alpha, mode="reference", multiplier=multiplier)["loss"]
        assert torch.allclose(got, expected, atol=1e-6)
        assert torch.allclose(_grad(got, logits), _grad(expected, logits), atol=1e-7)


def test_the_two_targets_differ_in_shape_as_documented() -> None:
    y = torch.tensor([0])
    paper = virtual_teacher_target(y, 10, 0.99, 20.0, "paper")[0]
    reference = virtual_teacher_target(y, 10, 0.99, 20.0, "reference")[0]
    assert paper[0].item() == pytest.approx(0.135, abs=1e-3) and paper[1].item() == pytest.approx(0.0961, abs=1e-4)
    assert reference[0].item() == pytest.approx(0.1045, abs=1e-4)  # within about 1/tau of uniform
    assert float(reference.max() - reference.min()) < 0.01 < float(paper.max() - paper.min())


@pytest.mark.parametrize("mode", ["paper", "reference"])
def test_with_a_equal_to_one_over_c_reg_is_label_smoothing_towards_uniform(mode: str) -> None:
    logits, y, classes, alpha = _logits(), _targets(), 5, 0.3
    for temperature in (1.0, 7.0):
        assert torch.allclose(virtual_teacher_target(y, classes, 1 / classes, temperature, mode),
                              torch.full((6, classes), 1 / classes))
    # at tau = 1 the paper's loss is exactly PyTorch's label smoothing with eps = alpha, less a constant
    # (KL(u || p) = CE(u, p) - log C): the same value up to alpha log C and the same gradient
    multiplier = classes if mode == "reference" else None  # 'mean' over B * C, times C: per sample
    got = tf_kd_reg_loss(logits, y, 1 / classes, 1.0, alpha, mode=mode, multiplier=multiplier)
    smoothed = F.cross_entropy(logits, y, label_smoothing=alpha)
    assert torch.allclose(got["loss"], smoothed - alpha * math.log(classes), atol=1e-5)
    assert torch.allclose(_grad(got["loss"], logits), _grad(smoothed, logits), atol=1e-6)


def test_gradients_reach_the_student_only() -> None:
    task = TeacherFreeKD(MLP(hidden_sizes=(8,), num_classes=10), alpha=0.5)
    losses, _ = task.training_losses(_batch())
    losses["loss"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in task.student.parameters())
    assert {name for name, _ in task.named_parameters()} == {f"student.{n}" for n, _ in task.student.named_parameters()}
    assert list(task.trainable_parameters()) == list(task.student.parameters())


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"true_class_prob": 0.0}, r"true_class_prob \(the virtual teacher's a\) must be in \(0, 1\], got 0.0"),
        ({"true_class_prob": 1.01}, r"must be in \(0, 1\], got 1.01"),
        ({"true_class_prob": float("nan")}, r"must be in \(0, 1\], got nan"),
        ({"temperature": 0.0}, "temperature must be finite and > 0, got 0.0"),
        ({"temperature": -2.0}, "temperature must be finite and > 0, got -2.0"),
        ({"temperature": float("inf")}, "temperature must be finite and > 0, got inf"),
        ({"alpha": 1.5}, r"alpha must be in \[0, 1\], got 1.5"),
        ({"label_smoothing": 1.0}, r"label_smoothing must be in \[0, 1\), got 1.0"),
        ({"mode": "code"}, "unknown Tf-KD reg mode 'code'; choose one of paper, reference"),
        ({"multiplier": 10.0}, "multiplier applies to mode='reference' only"),
        ({"mode": "reference", "multiplier": 0.0}, "multiplier must be finite and > 0, got 0.0"),
    ],
)
def test_bad_tf_kd_reg_values_are_refused_before_training(arguments: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TeacherFreeKD(MLP(hidden_sizes=(8,), num_classes=10), **arguments)
    loss_arguments = {k: v for k, v in arguments.items() if k != "label_smoothing"}
    if loss_arguments == arguments:
        with pytest.raises(ValueError, match=message):
            TfKDRegLoss(**loss_arguments)


def test_tf_kd_reg_logs_its_parts_and_trains() -> None:
    from lightning_kd.data import DigitsDataModule
    from tests.helpers import cpu_trainer

    torch.manual_seed(0)
    task = TeacherFreeKD(MLP(hidden_sizes=(32,), num_classes=10), alpha=0.3, lr_scheduler="none")
    trainer = cpu_trainer(max_epochs=3)
    trainer.fit(task, DigitsDataModule(batch_size=64))
    metrics = trainer.callback_metrics
    assert {"train/loss", "train/ce_loss", "train/reg_loss"} <= set(metrics)
    assert metrics["val/acc"] > 0.8
