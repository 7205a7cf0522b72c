"""Be Your Own Teacher: multi-exit networks, the self-distillation loss, the task, anytime inference."""

from __future__ import annotations

import copy
import functools
import io
import itertools
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from pytorch_lightning import Callback, seed_everything
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from lightning_kd import SelfDistillation
from lightning_kd.data import DigitsDataModule
from lightning_kd.losses import LabelSmoothing, self_distillation_loss, self_distillation_weights
from lightning_kd.losses.self_distillation import SELF_DISTILLATION_PRESETS
from lightning_kd.models import (
    MLP,
    EarlyExitNetwork,
    MultiExitNetwork,
    SmallCNN,
    TruncatedNetwork,
    create_model,
    early_exit_sweep,
)
from lightning_kd.models.early_exit import exit_confidences, first_confident_exit
from tests.helpers import cpu_trainer

BACKBONES = {
    "small_cnn": (lambda: SmallCNN(widths=(8, 16, 32), num_classes=10), (1, 28, 28)),
    "mlp": (lambda: MLP(input_shape=(1, 8, 8), hidden_sizes=(32, 16, 12), num_classes=10), (1, 8, 8)),
    "resnet20": (lambda: create_model("resnet20", num_classes=10), (3, 32, 32)),
    "tv_resnet18": (lambda: create_model("tv_resnet18", num_classes=10, in_channels=3), (3, 32, 32)),
    "timm_resnet18": (lambda: create_model("timm_resnet18", num_classes=10, in_channels=3), (3, 32, 32)),
}


def _multi_exit(name: str) -> tuple[nn.Module, MultiExitNetwork, tuple[int, ...]]:
    build, shape = BACKBONES[name]
    torch.manual_seed(0)
    backbone = build()
    return backbone, MultiExitNetwork(copy.deepcopy(backbone), input_shape=shape), shape


# -- the loss -----------------------------------------------------------------------------------------
def _naive_loss(logits: list[torch.Tensor], y: torch.Tensor, hints: list[torch.Tensor], deep: torch.Tensor,
                preset: str) -> torch.Tensor:
    """The BYOT loss written out sample by sample from the formulas of the docs."""
    w = self_distillation_weights(preset)
    T, batch = w.temperature, len(y)
    total = torch.zeros((), dtype=torch.float64)
    teacher = logits[-1].double()
    for b in range(batch):
        total += -torch.log_softmax(teacher[b], 0)[y[b]] / batch * ((1 - w.alpha) if w.deepest_ce_scaled else 1)
    for number, (z, hint) in enumerate(zip(logits[:-1], hints, strict=True), start=1):
        hinted = not (w.skip_hint_below_deepest and number == len(logits) - 1)
        z = z.double()
        for b in range(batch):
            p_t = torch.softmax(teacher[b] / T, 0)
            log_q = torch.log_softmax(z[b] / T, 0)
            ce = -torch.log_softmax(z[b], 0)[y[b]]
            if w.soft_term == "kl":
                soft = sum(p_t[c] * (torch.log(p_t[c]) - log_q[c]) for c in range(len(p_t)))
            else:
                soft = -sum(p_t[c] * log_q[c] for c in range(len(p_t)))
            total += ((1 - w.alpha) * ce + w.alpha * soft * (T**2 if w.soft_t_squared else 1)) / batch
            if w.hint_distance == "squared" and hinted:
                total += w.feature_weight * sum((hint[b, d].double() - deep[b, d].double()) ** 2
                                                for d in range(hint.shape[1])) / batch
            if w.hint_distance == "masked_sum" and hinted:  # where either feature is positive
                total += w.feature_weight * sum((hint[b, d].double() - deep[b, d].double()) ** 2
                                                for d in range(hint.shape[1]) if hint[b, d] > 0 or deep[b, d] > 0)
        if w.hint_distance == "norm" and hinted:
            total += w.feature_weight * torch.sqrt(((hint.double() - deep.double()) ** 2).sum())
    return total


