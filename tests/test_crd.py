"""CRD: the NCE loss against its formula, the memory banks' update and the negatives against hand computations, and the
task: the normalising constants, the banks in checkpoints, the refusals."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_kd import CRD
from lightning_kd.data import DigitsDataModule
from lightning_kd.errors import Refusal
from lightning_kd.losses import ContrastMemory, crd_loss, nce_loss, negatives_of_other_classes
from lightning_kd.models import SmallCNN
from tests.helpers import cpu_trainer


def naive_nce(scores: list[list[float]], num_data: int, eps: float = 1e-7) -> float:
    """The authors' NCE, sample by sample: the positive's log-odds against noise, and each negative's."""
    total = 0.0
    for row in scores:
        k = len(row) - 1
        noise = k / num_data
        total += math.log(row[0] / (row[0] + noise + eps))
        total += sum(math.log(noise / (h + noise + eps)) for h in row[1:])
    return -total / len(scores)


@pytest.mark.parametrize(("batch", "negatives", "num_data"), [(2, 3, 10), (5, 16, 1000), (8, 64, 50000)])
def test_nce_equals_its_formula_in_value_and_gradient(batch: int, negatives: int, num_data: int) -> None:
    torch.manual_seed(batch)
    scores = (torch.rand(batch, 1 + negatives, dtype=torch.float64) * 3 / num_data).requires_grad_()
    value = nce_loss(scores, num_data)
    assert float(value.detach()) == pytest.approx(naive_nce(scores.tolist(), num_data), rel=1e-12)
    (grad,) = torch.autograd.grad(value, scores)
    noise = negatives / num_data
    expected = torch.empty_like(scores)  # d/dh of -log(h/(h+n+e)) and of -log(n/(h+n+e)), over the batch
    h = scores.detach()
    expected[:, 0] = -(1 / h[:, 0] - 1 / (h[:, 0] + noise + 1e-7)) / batch
    expected[:, 1:] = (1 / (h[:, 1:] + noise + 1e-7)) / batch
    torch.testing.assert_close(grad, expected)


def test_scores_read_the_other_networks_bank_before_the_update_which_then_moves_the_rows() -> None:
    torch.manual_seed(0)
    memory = ContrastMemory(num_data=6, dim=4, temperature=0.5, momentum=0.25).double()
    old_student, old_teacher = memory.student.clone(), memory.teacher.clone()
    v_s = torch.nn.functional.normalize(torch.randn(2, 4, dtype=torch.float64), dim=1).requires_grad_()
    v_t = torch.nn.functional.normalize(torch.randn(2, 4, dtype=torch.float64), dim=1)
    rows = torch.tensor([[3, 0, 5], [1, 2, 2]])
    s_scores, t_scores = memory.raw_scores(v_s, v_t, rows)
    for b in range(2):
        for j in range(3):
            assert float(s_scores[b, j]) == pytest.approx(
                math.exp(float(old_teacher[rows[b, j]] @ v_s[b].detach()) / 0.5), rel=1e-12)
            assert float(t_scores[b, j]) == pytest.approx(math.exp(float(old_student[rows[b, j]] @ v_t[b]) / 0.5),
                                                          rel=1e-12)
    s_scores.sum().backward()
    assert v_s.grad is not None and not memory.teacher.requires_grad  # the banks are constants
    memory.update(torch.tensor([3, 1]), v_s.detach(), v_t)
    for b, index in enumerate([3, 1]):
        mixed = 0.25 * old_student[index] + 0.75 * v_s[b].detach()
        torch.testing.assert_close(memory.student[index], mixed / mixed.norm())
        mixed = 0.25 * old_teacher[index] + 0.75 * v_t[b]
        torch.testing.assert_close(memory.teacher[index], mixed / mixed.norm())
    untouched = [0, 2, 4, 5]
    assert torch.equal(memory.student[untouched], old_student[untouched])
    assert torch.equal(memory.teacher[untouched], old_teacher[untouched])


