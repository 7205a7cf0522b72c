"""FSP, factor transfer and activation boundaries (the methods trained in two runs), ReviewKD and OFD: their terms
against naive float64 references written from the formulas (values and gradients), and the runs chained as the
papers train them: FSP's and AB's initialisation then the labels from that student (``Classifier(net_ckpt=...)``),
FT's paraphraser then the transfer through it, frozen; ReviewKD's review and OFD's margins on the benchmark pairs."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch
from torch import Tensor

from lightning_kd import FSP, OFD, ActivationBoundaries, Classifier, FactorTransfer, ReviewKD
from lightning_kd.checkpoints import CHECKPOINT_KEY, CheckpointError, read_checkpoint
from lightning_kd.data import DigitsDataModule
from lightning_kd.errors import Refusal
from lightning_kd.losses.activation_boundaries import ab_loss
from lightning_kd.losses.factor_transfer import factor_transfer_loss
from lightning_kd.losses.fsp import fsp_loss
from lightning_kd.losses.ofd import ofd_loss, ofd_margin
from lightning_kd.losses.review_kd import review_kd_loss, review_warmup
from lightning_kd.models import MLP, SmallCNN, create_model
from tests.helpers import cpu_trainer, record_term

B = 3
LOGITS, TARGETS = torch.zeros(B, 4, dtype=torch.float64), torch.tensor([0, 1, 3])


def _maps(*shapes: tuple[int, ...], seed: int, grad: bool) -> list[Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=generator, dtype=torch.float64).requires_grad_(grad) for shape in shapes]


def naive_pool(x: Tensor, size: int) -> Tensor:
    """Average pooling of a square map down to ``size`` by equal blocks, written out."""
    k = x.shape[-1] // size
    return torch.stack([torch.stack([x[..., i * k:(i + 1) * k, j * k:(j + 1) * k].mean(dim=(-2, -1))
                                     for j in range(size)], -1) for i in range(size)], -2)


def naive_fsp_matrix(bottom: Tensor, top: Tensor, b: int) -> list[list[Tensor]]:
    """``G[i][j] = sum_{h,w} bottom[i,h,w] top[j,h,w] / (H W)`` for sample ``b``, the larger map pooled first."""
    size = min(bottom.shape[-1], top.shape[-1])
    bottom, top = naive_pool(bottom, size), naive_pool(top, size)
    return [[sum(bottom[b, i, h, w] * top[b, j, h, w] for h in range(size) for w in range(size)) / size**2
             for j in range(top.shape[1])] for i in range(bottom.shape[1])]


def naive_fsp(student: list[Tensor], teacher: list[Tensor], convention: str) -> Tensor:
    total = 0
    for layer in range(len(student) - 1):
        per_sample = []
        for b in range(B):
            gs = naive_fsp_matrix(student[layer], student[layer + 1], b)
            gt = naive_fsp_matrix(teacher[layer], teacher[layer + 1], b)
            squares = [(x - y) ** 2 for rs, rt in zip(gs, gt, strict=True) for x, y in zip(rs, rt, strict=True)]
            per_sample.append(sum(squares) / len(squares) if convention == "benchmark_code" else sum(squares))
        total = total + sum(per_sample) / B
    return total


@pytest.mark.parametrize("convention", ["benchmark_code", "paper"])
def test_fsp_is_the_squared_difference_of_the_gram_matrices_between_consecutive_layers(convention: str) -> None:
    shapes = [(B, 2, 4, 4), (B, 3, 4, 4), (B, 2, 2, 2)]  # the third pair halves the resolution: pooled
    student = _maps(*shapes, seed=0, grad=True)
    teacher = _maps(*shapes[:2], (B, 2, 4, 4), seed=1, grad=False)  # the teacher's at another resolution
    value = fsp_loss(LOGITS, TARGETS, student, teacher, convention=convention)["fsp"]
    expected = naive_fsp(student, teacher, convention)
    assert float(value) == pytest.approx(float(expected), rel=1e-10) and float(expected) > 1e-3
    grads = torch.autograd.grad(value, student)
    expected_grads = torch.autograd.grad(expected, student)
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(grad, expected_grad, rtol=1e-8, atol=1e-12)


def naive_factor(x: Tensor, b: int, convention: str) -> list[Tensor]:
    if convention == "benchmark_code":  # the channels' mean of squares at each position
        values = [sum(x[b, c, i, j] ** 2 for c in range(x.shape[1])) / x.shape[1]
                  for i in range(x.shape[2]) for j in range(x.shape[3])]
    else:
        values = list(x[b].flatten())
    norm = torch.sqrt(sum(v * v for v in values))
    return [v / norm for v in values]


@pytest.mark.parametrize("convention", ["benchmark_code", "paper"])
def test_factor_transfer_is_the_l1_distance_of_the_normalised_factors(convention: str) -> None:
    (student,) = _maps((B, 4, 4, 4), seed=2, grad=True)
    (teacher,) = _maps((B, 4, 2, 2), seed=3, grad=False)  # the student's factor is pooled to the teacher's
    value = factor_transfer_loss(LOGITS, TARGETS, [student], [teacher], convention=convention)["ft"]
    pooled = naive_pool(student, 2)
    differences = [[abs(x - y) for x, y in zip(naive_factor(pooled, b, convention),
                                                naive_factor(teacher, b, convention), strict=True)] for b in range(B)]
    if convention == "benchmark_code":
        expected = sum(sum(row) for row in differences) / (B * len(differences[0]))
    else:
        expected = sum(sum(row) for row in differences) / B
    assert float(value) == pytest.approx(float(expected), rel=1e-10) and float(expected) > 1e-3
    (grad,) = torch.autograd.grad(value, student)
    (expected_grad,) = torch.autograd.grad(expected, student)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-8, atol=1e-12)


# -- FSP as a task -----------------------------------------------------------------------------------------------
def _cnn(widths: tuple[int, ...] = (8, 16), seed: int = 0) -> SmallCNN:
    torch.manual_seed(seed)
    return SmallCNN(widths=widths, num_classes=10)


def test_fsp_taps_the_stem_and_stages_and_refuses_widths_that_differ_or_a_single_layer() -> None:
    pairs = FSP(create_model("vgg8", num_classes=100), create_model("vgg13", num_classes=100)).feature_pairs()
    assert [p.student_layer for p in pairs] == ["block0", "block1", "block2", "block3", "block4"]  # "stem" on VGG
    task = FSP(create_model("shufflenetv2", num_classes=100), create_model("resnet32x4", num_classes=100))
    with pytest.raises(Refusal, match=r"FSP pair 1 \(stem -> stem\): the student's layer has 24 channels and the "
                                      r"teacher's 32; FSP compares matrices of channels"):
        task.build_projectors((3, 32, 32))
    with pytest.raises(Refusal, match="SmallCNN has no layer 'stem'"):
        FSP(_cnn(), _cnn()).build_projectors((1, 8, 8))
    single = FSP(_cnn(), _cnn(seed=1), student_layers="stages[0]", teacher_layers="stages[0]")
    with pytest.raises(Refusal, match="FSP relates consecutive layers: name at least 2"):
        single.build_projectors((1, 8, 8))
    with pytest.raises(Refusal, match="fsp_weight must be finite and >= 0"):
        FSP(_cnn(), _cnn(), fsp_weight=-1.0)
    assert FSP.run_variant({"ce_weight": 0.0}) == "fsp1-init"
    assert FSP.run_variant({"convention": "paper"}) == "fsp1-paper"
    assert FactorTransfer.run_variant({"phase": "paraphraser"}) == "paraphraser"
    assert FactorTransfer.run_variant({"ft_weight": 100.0}) == "ft100"


def test_fsp_initialises_the_student_and_the_labels_train_it_from_there(tmp_path: Path) -> None:
    """The paper's two runs: FSP alone (the classifier, which it does not reach, left exactly as it was, and the
    term lowered), then a Classifier starting from that student, its checkpoints holding the weights."""
    stage_1 = FSP(_cnn(), _cnn(seed=1), student_layers="stages", teacher_layers="stages", ce_weight=0.0,
                  lr_scheduler="none")
    head = stage_1.student.fc.weight.detach().clone()
    seen = record_term(stage_1, "fsp")
    trainer = cpu_trainer(max_epochs=2, limit_train_batches=13, limit_val_batches=0)
    trainer.fit(stage_1, datamodule=DigitsDataModule(batch_size=32))
    assert torch.equal(stage_1.student.fc.weight, head)
    assert sum(seen[-5:]) < 0.8 * sum(seen[:5]), seen
    path = tmp_path / "fsp.ckpt"
    trainer.save_checkpoint(path)

    stage_2 = Classifier(_cnn(seed=5), net_ckpt=str(path))
    for name, tensor in stage_1.student.state_dict().items():
        assert torch.equal(stage_2.net.state_dict()[name], tensor), name
    trainer = cpu_trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=0)
    trainer.fit(stage_2, datamodule=DigitsDataModule(batch_size=32))
    trainer.save_checkpoint(tmp_path / "stage2.ckpt")
    saved = read_checkpoint(tmp_path / "stage2.ckpt")
    assert saved["hyper_parameters"]["net_ckpt"] is None and saved[CHECKPOINT_KEY]["net_ckpt"] == str(path)
    path.unlink()  # the second run's checkpoint needs the first's file no more
    Classifier.load_from_checkpoint(tmp_path / "stage2.ckpt", net=_cnn())


# -- factor transfer as a task -----------------------------------------------------------------------------------
def _paraphraser_run(tmp_path: Path) -> tuple[FactorTransfer, Path, list[float]]:
    task = FactorTransfer(_cnn(), _cnn((16, 32), seed=1), phase="paraphraser", lr_scheduler="none",
                          optimizer=lambda parameters: torch.optim.Adam(parameters, lr=3e-3))
    seen = record_term(task, "reconstruction")
    trainer = cpu_trainer(max_epochs=2, limit_train_batches=13, limit_val_batches=0)
    task.build_projectors((1, 8, 8))  # as the fit would: built now, to compare every weight before and after
    before = {name: t.detach().clone() for name, t in task.state_dict().items()}
    trainer.fit(task, datamodule=DigitsDataModule(batch_size=32))
    after = task.state_dict()
    moved = {name for name, t in after.items() if t.is_floating_point() and not torch.equal(t, before[name])}
    # the paraphraser alone learns; the student's weights are untouched (its BatchNorm statistics too)
    assert moved and all(".paraphraser_" in name for name in moved), sorted(n for n in moved if "paraphraser_" not in n)
    path = tmp_path / "paraphraser.ckpt"
    trainer.save_checkpoint(path)
    return task, path, seen


def test_the_paraphraser_learns_to_reconstruct_and_the_transfer_reads_it_frozen(tmp_path: Path) -> None:
    first, path, reconstruction = _paraphraser_run(tmp_path)
    assert sum(reconstruction[-5:]) < 0.8 * sum(reconstruction[:5]), reconstruction
    second = FactorTransfer(_cnn(), _cnn((16, 32), seed=1), paraphraser_ckpt=str(path), ft_weight=10.0,
                            lr_scheduler="none")
    seen = record_term(second, "ft")
    trainer = cpu_trainer(max_epochs=2, limit_train_batches=13, limit_val_batches=0)
    trainer.fit(second, datamodule=DigitsDataModule(batch_size=32))
    trained = first.projectors[0]
    for name, tensor in second.projectors[0].state_dict().items():  # the first run's paraphraser, unchanged
        if "paraphraser_" in name:
            assert torch.equal(tensor, trained.state_dict()[name]), name
    assert all(not p.requires_grad for p in second.projectors[0].paraphraser_parameters())
    assert sum(seen[-5:]) < 0.8 * sum(seen[:5]), seen  # the translated factor nears the paraphrased one
    trainer.save_checkpoint(tmp_path / "transfer.ckpt")
    path.unlink()  # its checkpoint holds the paraphraser: reloading it reads no other file
    reloaded = FactorTransfer.load_from_checkpoint(tmp_path / "transfer.ckpt", student=_cnn(),
                                                   teacher=_cnn((16, 32)))
    torch.testing.assert_close(reloaded.projectors[0].state_dict(), second.projectors[0].state_dict())
    # a resume builds the task as the checkpoint records it (no paraphraser_ckpt): the fit restores the paraphraser
    resumed = FactorTransfer(_cnn(), _cnn((16, 32), seed=1), ft_weight=10.0, lr_scheduler="none")
    cpu_trainer(max_epochs=3, limit_train_batches=2, limit_val_batches=0).fit(
        resumed, datamodule=DigitsDataModule(batch_size=32), ckpt_path=tmp_path / "transfer.ckpt")
    for name, tensor in resumed.projectors[0].state_dict().items():
        if "paraphraser_" in name:
            assert torch.equal(tensor, trained.state_dict()[name]), name


def test_the_transfer_refuses_to_start_without_a_paraphraser_of_this_teacher(tmp_path: Path) -> None:
    trainer = cpu_trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=0)
    with pytest.raises(Refusal, match="FactorTransfer transfers through a paraphraser trained first: run it with "
                                      "phase: paraphraser"):
        trainer.fit(FactorTransfer(_cnn(), _cnn((16, 32))), datamodule=DigitsDataModule(batch_size=32))
    classifier = Classifier(_cnn())
    cpu_trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=0).fit(
        classifier, datamodule=DigitsDataModule(batch_size=32))
    not_a_paraphraser = tmp_path / "classifier.ckpt"
    classifier.trainer.save_checkpoint(not_a_paraphraser)
    task = FactorTransfer(_cnn(), _cnn((16, 32)), paraphraser_ckpt=str(not_a_paraphraser))
    with pytest.raises(CheckpointError, match="is not a FactorTransfer run with phase: paraphraser"):
        task.build_projectors((1, 8, 8))
    _, path, _ = _paraphraser_run(tmp_path)
    other_teacher = FactorTransfer(_cnn(), _cnn((16, 24)), paraphraser_ckpt=str(path))
    with pytest.raises(CheckpointError, match=r"does not fit this teacher's paraphraser .*another teacher"):
        other_teacher.build_projectors((1, 8, 8))
    other_layer = FactorTransfer(_cnn(), _cnn((16, 32)), paraphraser_ckpt=str(path), teacher_layers="stages[0]")
    with pytest.raises(CheckpointError, match=r"trained its paraphraser on the teacher's 'stages\[-1\]'"):
        other_layer.build_projectors((1, 8, 8))
    with pytest.raises(Refusal, match="unknown factor transfer phase 'pretrain'"):
        FactorTransfer(_cnn(), _cnn(), phase="pretrain")


@pytest.mark.parametrize(("teacher", "student"), [("resnet32x4", "resnet8x4"), ("resnet56", "resnet20"),
                                                  ("wrn_40_2", "wrn_16_2"), ("vgg13", "vgg8"),
                                                  ("resnet32x4", "shufflenetv2")])
def test_fsp_and_factor_transfer_find_their_layers_on_the_benchmark_pairs(teacher: str, student: str) -> None:
    teacher_net, student_net = create_model(teacher, num_classes=100), create_model(student, num_classes=100)
    FactorTransfer(student_net, teacher_net, phase="paraphraser").build_projectors((3, 32, 32))
    fsp = FSP(student_net, teacher_net)
    if student == "shufflenetv2":  # widths unlike the teacher's: FSP cannot compare them
        with pytest.raises(Refusal, match="FSP compares matrices of channels"):
            fsp.build_projectors((3, 32, 32))
    else:
        fsp.build_projectors((3, 32, 32))
        assert len(fsp.feature_pairs()) == 1 + len(student_net.stage_names)


# -- ReviewKD ----------------------------------------------------------------------------------------------------
def naive_hcl(s: Tensor, t: Tensor) -> Tensor:
    """The mean square error at full size, then at 4, 2, 1 pixels a side (smaller than the map only), each level's
    pooling written out as block means, weighted 1, 1/2, 1/4, 1/8 and normalised by the weights' sum."""
    def mse(a: Tensor, b: Tensor) -> Tensor:
        values = [(x - y) ** 2 for x, y in zip(a.flatten(), b.flatten(), strict=True)]
        return sum(values) / len(values)

    total, weights, weight = mse(s, t), 1.0, 1.0
    for size in (4, 2, 1):
        if size >= s.shape[-1]:
            continue
        weight /= 2
        total = total + weight * mse(naive_pool(s, size), naive_pool(t, size))
        weights += weight
    return total / weights