@pytest.mark.parametrize("preset", ["paper", "reproduction", "journal_code"])
def test_loss_matches_the_formula_written_sample_by_sample(preset: str) -> None:
    torch.manual_seed(0)
    logits = [torch.randn(5, 7) * 3 for _ in range(4)]
    hints = [torch.randn(5, 6) for _ in range(3)]  # signed: the reproduction's mask matters
    deep, y = torch.randn(5, 6), torch.randint(0, 7, (5,))
    weights = self_distillation_weights(preset, feature_weight=0.5)  # a hint large enough to count
    out = self_distillation_loss(logits, y, hints, deep, weights)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(SELF_DISTILLATION_PRESETS, preset, weights)
        assert torch.allclose(out["loss"].double(), _naive_loss(logits, y, hints, deep, preset), rtol=1e-5)
    # the journal code has no hint for the exit just below the deepest
    hinted = (1, 2) if preset == "journal_code" else (1, 2, 3)
    assert set(out) == {"loss", "exit_4/ce", *(f"exit_{i}/{p}" for i in (1, 2, 3) for p in ("ce", "soft")),
                        *(f"exit_{i}/hint" for i in hinted)}


def test_the_presets_differ_in_value_but_their_soft_terms_not_in_gradient() -> None:
    torch.manual_seed(0)
    student, teacher, y = torch.randn(6, 5, requires_grad=True), torch.randn(6, 5), torch.randint(0, 5, (6,))
    grads, values = [], []
    for preset in ("paper", "journal_code"):
        weights = self_distillation_weights(preset, alpha=1.0, feature_weight=0.0)
        soft = self_distillation_loss([student, teacher], y, weights=weights)["exit_1/soft"]
        values.append(float(soft.detach()))
        grads.append(torch.autograd.grad(soft, student)[0])
    assert values[1] > values[0] + 0.1  # soft CE = KL + the teacher's entropy
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_gradients_reach_the_shallow_exits_not_the_deepest_exits_targets() -> None:
    torch.manual_seed(0)
    shallow, deepest = torch.randn(4, 5, requires_grad=True), torch.randn(4, 5, requires_grad=True)
    hint, deep_features = torch.randn(4, 3, requires_grad=True), torch.randn(4, 3, requires_grad=True)
    y = torch.randint(0, 5, (4,))
    out = self_distillation_loss([shallow, deepest], y, [hint], deep_features, self_distillation_weights(
        "paper", feature_weight=1.0))
    out["loss"].backward()
    # the deepest exit learns from its labels only: its gradient is that of its own cross-entropy
    expected = torch.autograd.grad(F.cross_entropy(deepest, y), deepest)[0]
    assert torch.allclose(deepest.grad, expected) and deep_features.grad is None
    assert shallow.grad.abs().sum() > 0 and hint.grad.abs().sum() > 0


def test_label_smoothing_reaches_every_exit() -> None:
    torch.manual_seed(0)
    logits, y = [torch.randn(4, 5), torch.randn(4, 5)], torch.randint(0, 5, (4,))
    out = self_distillation_loss(logits, y, weights=self_distillation_weights(feature_weight=0.0),
                                 label_smoothing=LabelSmoothing(0.2))
    for number, z in enumerate(logits, start=1):
        assert torch.isclose(out[f"exit_{number}/ce"], F.cross_entropy(z, y, label_smoothing=0.2))


@pytest.mark.parametrize(("override", "message"), [
    ({"preset": "conference"},
     "unknown self-distillation preset 'conference'; choose one of paper, reproduction, journal_code"),
    ({"alpha": 1.5}, r"alpha must be in \[0, 1\], got 1.5"),
    ({"temperature": 0.0}, "temperature must be finite and > 0, got 0.0"),
    ({"feature_weight": -1.0}, "feature_weight must be finite and >= 0, got -1.0"),
    ({"early_exit_thresholds": []}, "early_exit_thresholds must be a non-empty list"),
])
def test_bad_hyperparameters_are_refused_naming_them(override: dict, message: str) -> None:
    net = MultiExitNetwork(SmallCNN(widths=(8, 16)), input_shape=(1, 8, 8))
    with pytest.raises(ValueError, match=message):
        SelfDistillation(net, **override)