def test_negatives_are_uniform_over_the_samples_of_other_classes() -> None:
    labels = torch.tensor([2, 0, 1, 0, 2, 2, 1, 0, 3])
    generator = torch.Generator().manual_seed(0)
    drawn = negatives_of_other_classes(labels, torch.tensor([0, 2]), 30000, generator)
    for row, target in zip(drawn, [0, 2], strict=True):
        candidates = [i for i in range(len(labels)) if labels[i] != target]
        counts = torch.bincount(row, minlength=len(labels)).double()
        assert set(row.unique().tolist()) == set(candidates)
        frequencies = counts[candidates] / len(row)
        assert float((frequencies - 1 / len(candidates)).abs().max()) < 0.01
    with pytest.raises(Refusal, match="the training split holds one class"):
        negatives_of_other_classes(torch.zeros(4, dtype=torch.long), torch.tensor([0]), 3)


def test_crd_loss_weighs_its_parts_and_adds_kd_only_when_asked() -> None:
    torch.manual_seed(0)
    logits, teacher = torch.randn(4, 3, requires_grad=True), torch.randn(4, 3)
    scores_s, scores_t = torch.rand(4, 9) / 100, torch.rand(4, 9) / 100
    out = crd_loss(logits, torch.tensor([0, 1, 2, 0]), scores_s, scores_t, 100, crd_weight=0.8, ce_weight=0.5)
    torch.testing.assert_close(out["crd"], nce_loss(scores_s, 100) + nce_loss(scores_t, 100))
    torch.testing.assert_close(out["loss"], 0.5 * out["ce"] + 0.8 * out["crd"])
    with_kd = crd_loss(logits, torch.tensor([0, 1, 2, 0]), scores_s, scores_t, 100, kd_weight=1.0,
                       teacher_logits=teacher, temperature=4.0)
    torch.testing.assert_close(with_kd["loss"], with_kd["ce"] + 0.8 * with_kd["crd"] + with_kd["kd"])


def _crd(**kwargs) -> CRD:
    return CRD(SmallCNN((8, 16), num_classes=10), SmallCNN((16, 32), num_classes=10), negatives=64, **kwargs)


def test_a_step_on_the_loss_pulls_each_embedding_towards_its_positive_row_more_than_the_negatives() -> None:
    torch.manual_seed(0)
    memory = ContrastMemory(num_data=40, dim=8).double()
    memory.update(torch.arange(40), *(torch.nn.functional.normalize(torch.randn(40, 8, dtype=torch.float64), dim=1)
                                      for _ in range(2)))
    labels = torch.arange(40) % 4
    index = torch.tensor([0, 5, 10, 15])
    rows = torch.cat([index[:, None], negatives_of_other_classes(labels, labels[index], 16)], 1)
    raw = torch.nn.functional.normalize(torch.randn(4, 8, dtype=torch.float64), dim=1).requires_grad_()
    teacher = torch.nn.functional.normalize(torch.randn(4, 8, dtype=torch.float64), dim=1)

    def dots(v: torch.Tensor) -> tuple[float, float]:
        picked = memory.teacher[rows]
        cos = (picked * v.detach().unsqueeze(1)).sum(-1)
        return float(cos[:, 0].mean()), float(cos[:, 1:].mean())

    student = torch.nn.functional.normalize(raw, dim=1)
    s_scores, t_scores = memory.raw_scores(student, teacher, rows)
    z = torch.stack([s_scores.mean(), t_scores.mean()]).detach() * 40
    crd_loss(torch.zeros(4, 2, dtype=torch.float64), torch.zeros(4, dtype=torch.long), s_scores / z[0],
             t_scores / z[1], 40)["crd"].backward()
    positive, negative = dots(student)
    moved = torch.nn.functional.normalize(raw.detach() - 0.01 * raw.grad, dim=1)
    assert dots(moved)[0] > positive  # nearer its own sample's row
    assert dots(moved)[0] - dots(moved)[1] > positive - negative  # and more so than to the other classes' rows