def test_reviewkd_hierarchical_context_loss_equals_its_formula_in_value_and_gradient() -> None:
    student = _maps((2, 3, 8, 8), (2, 4, 4, 4), (2, 5, 1, 1), seed=4, grad=True)
    teacher = _maps((2, 3, 8, 8), (2, 4, 4, 4), (2, 5, 1, 1), seed=5, grad=False)
    value = review_kd_loss(LOGITS[:2], TARGETS[:2], student, teacher, review_weight=1.0)["review"]
    expected = sum(naive_hcl(s, t) for s, t in zip(student, teacher, strict=True))
    assert float(value) == pytest.approx(float(expected), rel=1e-10)
    grads = torch.autograd.grad(value, student)
    expected_grads = torch.autograd.grad(expected, student)
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(grad, expected_grad, rtol=1e-8, atol=1e-12)
    # the warm-up: mdistiller counts epochs from 1, the authors' code from 0 (no review term in the first epoch)
    assert [review_warmup(e, 4) for e in (0, 1, 3, 9)] == [0.25, 0.5, 1.0, 1.0]
    assert [review_warmup(e, 4, "authors_code") for e in (0, 1, 4)] == [0.0, 0.25, 1.0]
    out = review_kd_loss(LOGITS[:2], TARGETS[:2], student, teacher, review_weight=3.0, warmup=0.5)
    torch.testing.assert_close(out["loss"], out["ce"] + 1.5 * out["review"])