# -- the network ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(BACKBONES))
def test_attaching_exits_leaves_the_backbone_and_its_output_bit_identical(name: str) -> None:
    backbone, net, shape = _multi_exit(name)
    assert all(torch.equal(a, b) for a, b in zip(backbone.state_dict().values(), net.backbone.state_dict().values(),
                                                 strict=True))  # sizing the exits ran the backbone without a trace
    x = torch.randn(3, *shape)
    backbone.eval(), net.eval()
    assert torch.equal(net(x), backbone(x))
    assert torch.equal(net.forward_exits(x).logits[-1], backbone(x))
    assert len(net.forward_exits(x).logits) == net.num_exits >= 3


@pytest.mark.parametrize("name", list(BACKBONES))
def test_a_truncated_export_gives_exactly_its_exits_logits_and_costs_what_the_exit_reports(name: str) -> None:
    _, net, shape = _multi_exit(name)
    net.eval()
    x = torch.randn(3, *shape)
    exits = net.forward_exits(x).logits
    costs = net.exit_costs()
    for number in range(1, net.num_exits + 1):
        cut = net.truncated(number)
        assert type(cut) in (TruncatedNetwork, type(net.backbone))
        assert torch.equal(cut(x), exits[number - 1])
        with FlopCounterMode(display=False) as counter:
            cut(x[:1])
        assert counter.get_total_flops() // 2 == costs[number - 1].macs
        assert sum(p.numel() for p in cut.parameters()) == costs[number - 1].parameters
    buffer = io.BytesIO()  # a plain module: saved and loaded whole
    first = net.truncated(1)
    # torch 2.11 cannot pickle a graph module whose nodes are typed by strings (postponed annotations): none left
    assert not any(isinstance(node.type, str) for node in first.extractor.graph.nodes)
    torch.save(first, buffer)
    buffer.seek(0)
    assert torch.equal(torch.load(buffer, weights_only=False)(x), exits[0])


def test_costs_grow_with_depth_and_the_ensemble_runs_every_head() -> None:
    _, net, _ = _multi_exit("resnet20")
    costs = net.exit_costs()
    assert [c.exit for c in costs] == [1, 2, 3]
    assert all(a.macs < b.macs for a, b in itertools.pairwise(costs))
    parameters, macs = net.ensemble_cost()
    assert macs > costs[-1].macs and parameters == sum(p.numel() for p in (*net.backbone.parameters(),
                                                                            *net.exits.parameters()))


def test_an_unknown_stage_is_refused_listing_the_available_ones() -> None:
    with pytest.raises(ValueError, match=r"cannot attach an exit to 'stages.5': CifarResNet has no such layer; its "
                                         r"stages are stages.0, stages.1, stages.2 \(any path of "
                                         r"backbone.named_modules\(\) works\); did you mean 'stages.2'"):
        MultiExitNetwork(create_model("resnet20", num_classes=10), exits=["stages.5"], input_shape=(3, 32, 32))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"exits": ["stages.1", "stages.0"]}, "exits must be listed shallowest first"),
    ({"input_shape": None}, "MultiExitNetwork needs input_shape"),
    ({"input_shape": (1, 32, 32)}, r"the backbone \(CifarResNet\) fails on inputs of shape \(1, 32, 32\)"),
    ({"bottleneck_ratio": 0}, "bottleneck_ratio must be >= 1, got 0"),
])
def test_bad_exit_settings_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MultiExitNetwork(create_model("resnet20", num_classes=10), **({"input_shape": (3, 32, 32)} | kwargs))


