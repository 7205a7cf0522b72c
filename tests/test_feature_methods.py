"""The feature methods (AT, SP, NST, PKT, RKD, FitNets) against naive references written from their formulas, and as
tasks: the pairs they tap, the refusals, the regressor in checkpoints, the two FitNets stages, the terms they lower."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from lightning_kd import (
    NST,
    PKT,
    RKD,
    VID,
    AttentionTransfer,
    CorrelationCongruence,
    FitNets,
    SimilarityPreserving,
    VanillaKD,
)
from lightning_kd.checkpoints import load_network
from lightning_kd.data import DigitsDataModule
from lightning_kd.errors import Refusal
from lightning_kd.losses import (
    attention_transfer_loss,
    correlation_congruence_loss,
    hint_loss,
    nst_loss,
    pkt_loss,
    rkd_loss,
    similarity_preserving_loss,
    vid_loss,
)
from lightning_kd.models import MLP, SmallCNN
from lightning_kd.tasks.fitnets import hint_regressor
from tests.helpers import cpu_trainer, record_term

B, C_S, C_T, H = 4, 3, 5, 3


# -- naive references, element by element from each paper's (or its authors' code's) formula ----------------------
def unit(values: list[Tensor]) -> list[Tensor]:
    norm = torch.sqrt(sum(v * v for v in values))
    return [v / max(norm, torch.tensor(1e-12, dtype=norm.dtype)) for v in values]


def naive_at(s: Tensor, t: Tensor, p: float, convention: str) -> Tensor:
    """Per sample ``q = mean_c a_c^p`` over the H*W positions, unit-normalised; then per convention."""
    per_sample = []
    for b in range(s.shape[0]):
        q = [unit([sum(x[b, c, i, j] ** p for c in range(x.shape[1])) / x.shape[1]
                   for i in range(x.shape[2]) for j in range(x.shape[3])]) for x in (s, t)]
        squares = [(a - o) ** 2 for a, o in zip(q[0], q[1], strict=True)]
        per_sample.append(sum(squares) / len(squares) if convention == "authors_code" else torch.sqrt(sum(squares)))
    return sum(per_sample) / len(per_sample)


def gram_rows(x: Tensor) -> list[list[Tensor]]:
    flat = x.flatten(1)
    rows = [[sum(flat[i, k] * flat[j, k] for k in range(flat.shape[1])) for j in range(len(flat))]
            for i in range(len(flat))]
    return [unit(row) for row in rows]


def naive_sp(s: Tensor, t: Tensor) -> Tensor:
    gs, gt = gram_rows(s), gram_rows(t)
    return sum((a - b) ** 2 for rs, rt in zip(gs, gt, strict=True) for a, b in zip(rs, rt, strict=True)) / len(s) ** 2


def naive_nst(s: Tensor, t: Tensor) -> Tensor:
    """Per sample, the squared MMD of the channels' unit spatial patterns under ``k(x, y) = (x . y)^2``."""
    total = 0
    for b in range(s.shape[0]):
        fs = [unit(list(s[b, c].flatten())) for c in range(s.shape[1])]
        ft = [unit(list(t[b, c].flatten())) for c in range(t.shape[1])]

        def k(x: list[Tensor], y: list[Tensor]) -> Tensor:
            return sum(a * o for a, o in zip(x, y, strict=True)) ** 2

        tt = sum(k(x, y) for x in ft for y in ft) / len(ft) ** 2
        ss = sum(k(x, y) for x in fs for y in fs) / len(fs) ** 2
        st = sum(k(x, y) for x in fs for y in ft) / (len(fs) * len(ft))
        total = total + tt + ss - 2 * st
    return total / s.shape[0]


def naive_pkt(s: Tensor, t: Tensor, eps: float = 1e-7) -> Tensor:
    def law(x: Tensor) -> list[list[Tensor]]:
        rows = [list(r) for r in x.flatten(1)]
        units = [[v / (torch.sqrt(sum(u * u for u in r)) + eps) for v in r] for r in rows]
        sim = [[(sum(a * o for a, o in zip(ui, uj, strict=True)) + 1) / 2 for uj in units] for ui in units]
        return [[v / sum(row) for v in row] for row in sim]

    ls, lt = law(s), law(t)
    n = len(ls)
    return sum(lt[i][j] * torch.log((lt[i][j] + eps) / (ls[i][j] + eps)) for i in range(n) for j in range(n)) / n**2