def test_reviewkd_reviews_deep_to_shallow_on_every_benchmark_pair_and_lowers_its_term() -> None:
    for teacher, student in [("resnet32x4", "resnet8x4"), ("resnet56", "resnet20"), ("wrn_40_2", "wrn_16_2"),
                             ("vgg13", "vgg8"), ("resnet32x4", "shufflenetv2")]:
        task = ReviewKD(create_model(student, num_classes=100), create_model(teacher, num_classes=100))
        task.build_projectors((3, 32, 32))
        pairs = task.feature_pairs()
        assert pairs[-1].teacher_layer == "penultimate" and len(pairs) == 1 + len(task.student.stage_names)
        assert [f.attention is None for f in task.projectors] == [False] * (len(pairs) - 1) + [True]
    with pytest.raises(Refusal, match=r"MLP does not name its stages before their last ReLU \(\"preact_stages\"\)"):
        ReviewKD(_cnn(), MLP(hidden_sizes=(16,), num_classes=10)).feature_pairs()
    task = ReviewKD(_cnn(), _cnn((16, 32), seed=1), warmup_epochs=0, lr_scheduler="none")
    seen = record_term(task, "review")
    cpu_trainer(max_epochs=2, limit_train_batches=13, limit_val_batches=0).fit(
        task, datamodule=DigitsDataModule(batch_size=32))
    assert sum(seen[-5:]) < 0.8 * sum(seen[:5]), seen
    assert ReviewKD.run_variant({}) == "review5" and ReviewKD.run_variant({"convention": "authors_code"}) == \
        "review5-authors"