def test_a_plain_backbone_takes_exits_by_module_path() -> None:
    backbone = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 8, 3, padding=1),
                             nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))
    with pytest.raises(ValueError, match="does not name its stages: give the exits as module paths"):
        MultiExitNetwork(backbone, input_shape=(1, 8, 8))
    net = MultiExitNetwork(backbone, exits=["1"], input_shape=(1, 8, 8)).eval()
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(net(x), backbone.eval()(x)) and net.num_exits == 2
    assert torch.equal(net.truncated(1)(x), net.forward_exits(x).logits[0])


# -- early exit -----------------------------------------------------------------------------------------
def test_early_exit_stops_at_exit_1_at_threshold_0_and_runs_to_the_end_above_1() -> None:
    _, net, shape = _multi_exit("small_cnn")
    net.eval()
    x = torch.randn(16, *shape)
    exits = net.forward_exits(x).logits
    confidences, _predictions = exit_confidences(exits)
    assert first_confident_exit(confidences, 0.0).tolist() == [0] * 16
    assert first_confident_exit(confidences, 1.01).tolist() == [net.num_exits - 1] * 16
    logits, taken = EarlyExitNetwork(net, threshold=0.0).predict(x)
    assert taken.tolist() == [1] * 16 and torch.equal(logits, exits[0])
    logits, taken = EarlyExitNetwork(net, threshold=1.01).predict(x)
    assert taken.tolist() == [net.num_exits] * 16 and torch.equal(logits, exits[-1])


def test_early_exit_at_threshold_0_never_runs_the_later_layers() -> None:
    _, net, shape = _multi_exit("resnet20")
    early = EarlyExitNetwork(net, threshold=0.0).eval()
    ran = []
    early.network.backbone.stages[1].register_forward_pre_hook(lambda *_: ran.append(True))
    early(torch.randn(2, *shape))
    assert not ran


def test_the_early_exit_network_answers_what_the_sweep_scores() -> None:
    _, net, shape = _multi_exit("small_cnn")
    net.eval()
    torch.manual_seed(1)
    x, y = torch.randn(64, *shape), torch.randint(0, 10, (64,))
    confidences, predictions = exit_confidences(net.forward_exits(x).logits)
    threshold = float(confidences[:, 0].median())  # half the samples stop at exit 1
    logits, taken = EarlyExitNetwork(net, threshold).predict(x)
    (result,) = early_exit_sweep(confidences, predictions, y, [c.macs for c in net.exit_costs()], [threshold])
    chosen = first_confident_exit(confidences, threshold)
    assert torch.equal(taken - 1, chosen) and 0 < (chosen == 0).sum() < 64
    assert result.accuracy == pytest.approx(float((logits.argmax(1) == y).float().mean()))
    macs = torch.tensor([float(c.macs) for c in net.exit_costs()])
    assert result.mean_macs == pytest.approx(float(macs[chosen].mean()))
    assert sum(result.exit_fractions) == pytest.approx(1.0)


# -- the task -------------------------------------------------------------------------------------------
def test_exits_and_adapters_are_optimised_and_adapters_frozen_without_a_hint() -> None:
    net = MultiExitNetwork(SmallCNN(widths=(8, 16, 32)), input_shape=(1, 8, 8))
    optimised = {id(p) for group in SelfDistillation(net, lr_scheduler="none").configure_optimizers().param_groups
                 for p in group["params"]}
    assert {id(p) for p in net.parameters()} == optimised  # backbone, exits and adapters
    task = SelfDistillation(copy.deepcopy(net), feature_weight=0.0, lr_scheduler="none")
    optimised = {id(p) for group in task.configure_optimizers().param_groups for p in group["params"]}
    assert {id(p) for p in task.net.adapters.parameters()}.isdisjoint(optimised)
    assert {id(p) for p in task.net.exits.parameters()} <= optimised


def test_a_backbone_without_exits_is_refused_saying_how_to_wrap_it() -> None:
    with pytest.raises(ValueError, match="SelfDistillation needs a MultiExitNetwork as `net`, got SmallCNN: wrap"):
        SelfDistillation(SmallCNN())


