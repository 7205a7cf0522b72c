"""Distribution-matching KD: every distance against an independent reference, the loss, the task, DDP."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import ot
import pytest
import torch
from pytorch_lightning import Callback, seed_everything
from scipy.linalg import sqrtm
from scipy.optimize import linear_sum_assignment

from lightning_kd import DistributionMatchingKD
from lightning_kd.data import DigitsDataModule
from lightning_kd.errors import Refusal
from lightning_kd.losses import (
    DISTANCES,
    FeatureMatch,
    class_conditional_distance,
    distribution_matching_loss,
    feature_distance,
    mmd,
    sinkhorn,
    wasserstein_exact,
)
from lightning_kd.models import MLP, SmallCNN
from tests.helpers import cpu_trainer


def _batches(n: int = 12, m: int = 12, d: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    student = torch.randn(n, d, generator=generator, dtype=torch.float64)
    teacher = 1.5 * torch.randn(m, d, generator=generator, dtype=torch.float64) + 0.5
    return student, teacher


def _with_moments(mean: torch.Tensor, covariance: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """``n`` samples whose sample mean and unbiased covariance are exactly ``mean`` and ``covariance``."""
    x = torch.randn(n, len(mean), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x = x - x.mean(0)
    whitening = torch.linalg.inv(torch.linalg.cholesky(x.T @ x / (n - 1)))
    return x @ whitening.T @ torch.linalg.cholesky(covariance).T + mean


# -- MMD ----------------------------------------------------------------------------------------------
def test_linear_mmd_is_the_squared_difference_of_the_means() -> None:
    student, teacher = _batches(n=9, m=7)
    expected = (student.mean(0) - teacher.mean(0)).pow(2).sum()
    assert torch.allclose(feature_distance("mmd_linear", student, teacher), expected)


@pytest.mark.parametrize("bandwidth", [0.7, "median", "mean", [0.5, 2.0]])
def test_unbiased_rbf_mmd_equals_a_naive_double_loop(bandwidth) -> None:
    student, teacher = _batches(n=6, m=5)
    pooled = torch.cat([student, teacher])
    pairwise = [float((pooled[i] - pooled[j]).norm()) for i in range(len(pooled)) for j in range(len(pooled)) if i != j]
    if isinstance(bandwidth, str):
        sigmas = [float(np.median(pairwise) if bandwidth == "median" else np.mean(pairwise))]
    else:
        sigmas = bandwidth if isinstance(bandwidth, list) else [bandwidth]

    def k(a: torch.Tensor, b: torch.Tensor) -> float:
        return sum(math.exp(-float((a - b).pow(2).sum()) / (2 * s**2)) for s in sigmas)

    n, m = len(student), len(teacher)
    xx = sum(k(student[i], student[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(teacher[i], teacher[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(student[i], teacher[j]) for i in range(n) for j in range(m)) / (n * m)
    value = feature_distance("mmd_rbf", student, teacher, estimator="unbiased", bandwidth=bandwidth)
    assert float(value) == pytest.approx(xx + yy - 2 * xy, rel=1e-9)


def test_polynomial_mmd_equals_its_kernel_means() -> None:
    student, teacher = _batches(n=5, m=4)

    def k(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a @ b.T / student.shape[1] + 1.0) ** 2

    expected = k(student, student).mean() + k(teacher, teacher).mean() - 2 * k(student, teacher).mean()
    assert torch.allclose(mmd(student, teacher, "polynomial"), expected)


# -- optimal transport -----------------------------------------------------------------------------------
def test_exact_w2_of_equal_size_sets_is_the_assignment_cost() -> None:
    student, teacher = _batches(n=10, m=10)
    cost = ((student[:, None] - teacher[None]) ** 2).sum(-1).numpy()
    rows, columns = linear_sum_assignment(cost)
    assert float(wasserstein_exact(student, teacher)) == pytest.approx(cost[rows, columns].mean(), rel=1e-9)


def test_sinkhorn_tends_to_exact_ot_as_the_regularisation_shrinks() -> None:
    student, teacher = _batches(n=8, m=6)
    exact = float(wasserstein_exact(student, teacher))
    gaps = [float(sinkhorn(student, teacher, reg=reg, max_iterations=20000)) - exact for reg in (2.0, 0.5, 0.1, 0.02)]
    assert all(gap >= -1e-6 for gap in gaps)  # a plan with the right marginals never beats the optimum
    assert gaps == sorted(gaps, reverse=True) and gaps[-1] < 1e-3 * exact < gaps[0]


def test_sliced_wasserstein_is_pots_squared_and_exact_in_one_dimension() -> None:
    student, teacher = _batches(n=10, m=10, d=1)
    assert float(feature_distance("sliced_wasserstein", student, teacher, n_projections=5, seed=0)) == pytest.approx(
        float(wasserstein_exact(student, teacher)), rel=1e-9)  # every projection of a line is the line


def test_gromov_wasserstein_compares_across_widths_and_ignores_rotations() -> None:
    student, _ = _batches(n=8, d=3)
    rotation = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64))[0]
    padded = torch.cat([student @ rotation, torch.zeros(8, 2, dtype=torch.float64)], dim=1)  # width 5, same shape
    assert float(feature_distance("gromov_wasserstein", student, padded)) == pytest.approx(0.0, abs=1e-8)
    assert float(feature_distance("gromov_wasserstein", student, 2 * padded)) > 0.1


# -- Gaussians ----------------------------------------------------------------------------------------------
MEAN_S, MEAN_T = torch.tensor([0.0, 1.0, -1.0], dtype=torch.float64), torch.tensor([0.5, 0.0, 2.0], dtype=torch.float64)
COV_S = torch.tensor([[2.0, 0.3, 0.0], [0.3, 1.0, 0.2], [0.0, 0.2, 0.5]], dtype=torch.float64)
COV_T = torch.tensor([[1.0, -0.4, 0.1], [-0.4, 3.0, 0.0], [0.1, 0.0, 0.8]], dtype=torch.float64)


def test_gaussian_w2_matches_the_closed_forms_for_known_gaussians() -> None:
    student, teacher = _with_moments(MEAN_S, COV_S, 50, 0), _with_moments(MEAN_T, COV_T, 40, 1)
    root_t = sqrtm(COV_T.numpy()).real
    bures = np.trace(COV_S.numpy() + COV_T.numpy() - 2 * sqrtm(root_t @ COV_S.numpy() @ root_t).real)
    expected = float((MEAN_S - MEAN_T).pow(2).sum()) + bures
    assert float(feature_distance("gaussian_w2_full", student, teacher, eps=0.0)) == pytest.approx(expected, rel=1e-8)
    pot = float(ot.gaussian.bures_wasserstein_distance(MEAN_S, MEAN_T, COV_S, COV_T)) ** 2
    assert expected == pytest.approx(pot, rel=1e-6)
    diagonal = float((MEAN_S - MEAN_T).pow(2).sum() + (COV_S.diagonal().sqrt() - COV_T.diagonal().sqrt()).pow(2).sum())
    assert float(feature_distance("gaussian_w2_diag", student, teacher, eps=0.0)) == pytest.approx(diagonal, rel=1e-8)


def test_gaussian_kl_matches_torch_distributions_for_known_gaussians() -> None:
    student, teacher = _with_moments(MEAN_S, COV_S, 50, 0), _with_moments(MEAN_T, COV_T, 40, 1)
    normal = torch.distributions.MultivariateNormal
    full = torch.distributions.kl_divergence(normal(MEAN_S, COV_S), normal(MEAN_T, COV_T))
    value = feature_distance("gaussian_kl_full", student, teacher, eps=0.0)
    assert float(value) == pytest.approx(float(full), rel=1e-8)
    diagonal = torch.distributions.kl_divergence(normal(MEAN_S, torch.diag(COV_S.diagonal())),
                                                 normal(MEAN_T, torch.diag(COV_T.diagonal())))
    value = feature_distance("gaussian_kl_diag", student, teacher, eps=0.0)
    assert float(value) == pytest.approx(float(diagonal), rel=1e-8)


def test_the_full_gaussian_w2_has_finite_gradients_when_the_batch_is_smaller_than_the_width() -> None:
    student = torch.randn(6, 20, dtype=torch.float64, requires_grad=True)
    feature_distance("gaussian_w2_full", student, torch.randn(6, 20, dtype=torch.float64)).backward()
    assert torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0


# -- every distance ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(DISTANCES))
def test_each_distance_is_zero_for_identical_batches_and_gives_gradients_to_the_student_only(name: str) -> None:
    student, teacher = _batches(n=10, m=10, d=3)
    identical = float(feature_distance(name, teacher, teacher))
    apart = float(feature_distance(name, student, teacher))
    floor = 1e-2 * apart if name == "sinkhorn" else 1e-6  # the entropic plan blurs: its floor is above 0
    assert abs(identical) <= floor and apart > floor
    student.requires_grad_(True)
    teacher.requires_grad_(True)
    feature_distance(name, student, teacher).backward()
    assert teacher.grad is None and torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0


def test_the_unbiased_mmd_floor_for_identical_batches_is_below_zero() -> None:
    x, _ = _batches(n=8)
    assert float(mmd(x, x, "rbf", "unbiased")) < 0 == float(mmd(x, x, "rbf", "biased"))


def test_class_conditional_distances_handle_missing_and_one_sided_classes() -> None:
    student, teacher = _batches(n=9, m=9, d=2)
    labels_s = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
    labels_t = torch.tensor([0, 0, 0, 1, 1, 1, 3, 3, 3])  # class 2 student only, class 3 teacher only
    total, classes = class_conditional_distance("wasserstein_exact", student, labels_s, teacher, labels_t)
    expected = sum(wasserstein_exact(student[labels_s == c], teacher[labels_t == c]) for c in (0, 1))
    assert classes == 2 and torch.allclose(total, expected)
    mean, _ = class_conditional_distance("wasserstein_exact", student, labels_s, teacher, labels_t, "mean")
    assert torch.allclose(mean, expected / 2)
    # the Gaussian distances need two samples of a class on each side: a class seen once is left out
    value, classes = class_conditional_distance("gaussian_w2_diag", student[:4], labels_s[:4], teacher[:4],
                                                labels_t[:4])
    assert classes == 1 and torch.allclose(value, feature_distance("gaussian_w2_diag", student[:3], teacher[:3]))
    student.requires_grad_(True)
    nothing, classes = class_conditional_distance("mmd_rbf", student, labels_s, teacher, labels_t + 10)
    nothing.backward()
    assert classes == 0 and float(nothing) == 0.0 and student.grad is not None  # no class in common: 0, no crash


@pytest.mark.parametrize(("call", "message"), [
    (lambda: feature_distance("mmd_rbf", torch.randn(4, 3), torch.randn(4, 5)),
     "student features of width 3 and teacher features of width 5 differ: give the pair a projector"),
    (lambda: feature_distance("wasserstain", torch.randn(4, 3), torch.randn(4, 3)), "unknown distance 'wasserstain'"),
    (lambda: feature_distance("sinkhorn", torch.randn(4, 3), torch.randn(4, 3), reg=0.0), "reg must be finite and > 0"),
    (lambda: feature_distance("gaussian_kl_full", torch.randn(1, 3), torch.randn(4, 3)), "at least 2 samples"),
    (lambda: feature_distance("mmd_rbf", torch.randn(4, 3, 2, 2), torch.randn(4, 3, 2, 2)), "pool or flatten"),
    (lambda: FeatureMatch(distance="mmd_rbf", options={"sigma": 1.0}), "takes no option 'sigma'"),
    (lambda: FeatureMatch(weight=-1.0), "weight must be finite and >= 0"),
])
def test_bad_input_is_refused_naming_the_problem(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


def test_the_loss_adds_each_weighted_distance_and_an_optional_logit_term() -> None:
    torch.manual_seed(0)
    zs, zt, y = torch.randn(8, 5), torch.randn(8, 5), torch.randint(0, 5, (8,))
    fs, ft = torch.randn(8, 3), torch.randn(8, 3)
    matches = [FeatureMatch("mmd_linear", weight=0.5), FeatureMatch("gaussian_w2_diag", weight=2.0,
                                                                    class_conditional="sum")]
    out = distribution_matching_loss(zs, y, [fs, fs], [ft, ft], matches, zt, kd_alpha=0.3, temperature=2.0)
    kl = torch.nn.functional.kl_div(torch.log_softmax(zs / 2, 1), torch.softmax(zt / 2, 1), reduction="batchmean") * 4
    per_class, _ = class_conditional_distance("gaussian_w2_diag", fs, y, ft, y)
    expected = (0.7 * torch.nn.functional.cross_entropy(zs, y) + 0.3 * kl
                + 0.5 * (fs.mean(0) - ft.mean(0)).pow(2).sum() + 2.0 * per_class)
    assert torch.allclose(out["loss"], expected, atol=1e-5)
    assert set(out) == {"loss", "ce", "kd", "match_1/mmd_linear", "match_2/gaussian_w2_diag_per_class"}


# -- the task ---------------------------------------------------------------------------------------------
def _task(**kwargs) -> DistributionMatchingKD:
    torch.manual_seed(0)
    return DistributionMatchingKD(MLP(hidden_sizes=(24,), num_classes=10), SmallCNN(widths=(8, 16), num_classes=10),
                                  **kwargs)


def test_projectors_are_sized_from_the_data_and_trained_with_the_student(tmp_path: Path) -> None:
    seed_everything(0)
    task = _task(matches=[{"distance": "mmd_rbf", "weight": 1.0},
                          {"distance": "gromov_wasserstein", "weight": 1e-3}])
    trainer = cpu_trainer(max_epochs=2, default_root_dir=tmp_path)
    trainer.fit(task, datamodule=DigitsDataModule(batch_size=32))
    assert isinstance(task.projectors[0], torch.nn.Linear) and task.projectors[0].weight.shape == (16, 24)
    assert isinstance(task.projectors[1], torch.nn.Identity)  # GW compares across widths
    optimised = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert {id(p) for p in task.projectors.parameters()} <= optimised
    logged = trainer.callback_metrics
    assert {"train/match_1/mmd_rbf_loss", "train/match_2/gromov_wasserstein_loss"} <= set(logged)
    assert float(logged["val/acc"]) > 0.7  # chance: 0.1
    checkpoint = tmp_path / "kd2m.ckpt"
    trainer.save_checkpoint(checkpoint)
    reloaded = DistributionMatchingKD.load_from_checkpoint(checkpoint, student=MLP(hidden_sizes=(24,), num_classes=10),
                                                           teacher=SmallCNN(widths=(8, 16), num_classes=10))
    assert torch.equal(reloaded.projectors[0].weight, task.projectors[0].weight)


def test_feature_maps_are_matched_through_a_1x1_convolution_by_module_path() -> None:
    torch.manual_seed(0)
    task = DistributionMatchingKD(SmallCNN(widths=(4, 8), num_classes=10), SmallCNN(widths=(8, 16), num_classes=10),
                                  matches=[{"student_layer": "body.2", "teacher_layer": "body.2", "pooling": "flatten",
                                            "distance": "mmd_linear"}])
    task.build_projectors((1, 8, 8))
    assert isinstance(task.projectors[0], torch.nn.Conv2d) and task.projectors[0].weight.shape == (8, 4, 1, 1)
    batch = {"input": torch.randn(6, 1, 8, 8), "target": torch.randint(0, 10, (6,)), "index": torch.arange(6)}
    losses, _ = task.training_losses(batch)
    losses["loss"].backward()
    assert task.projectors[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize(("match", "message"), [
    ({"projector": "none"}, r"match 1 \(wasserstein_exact\): the student's 'penultimate' has width 24 and the "
                            r"teacher's 'penultimate' width 16; set projector: auto or linear"),
    ({"student_layer": "body.0", "teacher_layer": "body.0", "pooling": "flatten"},
     r"pooled student features \(8,\) and teacher features \(512,\) differ"),
    ({"student_layer": "bdy.0"}, r"MLP has no layer 'bdy.0'; did you mean 'body.0'"),
])
def test_features_that_cannot_be_matched_are_refused_before_training(match: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _task(matches=[match]).build_projectors((1, 8, 8))


def test_a_misnamed_match_setting_is_refused() -> None:
    with pytest.raises(ValueError, match="a feature match has no setting 'wieght'"):
        _task(matches=[{"wieght": 1.0}])


class RankReport(Callback):
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def on_fit_end(self, trainer, pl_module) -> None:
        report = {"student": [float(p.double().sum()) for p in pl_module.student.parameters()],
                  "projector": [float(p.double().sum()) for p in pl_module.projectors.parameters()],
                  "metrics": {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}}
        (self.folder / f"rank{trainer.global_rank}.json").write_text(json.dumps(report))


def _under_ddp(folder: Path) -> None:
    seed_everything(0)
    task = _task(matches=[{"distance": "wasserstein_exact", "weight": 0.01},
                          {"distance": "gaussian_w2_diag", "weight": 0.01, "class_conditional": "mean"}])
    trainer = cpu_trainer(devices=2, strategy="ddp", max_epochs=2, callbacks=[RankReport(folder)])
    trainer.fit(task, datamodule=DigitsDataModule(batch_size=32))


@pytest.mark.ddp(scenario=_under_ddp)
def test_under_ddp_it_trains_and_ranks_agree(ddp_run: Path) -> None:
    tmp_path = ddp_run
    rank0, rank1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert rank0["student"] == rank1["student"] and rank0["projector"] == rank1["projector"]
    assert rank0["metrics"] == rank1["metrics"] and rank0["metrics"]["val/acc"] > 0.5  # chance: 0.1


@pytest.mark.parametrize(
    ("distance", "options", "message"),
    [  # issue 23: each switched the term off or inverted it without a word
        ("mmd_rbf", {"bandwidth": float("inf")}, "bandwidth must be finite and > 0, got inf"),
        ("mmd_rbf", {"bandwidth": [1.0, -2.0]}, "bandwidth must be finite and > 0, got -2.0"),
        ("sinkhorn", {"max_iterations": 0}, "max_iterations must be an integer >= 1, got 0"),
        ("sinkhorn", {"reg": float("nan")}, "the Sinkhorn regularisation reg must be finite and > 0, got nan"),
        ("mmd_polynomial", {"degree": -3}, "degree must be an integer >= 1, got -3"),
        ("mmd_polynomial", {"coef0": -1.0}, "coef0 must be finite and >= 0, got -1.0"),
        ("mmd_polynomial", {"gamma": 0.0}, "gamma must be finite and > 0, got 0.0"),
        ("sliced_wasserstein", {"n_projections": -5}, "n_projections must be an integer >= 1, got -5"),
        ("sliced_wasserstein", {"seed": -1}, "seed must be null or an integer >= 0, got -1"),
        ("gaussian_kl_diag", {"eps": -1e-3}, "eps must be finite and >= 0, got -0.001"),
    ],
)
def test_distance_options_that_disable_or_invert_a_term_are_refused_where_declared(distance: str, options: dict,
                                                                                  message: str) -> None:
    with pytest.raises(Refusal, match=re.escape(message)):
        DistributionMatchingKD(MLP(hidden_sizes=(16,)), SmallCNN((8, 16)),
                               matches=[{"distance": distance, "weight": 1.0, "options": options}])


def test_a_last_batch_too_small_for_the_distance_is_refused_before_training() -> None:
    data = DigitsDataModule(batch_size=2)
    data.setup()
    samples = len(data.train_set)
    batch_size = next(size for size in range(3, 200) if samples % size == 1)  # the last batch holds one sample
    task = DistributionMatchingKD(MLP(hidden_sizes=(16,)), SmallCNN((8, 16)),
                                  matches=[{"distance": "gaussian_w2_diag", "weight": 1.0}])
    with pytest.raises(Refusal, match=rf"match 1 \(gaussian_w2_diag\) needs at least 2 samples a batch, but the last "
                                      rf"training batch of each epoch holds 1 \({samples} samples per process in "
                                      rf"batches of {batch_size}\): choose a batch size that leaves at least 2, "
                                      rf"e\.g\. \d+"):
        cpu_trainer(max_steps=1).fit(task, datamodule=DigitsDataModule(batch_size=batch_size))


def test_a_match_of_every_stage_is_refused_naming_one_by_path() -> None:
    # issue 23: a bare KeyError: 'stages'
    with pytest.raises(Refusal, match="a feature match pairs one layer with one layer, but teacher_layer 'stages' "
                                      r"names every stage: give one by path \(e.g. stages.2\)"):
        DistributionMatchingKD(MLP(hidden_sizes=(16,)), SmallCNN((8, 16)),
                               matches=[{"distance": "mmd_rbf", "weight": 1.0, "teacher_layer": "stages"}])


# -- the KD^2M authors' code (eddardd/kddm, src/utils.py), written out here from its formulas -------------------
def _authors_mmd_rbf(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    xx, yy, xy = torch.cdist(x, x), torch.cdist(y, y), torch.cdist(x, y)
    sigma = torch.cat([xx.flatten(), yy.flatten(), xy.flatten()]).mean().detach()  # zeros of the diagonals in
    kernel = [torch.exp(-(d**2) / (2 * sigma**2)) for d in (xx, yy, xy)]
    return kernel[0].mean() + kernel[1].mean() - 2 * kernel[2].mean()


def _authors_gaussian(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x.mean(0), x.std(0, correction=0)  # biased, no eps


def test_the_authors_code_convention_equals_the_kd2m_code_on_identical_tensors() -> None:
    from lightning_kd.losses.distances import gaussian_kl_diag, gaussian_w2_diag, gromov_wasserstein, mmd_rbf

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(16, 5, dtype=torch.float64, generator=generator, requires_grad=True)
    y = 1.5 * torch.randn(12, 5, dtype=torch.float64, generator=generator) + 0.3
    (mu_x, sd_x), (mu_y, sd_y) = _authors_gaussian(x), _authors_gaussian(y)
    w2 = (mu_x - mu_y).pow(2).sum() + (sd_x - sd_y).pow(2).sum()
    kl = 0.5 * (((sd_x / (sd_y + 1e-9)) ** 2).sum() + (((mu_x - mu_y) / (sd_y + 1e-9)) ** 2).sum() - 5
                + 2 * torch.log(sd_y / (sd_x + 1e-9)).sum())
    for ours, theirs in ((mmd_rbf(x, y, convention="authors_code"), _authors_mmd_rbf(x, y)),
                         (gaussian_w2_diag(x, y, convention="authors_code"), w2),
                         (gaussian_kl_diag(x, y, convention="authors_code"), kl)):
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(torch.autograd.grad(ours, x, retain_graph=True)[0],
                                   torch.autograd.grad(theirs, x, retain_graph=True)[0])
    # and the paper's convention differs: unbiased variances with eps, the pooled off-diagonal bandwidth
    assert not torch.isclose(gaussian_w2_diag(x, y), w2) and not torch.isclose(mmd_rbf(x, y, bandwidth="mean"),
                                                                               _authors_mmd_rbf(x, y))
    z = torch.randn(16, 7, dtype=torch.float64, generator=generator)
    uniform = [torch.full((n,), 1 / n, dtype=torch.float64) for n in (16, 16)]
    euclidean = ot.gromov.gromov_wasserstein2(torch.cdist(x, x).detach(), torch.cdist(z, z), *uniform,
                                             loss_fun="square_loss")
    torch.testing.assert_close(gromov_wasserstein(x, z, convention="authors_code"), euclidean, rtol=1e-6, atol=1e-9)
    with pytest.raises(Refusal, match="takes the authors' bandwidth; drop the bandwidth option"):
        mmd_rbf(x, y, bandwidth="mean", convention="authors_code")
    with pytest.raises(Refusal, match="unknown convention 'authors'"):
        DistributionMatchingKD(MLP(hidden_sizes=(16,)), SmallCNN((8, 16)),
                               matches=[{"distance": "mmd_rbf", "options": {"convention": "authors"}}])


def test_a_float64_student_distils_in_float64() -> None:
    # issue 23: the teacher's features came as float32 and broke a float64 student's distances
    task = DistributionMatchingKD(MLP(hidden_sizes=(16,)).double(), SmallCNN((8, 16)).double(),
                                  matches=[{"distance": "gaussian_w2_diag", "weight": 1.0}])
    batch = {"input": torch.randn(8, 1, 8, 8, dtype=torch.float64), "target": torch.randint(0, 10, (8,)),
             "index": torch.arange(8)}
    task.build_projectors((1, 8, 8))
    losses, logits = task.training_losses(batch)
    assert logits.dtype == torch.float64 and all(value.dtype == torch.float64 for value in losses.values())