# -- OFD -----------------------------------------------------------------------------------------------------------
def test_ofd_margin_is_the_expected_negative_response_and_the_partial_l2_skips_what_relu_erases() -> None:
    """The margin against a numerical integral of x over the negative half of N(m, s^2), divided by its mass; the
    partial distance element by element from its cases."""
    weight, bias = torch.tensor([1.0, 0.5, 2.0, 1.0], dtype=torch.float64), torch.tensor([0.0, 0.3, -1.0, 4.0],
                                                                                          dtype=torch.float64)
    margins = ofd_margin(weight, bias)
    for s, m, got in zip(weight.tolist(), bias.tolist(), margins.tolist(), strict=True):
        x = torch.linspace(m - 12 * s, 0.0, 200001, dtype=torch.float64)
        density = torch.exp(-((x - m) / s) ** 2 / 2)
        mass = torch.trapezoid(density, x)
        expected = float(torch.trapezoid(x * density, x) / mass) if float(mass) / (s * math.sqrt(2 * math.pi)) > 1e-3 \
            else -3 * s
        assert got == pytest.approx(expected, rel=1e-6)
    (student,) = _maps((2, 4, 3, 3), seed=6, grad=True)
    (teacher,) = _maps((2, 4, 6, 6), seed=7, grad=False)  # pooled to the student's 3x3
    value = ofd_loss(LOGITS[:2], TARGETS[:2], [student, student], [teacher, teacher], [margins, margins],
                     ofd_weight=1.0, ce_weight=0.0)["loss"]
    pooled = naive_pool(teacher, 3)
    total = 0
    for b, c, i, j in itertools.product(range(2), range(4), range(3), range(3)):
        s, t, margin = student[b, c, i, j], pooled[b, c, i, j], margins[c]
        if t <= margin:
            total = total + ((s - margin) ** 2 if s > margin else 0)
        elif t <= 0:
            total = total + ((s - t) ** 2 if s > t else 0)
        else:
            total = total + (s - t) ** 2
    expected = (total / 2) * (1 / 2 + 1)  # two stages, the shallower weighted 1/2
    assert float(value) == pytest.approx(float(expected), rel=1e-10)
    torch.testing.assert_close(torch.autograd.grad(value, student)[0], torch.autograd.grad(expected, student)[0])