def test_a_fit_sets_the_constants_once_and_keeps_the_banks_in_its_checkpoint(tmp_path) -> None:
    torch.manual_seed(0)
    task = _crd(ce_weight=0.0)
    seen: list[tuple[float, list[float]]] = []
    original = task.training_losses

    def recorded(batch):
        losses, logits = original(batch)
        seen.append((float(losses["crd"]), task.memory.normalisers.tolist()))
        return losses, logits

    task.training_losses = recorded
    data = DigitsDataModule(batch_size=32)
    trainer = cpu_trainer(max_epochs=3, limit_train_batches=12, limit_val_batches=0)
    trainer.fit(task, datamodule=data)
    assert task.memory.num_data == len(data.train_set)
    assert all(z == seen[0][1] for _, z in seen) and min(seen[0][1]) > 0  # from the first batch, then fixed
    assert all(math.isfinite(c) for c, _ in seen)
    path = tmp_path / "crd.ckpt"
    trainer.save_checkpoint(path)
    reloaded = CRD.load_from_checkpoint(path, student=SmallCNN((8, 16), num_classes=10),
                                        teacher=SmallCNN((16, 32), num_classes=10))
    for name in ("student", "teacher", "normalisers"):
        assert torch.equal(getattr(reloaded.memory, name), getattr(task.memory, name)), name
    torch.testing.assert_close(reloaded.projectors[0].teacher.weight, task.projectors[0].teacher.weight)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"crd_weight": -0.8}, "crd_weight must be finite and >= 0, got -0.8"),
    ({"momentum": 1.0}, r"momentum \(a memory row's weight in its update\) must be in \[0, 1\), got 1.0"),
    ({"nce_temperature": 0.0}, "temperature must be finite and > 0, got 0.0"),
    ({"dim": 0}, r"dim \(the embedding width\) must be finite and > 0, got 0"),
])
def test_bad_settings_are_refused_in_one_line(kwargs: dict, message: str) -> None:
    with pytest.raises(Refusal, match=message):
        _crd(**kwargs)


def test_a_split_without_labels_is_refused_before_training() -> None:
    class Unlabelled(DigitsDataModule):
        def setup(self, stage: str) -> None:
            super().setup(stage)
            self.train_set = list(self.train_set)  # no targets() to read

    with pytest.raises(Refusal, match="CRD draws its negatives by the training samples' labels and indices"):
        cpu_trainer(max_epochs=1, limit_train_batches=1).fit(_crd(), datamodule=Unlabelled(batch_size=32))


def test_run_names_carry_the_main_values() -> None:
    assert CRD.run_variant({}) == "crd0.8-K16384" and CRD.run_variant({"kd_weight": 1.0}) == "crd0.8-K16384-kd1"


def test_scores_stay_in_float32_under_mixed_precision() -> None:
    """exp(<v, m> / 0.07) reaches 1.6e6 for aligned vectors, past float16's range: scored in float32 whatever the
    autocast."""
    memory = ContrastMemory(num_data=4, dim=8, momentum=0.0)
    memory.update(torch.arange(4), torch.eye(8)[:4], torch.eye(8)[:4])  # rows 0-3: the unit vectors
    with torch.autocast("cpu", dtype=torch.bfloat16):
        student = torch.nn.Linear(8, 8)(torch.eye(8)[:2])  # bfloat16 under autocast
        assert student.dtype == torch.bfloat16
        s_scores, t_scores = memory.raw_scores(student, torch.eye(8)[:2], torch.tensor([[0, 1], [1, 2]]))
    assert s_scores.dtype == t_scores.dtype == torch.float32
    assert float(t_scores[0, 0]) == pytest.approx(math.exp(1 / 0.07), rel=1e-5)