def huber(x: Tensor) -> Tensor:
    return 0.5 * x**2 if abs(float(x.detach())) < 1 else abs(x) - 0.5


def naive_rkd(s: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    def distances(x: Tensor) -> list[list[Tensor]]:
        n = len(x)
        d = [[torch.sqrt(sum((x[i, k] - x[j, k]) ** 2 for k in range(x.shape[1]))) if i != j else x.new_zeros(())
              for j in range(n)] for i in range(n)]
        mean = sum(d[i][j] for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
        return [[v / mean for v in row] for row in d]

    def angles(x: Tensor) -> list[Tensor]:
        n, out = len(x), []
        for j in range(n):
            for i in range(n):
                for k in range(n):
                    if i == j or k == j:
                        out.append(x.new_zeros(()))
                        continue
                    u, v = unit(list(x[i] - x[j])), unit(list(x[k] - x[j]))
                    out.append(sum(a * o for a, o in zip(u, v, strict=True)))
        return out

    ds, dt = distances(s.flatten(1)), distances(t.flatten(1))
    n = len(ds)
    distance = sum(huber(ds[i][j] - dt[i][j]) for i in range(n) for j in range(n)) / n**2
    a_s, a_t = angles(s.flatten(1)), angles(t.flatten(1))
    return distance, sum(huber(a - o) for a, o in zip(a_s, a_t, strict=True)) / len(a_s)


def naive_cc_authors(s: Tensor, t: Tensor) -> Tensor:
    """Consecutive samples' products of the absolute differences, summed over the width, averaged over the pairs."""
    d = [[abs(s[i, k] - t[i, k]) for k in range(s.shape[1])] for i in range(len(s))]
    return sum(sum(d[i][k] * d[i + 1][k] for k in range(s.shape[1])) for i in range(len(s) - 1)) / (len(s) - 1)


def naive_cc_paper(s: Tensor, t: Tensor, gamma: float = 0.4, order: int = 2) -> Tensor:
    """Correlation matrices of the unit rows under exp(-gamma ||x - y||^2) = exp(-2 gamma) exp(2 gamma x.y), the
    second factor's Taylor series to ``order``; the mean squared difference of the two matrices."""
    def correlation(x: Tensor) -> list[list[Tensor]]:
        rows = [unit(list(r)) for r in x]
        dots = [[sum(a * b for a, b in zip(u, v, strict=True)) for v in rows] for u in rows]
        return [[sum(math.exp(-2 * gamma) * (2 * gamma) ** p / math.factorial(p) * d**p for p in range(order + 1))
                 for d in row] for row in dots]
    cs, ct = correlation(s), correlation(t)
    n = len(cs)
    return sum((ct[i][j] - cs[i][j]) ** 2 for i in range(n) for j in range(n)) / n**2


def _pair(shape_s: tuple[int, ...], shape_t: tuple[int, ...], seed: int = 0) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    s = torch.randn(*shape_s, generator=generator, dtype=torch.float64).relu().requires_grad_()
    t = torch.randn(*shape_t, generator=generator, dtype=torch.float64).relu() + 0.05
    return s, t


LOGITS, TARGETS = torch.zeros(B, 3, dtype=torch.float64), torch.tensor([0, 1, 2, 0])

# each loss's term from the package and from the naive reference, on one pair of features
CASES: dict[str, tuple[Callable[[Tensor, Tensor], Tensor], Callable[[Tensor, Tensor], Tensor], tuple, tuple]] = {
    "at": (lambda s, t: attention_transfer_loss(LOGITS, TARGETS, [s], [t], p=2.0)["at"],
           lambda s, t: naive_at(s, t, 2.0, "authors_code"), (B, C_S, H, H), (B, C_T, H, H)),
    "at-paper-p3": (lambda s, t: attention_transfer_loss(LOGITS, TARGETS, [s], [t], p=3.0, convention="paper")["at"],
                    lambda s, t: naive_at(s, t, 3.0, "paper"), (B, C_S, H, H), (B, C_T, H, H)),
    "sp": (lambda s, t: similarity_preserving_loss(LOGITS, TARGETS, [s], [t])["sp"], naive_sp,
           (B, C_S, 2, 2), (B, 7)),
    "nst": (lambda s, t: nst_loss(LOGITS, TARGETS, [s], [t])["nst"], naive_nst, (B, C_S, H, H), (B, C_T, H, H)),
    "pkt": (lambda s, t: pkt_loss(LOGITS, TARGETS, [s], [t])["pkt"], naive_pkt, (B, 6), (B, 9)),
    "rkd-distance": (lambda s, t: rkd_loss(LOGITS, TARGETS, [s], [t])["distance"], lambda s, t: naive_rkd(s, t)[0],
                     (B, 6), (B, 9)),
    "rkd-angle": (lambda s, t: rkd_loss(LOGITS, TARGETS, [s], [t])["angle"], lambda s, t: naive_rkd(s, t)[1],
                  (B, 6), (B, 9)),
    "cc": (lambda s, t: correlation_congruence_loss(LOGITS, TARGETS, [s], [t])["cc"], naive_cc_authors,
           (B, 6), (B, 6)),
    "cc-paper": (lambda s, t: correlation_congruence_loss(LOGITS, TARGETS, [s], [t], convention="paper")["cc"],
                 naive_cc_paper, (B, 6), (B, 6)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_term_equals_its_formula_in_value_and_gradient(case: str) -> None:
    package, naive, shape_s, shape_t = CASES[case]
    s, t = _pair(shape_s, shape_t)
    value, expected = package(s, t), naive(s, t)
    assert float(value.detach()) == pytest.approx(float(expected.detach()), rel=1e-9, abs=1e-12)
    assert float(expected.detach()) > 1e-4  # the random pair is not already matched: the comparison means something
    (grad,) = torch.autograd.grad(value, s)
    (expected_grad,) = torch.autograd.grad(expected, s)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-8, atol=1e-12)


def test_hint_terms_are_the_mean_square_or_half_the_squared_norm_per_sample() -> None:
    s, t = _pair((B, C_T, 2, 2), (B, C_T, 2, 2))
    squares = [(s[b, c, i, j] - t[b, c, i, j]) ** 2 for b in range(B) for c in range(C_T) for i in range(2)
               for j in range(2)]
    benchmark = hint_loss(LOGITS, TARGETS, [s], [t])["hint"]
    paper = hint_loss(LOGITS, TARGETS, [s], [t], convention="paper")["hint"]
    assert float(benchmark) == pytest.approx(float(sum(squares) / len(squares)), rel=1e-12)
    assert float(paper) == pytest.approx(float(sum(squares) / 2 / B), rel=1e-12)


def naive_vid(mean: Tensor, t: Tensor, variance: Tensor, convention: str) -> Tensor:
    """The Gaussian's negative log-likelihood without its constant, element by element."""
    b_, c_, h_, w_ = mean.shape
    per_sample = []
    for b in range(b_):
        nll = [0.5 * ((mean[b, c, i, j] - t[b, c, i, j]) ** 2 / variance[c] + torch.log(variance[c]))
               for c in range(c_) for i in range(h_) for j in range(w_)]
        per_sample.append(sum(nll) / len(nll) if convention == "authors_code" else sum(nll))
    return sum(per_sample) / b_


@pytest.mark.parametrize("convention", ["authors_code", "paper"])
def test_vid_is_the_gaussians_negative_log_likelihood_in_value_and_gradient(convention: str) -> None:
    mean, t = _pair((B, C_T, H, H), (B, C_T, H, H))
    variance = (torch.rand(C_T, dtype=torch.float64) + 0.5).requires_grad_()
    value = vid_loss(LOGITS, TARGETS, [mean], [t], [variance], convention=convention)["vid"]
    expected = naive_vid(mean, t, variance, convention)
    assert float(value.detach()) == pytest.approx(float(expected.detach()), rel=1e-10)
    grads = torch.autograd.grad(value, [mean, variance])
    expected_grads = torch.autograd.grad(expected, [mean, variance])
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(grad, expected_grad)


def test_maps_of_other_resolutions_are_pooled_to_the_smaller_and_terms_add_over_pairs() -> None:
    s, t = _pair((B, C_S, 4, 4), (B, C_T, 2, 2))
    pooled = torch.stack([torch.stack([torch.stack([s[:, :, 2 * i:2 * i + 2, 2 * j:2 * j + 2].mean(dim=(2, 3))
                                                    for j in range(2)], -1) for i in range(2)], -2)]).squeeze(0)
    assert pooled.shape == (B, C_S, 2, 2)
    at = attention_transfer_loss(LOGITS, TARGETS, [s, s], [t, t])["at"]
    assert float(at) == pytest.approx(2 * float(naive_at(pooled, t, 2.0, "authors_code")), rel=1e-10)
    nst = nst_loss(LOGITS, TARGETS, [s], [t])["nst"]
    assert float(nst) == pytest.approx(float(naive_nst(pooled, t)), rel=1e-10)


def test_totals_weigh_each_part_and_a_zero_weight_leaves_its_layers_untouched() -> None:
    s, t = _pair((B, C_S, H, H), (B, C_T, H, H))
    logits = torch.randn(B, 3, dtype=torch.float64, requires_grad=True)
    out = attention_transfer_loss(logits, TARGETS, [s], [t], at_weight=7.0, ce_weight=0.5)
    torch.testing.assert_close(out["loss"], 0.5 * out["ce"] + 7.0 * out["at"])
    paper = attention_transfer_loss(logits, TARGETS, [s], [t], at_weight=7.0, ce_weight=0.5, convention="paper")
    torch.testing.assert_close(paper["loss"], 0.5 * paper["ce"] + 3.5 * paper["at"])
    rkd = rkd_loss(logits, TARGETS, [s], [t], distance_weight=2.0, angle_weight=3.0, ce_weight=0.0)
    torch.testing.assert_close(rkd["loss"], 2.0 * rkd["distance"] + 3.0 * rkd["angle"])
    rkd["loss"].backward()
    assert logits.grad is None  # the label term, weighted 0, is not in the graph: the logits' layers get nothing


def test_no_loss_sends_a_gradient_to_the_teacher() -> None:
    s = torch.rand(B, C_S, H, H, requires_grad=True)
    t = torch.rand(B, C_S, H, H, requires_grad=True)
    total = sum(loss(LOGITS.float(), TARGETS, [s], [t])["loss"] for loss in (
        attention_transfer_loss, similarity_preserving_loss, nst_loss, pkt_loss, rkd_loss, hint_loss))
    total.backward()
    assert t.grad is None and s.grad is not None and bool(s.grad.abs().sum() > 0)


# -- tasks ----------------------------------------------------------------------------------------------------------
def _cnn(widths: tuple[int, ...] = (8, 16)) -> SmallCNN:
    return SmallCNN(widths=widths, num_classes=10)


def test_each_task_taps_its_papers_layers_by_default() -> None:
    pairs = {cls.__name__: [(p.student_layer, p.teacher_layer) for p in cls(_cnn(), _cnn((16, 32))).feature_pairs()]
             for cls in (AttentionTransfer, NST, SimilarityPreserving, PKT, RKD, FitNets, CorrelationCongruence, VID)}
    assert pairs == {"AttentionTransfer": [("body.2", "body.2"), ("body.6", "body.6")],
                     "NST": [("body.2", "body.2"), ("body.6", "body.6")],
                     "SimilarityPreserving": [("body.6", "body.6")],
                     "PKT": [("penultimate", "penultimate")], "RKD": [("penultimate", "penultimate")],
                     "FitNets": [("body.6", "body.6")],  # stages[1]: here the second of two
                     "CorrelationCongruence": [("penultimate", "penultimate")],
                     "VID": [("body.2", "body.2"), ("body.6", "body.6")]}


@pytest.mark.parametrize(("make", "message"), [
    (lambda: AttentionTransfer(_cnn(), _cnn(), at_weight=-1.0), "at_weight must be finite and >= 0, got -1.0"),
    (lambda: AttentionTransfer(_cnn(), _cnn(), p=0.0), "p (the attention map's exponent) must be finite and > 0"),
    (lambda: AttentionTransfer(_cnn(), _cnn(), convention="code"), "unknown attention transfer convention 'code'"),
    (lambda: RKD(_cnn(), _cnn(), angle_weight=math.nan), "angle_weight must be finite and >= 0, got nan"),
    (lambda: SimilarityPreserving(_cnn(), _cnn(), sp_weight=math.inf), "sp_weight must be finite and >= 0"),
    (lambda: FitNets(_cnn(), _cnn(), convention="theano"), "unknown FitNets convention 'theano'"),
    (lambda: NST(_cnn(), _cnn(), student_layers="stages", teacher_layers="stages[0]"),
     "NST matches layer to layer, but student_layers names 2 (body.2, body.6) and teacher_layers 1 (body.2)"),
    (lambda: PKT(_cnn(), _cnn(), student_layers="stages[2]"), "'stages[2]': SmallCNN has 2 stages (body.2, body.6)"),
    (lambda: PKT(_cnn(), _cnn(), teacher_layers="bdy.6"), "SmallCNN has no layer 'bdy.6'; did you mean 'body.6'"),
])
def test_bad_settings_are_refused_in_one_line(make: Callable, message: str) -> None:
    with pytest.raises(Refusal, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        make()


def test_methods_on_maps_refuse_pooled_features_and_fitnets_refuses_a_smaller_guided_map() -> None:
    at = AttentionTransfer(MLP(hidden_sizes=(16,), num_classes=10), _cnn(), student_layers="penultimate",
                           teacher_layers="stages[-1]")
    with pytest.raises(Refusal, match=r"compares feature maps \(B, C, H, W\), got the student's \(16,\)"):
        at.build_projectors((1, 8, 8))
    with pytest.raises(Refusal, match="cannot regress the student's 2x2 maps onto the teacher's 8x8 hint"):
        hint_regressor((8, 2, 2), (16, 8, 8), batch_norm=True)
    assert isinstance(hint_regressor((8, 4, 4), (16, 8, 8), batch_norm=True)[0], torch.nn.ConvTranspose2d)


def test_rkd_refuses_an_epoch_whose_last_batch_holds_one_sample() -> None:
    data = DigitsDataModule(batch_size=64)
    data.setup("fit")
    size = len(data.train_set)
    odd = next(b for b in range(2, size) if size % b == 1)
    trainer = cpu_trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=0)
    with pytest.raises(Refusal, match=r"needs at least 2 samples a batch, but the last training batch .* holds 1"):
        trainer.fit(RKD(_cnn(), _cnn()), datamodule=DigitsDataModule(batch_size=odd))


@pytest.mark.parametrize("task", [AttentionTransfer, NST, SimilarityPreserving, PKT, RKD, FitNets,
                                  CorrelationCongruence, VID])
def test_each_task_lowers_its_own_term_on_digits(task: type) -> None:
    """With the labels switched off, 26 steps of the method alone bring the student's features closer to the
    teacher's by the method's own measure (the first five steps' mean against the last five's)."""
    torch.manual_seed(0)
    # VID's term starts at 0.5 log(sigma^2) per element: from unit variance the fit of the means is what moves it
    extra = {"initial_variance": 1.0} if task is VID else {}
    module = task(_cnn(), _cnn((16, 32)), ce_weight=0.0, lr_scheduler="none", **extra)
    term = {"AttentionTransfer": "at", "NST": "nst", "SimilarityPreserving": "sp", "PKT": "pkt", "FitNets": "hint",
            "RKD": "distance", "CorrelationCongruence": "cc", "VID": "vid"}[task.__name__]
    seen = record_term(module, term)
    trainer = cpu_trainer(max_epochs=2, limit_train_batches=13, limit_val_batches=0)
    trainer.fit(module, datamodule=DigitsDataModule(batch_size=32))
    assert len(seen) == 26
    assert sum(seen[-5:]) / 5 < 0.8 * sum(seen[:5]) / 5, seen


def test_fitnets_regressor_is_trained_saved_and_rebuilt_and_its_two_stages_chain(tmp_path) -> None:
    torch.manual_seed(0)
    stage_1 = FitNets(_cnn(), _cnn((16, 32)), student_layers="stages[0]", teacher_layers="stages[1]",
                      ce_weight=0.0, hint_weight=1.0, convention="paper", lr_scheduler="none")
    after_guided = {name: p.detach().clone() for name, p in stage_1.student.named_parameters()
                    if name.startswith(("body.4", "body.5", "fc"))}
    trainer = cpu_trainer(max_epochs=1, limit_train_batches=3, limit_val_batches=0, enable_checkpointing=True,
                          default_root_dir=tmp_path)
    trainer.fit(stage_1, datamodule=DigitsDataModule(batch_size=32))
    regressor = stage_1.projectors[0]
    assert [type(layer).__name__ for layer in regressor] == ["Conv2d", "ReLU"]  # paper: no BatchNorm
    assert regressor[0].stride == (2, 2)  # the guided 8x8 maps onto the 4x4 hint
    # hints alone: the layers after the guided one are left exactly as they were
    assert len(after_guided) == 5
    assert all(torch.equal(p, after_guided[name]) for name, p in stage_1.student.named_parameters()
               if name in after_guided)
    assert not torch.equal(stage_1.student.body[0].weight, torch.zeros(1))  # and the guided layers did learn
    path = tmp_path / "stage1.ckpt"
    trainer.save_checkpoint(path)
    reloaded = FitNets.load_from_checkpoint(path, student=_cnn(), teacher=_cnn((16, 32)))
    torch.testing.assert_close(reloaded.projectors[0][0].weight, regressor[0].weight)
    # the second stage starts from the first stage's student, without its regressor
    stage_2 = VanillaKD(_cnn(), _cnn((16, 32)), student_ckpt=str(path))
    for (name, p), q in zip(stage_2.student.state_dict().items(), stage_1.student.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    assert torch.equal(load_network(path, _cnn())(torch.ones(1, 1, 8, 8)), stage_1.student(torch.ones(1, 1, 8, 8)))


def test_run_names_carry_the_main_values() -> None:
    assert AttentionTransfer.run_variant({}) == "at1000-p2"
    assert AttentionTransfer.run_variant({"convention": "paper", "at_weight": 2.0}) == "at2-p2-paper"
    assert FitNets.run_variant({"ce_weight": 0.0, "convention": "paper"}) == "hint100-paper-hints-only"
    assert RKD.run_variant({}) == "dist25-angle50" and PKT.run_variant({}) == "pkt30000"
    assert SimilarityPreserving.run_variant({}) == "sp3000" and NST.run_variant({}) == "nst50"


# the published tables' teacher -> student pairs (issue 25)
BENCHMARK_PAIRS = [("resnet32x4", "resnet8x4"), ("resnet56", "resnet20"), ("wrn_40_2", "wrn_16_2"), ("vgg13", "vgg8"),
                   ("resnet32x4", "shufflenetv2")]


@pytest.mark.parametrize(("teacher", "student"), BENCHMARK_PAIRS)
def test_every_feature_method_finds_its_layers_on_every_benchmark_pair_with_its_defaults(teacher: str,
                                                                                         student: str) -> None:
    from lightning_kd import CRD
    from lightning_kd.models import create_model

    torch.manual_seed(0)
    teacher_net, student_net = create_model(teacher, num_classes=100), create_model(student, num_classes=100)
    for method in (AttentionTransfer, NST, SimilarityPreserving, PKT, RKD, FitNets, CRD, CorrelationCongruence, VID):
        task = method(student_net, teacher_net)
        task.build_projectors((3, 32, 32))  # taps resolved, shapes checked, the regressor or embeddings sized
        pairs = task.feature_pairs()
        if method in (AttentionTransfer, NST, VID):  # stage with stage: as many stages on both sides
            assert len(pairs) == len(task.student.stage_names) == len(task.teacher.stage_names)