def test_ofd_takes_its_margins_from_the_teachers_batchnorms_and_keeps_them(tmp_path: Path) -> None:
    teacher = _cnn((16, 32), seed=1)
    with torch.no_grad():
        teacher.body[5].weight.fill_(2.0)
        teacher.body[5].bias.fill_(10.0)  # almost never negative: the margin is -3 s
    task = OFD(_cnn(), teacher, lr_scheduler="none")
    task.build_projectors((1, 8, 8))
    assert [(p.student_layer, p.teacher_layer) for p in task.feature_pairs()] == [("body.1", "body.1"),
                                                                                   ("body.5", "body.5")]
    torch.testing.assert_close(task.projectors[1].margin, torch.full((32,), -6.0))
    seen = record_term(task, "ofd")
    trainer = cpu_trainer(max_epochs=2, limit_train_batches=13, limit_val_batches=0)
    trainer.fit(task, datamodule=DigitsDataModule(batch_size=32))
    assert sum(seen[-5:]) < 0.8 * sum(seen[:5]), seen
    trainer.save_checkpoint(tmp_path / "ofd.ckpt")
    reloaded = OFD.load_from_checkpoint(tmp_path / "ofd.ckpt", student=_cnn(), teacher=_cnn((16, 32)))
    torch.testing.assert_close(reloaded.projectors[1].margin, torch.full((32,), -6.0))
    with pytest.raises(Refusal, match="CifarMobileNetV2 does not name its stages before their last ReLU"):
        OFD(create_model("mobilenetv2", num_classes=100), create_model("resnet32x4", num_classes=100))
    for teacher_name, student_name in [("resnet32x4", "resnet8x4"), ("resnet56", "resnet20"), ("wrn_40_2", "wrn_16_2"),
                                       ("vgg13", "vgg8"), ("resnet32x4", "shufflenetv2")]:
        OFD(create_model(student_name, num_classes=100), create_model(teacher_name, num_classes=100)).build_projectors(
            (3, 32, 32))