def test_training_improves_every_exit_and_the_test_reports_the_sweep(tmp_path: Path) -> None:
    seed_everything(0)
    task = SelfDistillation(MultiExitNetwork(SmallCNN(widths=(16, 32, 64)), input_shape=(1, 8, 8)),
                            early_exit_thresholds=[0.0, 0.9, 1.5])
    trainer = cpu_trainer(max_epochs=3, default_root_dir=tmp_path)
    data = DigitsDataModule(batch_size=32)
    trainer.fit(task, datamodule=data)
    logged = trainer.callback_metrics
    assert all(float(logged[f"val/exit_{i}/acc"]) > 0.6 for i in (1, 2, 3))  # chance: 0.1
    assert float(logged["val/exit_3/acc"]) == float(logged["val/acc"])
    assert "val/exits_ensemble_acc" in logged
    trainer.test(task, datamodule=data)
    logged = trainer.callback_metrics
    first, middle, last = task.early_exit_results
    assert first.exit_fractions[0] == 1.0 and first.accuracy == pytest.approx(float(logged["test/exit_1/acc"]))
    assert last.exit_fractions[-1] == 1.0 and last.accuracy == pytest.approx(float(logged["test/acc"]))
    costs = task.net.exit_costs()
    assert first.mean_macs == costs[0].macs and last.mean_macs == costs[-1].macs
    assert costs[0].macs <= middle.mean_macs <= costs[-1].macs


class ExitReport(Callback):
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def on_fit_end(self, trainer, pl_module) -> None:
        report = {"net": [float(p.double().sum()) for p in pl_module.net.parameters()],
                  "metrics": {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}}
        (self.folder / f"rank{trainer.global_rank}.json").write_text(json.dumps(report))


def _under_ddp(folder: Path, preset: str) -> None:
    seed_everything(0)
    task = SelfDistillation(MultiExitNetwork(SmallCNN(widths=(8, 16, 32)), input_shape=(1, 8, 8)), preset=preset)
    trainer = cpu_trainer(devices=2, strategy="ddp", max_epochs=2, callbacks=[ExitReport(folder)])
    trainer.fit(task, datamodule=DigitsDataModule(batch_size=32))  # every parameter used: no DDP error


@pytest.mark.parametrize("preset", [
    pytest.param(p, marks=pytest.mark.ddp(scenario=functools.partial(_under_ddp, preset=p)))
    for p in ("paper", "journal_code")])
def test_under_ddp_it_trains_and_ranks_agree(ddp_run: Path, preset: str) -> None:
    tmp_path = ddp_run
    rank0, rank1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert rank0["net"] == rank1["net"] and rank0["metrics"] == rank1["metrics"]
    assert rank0["metrics"]["val/exit_1/acc"] > 0.3  # chance: 0.1


def test_wandb_gets_the_exits_table_the_plot_and_the_sweep_through_the_cli(in_tmp: Path) -> None:
    import wandb

    from lightning_kd.cli import KDLightningCLI
    from tests.conftest import CONFIGS

    tiny = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
            "--trainer.limit_test_batches", "2", "--trainer.enable_progress_bar", "false"]
    config = str(CONFIGS / "mnist5k_byot.yaml")
    try:
        fit = KDLightningCLI(args=["fit", "--config", config, *tiny])
        summary = dict(fit.trainer.logger.experiment.summary)
        wandb.finish()
        test = KDLightningCLI(args=["test", "--config", config, *tiny, "--ckpt_path",
                                    "checkpoints/mnist5k_byot/latest/byot.ckpt"])
        test_summary = dict(test.trainer.logger.experiment.summary)
    finally:
        wandb.finish()
    assert summary["exits/val"]["_type"] == "table-file" and summary["exits/val"]["nrows"] == 4  # 3 exits, ensemble
    assert "exits/val/accuracy_vs_compute_table" in summary  # the plot's data, as W&B stores a custom chart
    assert test_summary["early_exit/test"]["nrows"] == len(test.model.hparams.early_exit_thresholds)
    assert "early_exit/test/accuracy_vs_compute_table" in test_summary