# -- activation boundaries ---------------------------------------------------------------------------------------
def test_activation_boundaries_counts_only_the_wrong_side_of_the_margin() -> None:
    student = _maps((2, 3, 2, 2), (2, 4, 1, 1), seed=8, grad=True)
    teacher = _maps((2, 3, 2, 2), (2, 4, 1, 1), seed=9, grad=False)
    value = ab_loss(LOGITS[:2], TARGETS[:2], student, teacher, margin=0.5)["ab"]
    expected = 0
    for depth, (s, t) in enumerate(zip(student, teacher, strict=True)):
        stage = 0
        for x, y in zip(s.flatten(), t.flatten(), strict=True):
            if y <= 0 and x > -0.5:  # the teacher's neuron is off: the student's must be below -margin
                stage = stage + (x + 0.5) ** 2
            elif y > 0 and x <= 0.5:  # on: above +margin
                stage = stage + (x - 0.5) ** 2
        expected = expected + 2.0 ** (depth - 1) * stage / 2 * 3 / 1000  # the deeper stage weighs 1, batch 2
    assert float(value) == pytest.approx(float(expected), rel=1e-10) and float(expected) > 0
    grads, expected_grads = torch.autograd.grad(value, student), torch.autograd.grad(expected, student)
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(grad, expected_grad)


def test_activation_boundaries_connects_where_shapes_differ_and_initialises_the_student() -> None:
    for teacher_name, student_name in [("resnet32x4", "resnet8x4"), ("resnet56", "resnet20"), ("wrn_40_2", "wrn_16_2"),
                                       ("vgg13", "vgg8"), ("resnet32x4", "shufflenetv2")]:
        ActivationBoundaries(create_model(student_name, num_classes=100),
                             create_model(teacher_name, num_classes=100)).build_projectors((3, 32, 32))
    task = ActivationBoundaries(create_model("resnet8x4", num_classes=100), create_model("resnet56", num_classes=100))
    task.build_projectors((3, 32, 32))
    assert [type(c[0]).__name__ for c in task.projectors] == ["Conv2d"] * 3 and not any(
        isinstance(m, torch.nn.ReLU) for m in task.projectors.modules())  # pre-activations: no ReLU
    first = ActivationBoundaries(_cnn(), _cnn((16, 32), seed=1), ce_weight=0.0, lr_scheduler="none")
    head = first.student.fc.weight.detach().clone()
    seen = record_term(first, "ab")
    cpu_trainer(max_epochs=2, limit_train_batches=13, limit_val_batches=0).fit(
        first, datamodule=DigitsDataModule(batch_size=32))
    assert torch.equal(first.student.fc.weight, head)  # the initialisation leaves the classifier to the labels
    assert sum(seen[-5:]) < 0.8 * sum(seen[:5]), seen
    assert ActivationBoundaries.run_variant({"ce_weight": 0.0}) == "ab1-margin1-init"
