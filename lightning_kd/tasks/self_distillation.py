"""Be Your Own Teacher (Zhang et al. 2019): one network whose deepest exit teaches its shallow exits.

The network is a :class:`~lightning_kd.models.MultiExitNetwork`: any backbone with exits attached to
its stages (or chosen layers). No separate teacher: the deepest exit (the backbone's own head) is
trained on the labels and is the target of the shallow exits (see
:mod:`lightning_kd.losses.self_distillation`). A checkpoint hands on the whole multi-exit network,
whose ``forward`` is the backbone's.

After training, each exit is a classifier of its own: the run reports every exit's accuracy beside
its cost, and the test reports early exit (anytime inference) over a sweep of confidence thresholds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from pytorch_lightning.cli import OptimizerCallable
from torch import Tensor, nn
from torchmetrics import CatMetric

from lightning_kd.compat import attached_trainer
from lightning_kd.data.base import Batch
from lightning_kd.errors import Refusal
from lightning_kd.losses import DEFAULT_SMOOTHING_CONVENTION, SmoothingConvention
from lightning_kd.losses.self_distillation import (
    SelfDistillationLoss,
    SelfDistillationPreset,
    self_distillation_weights,
)
from lightning_kd.metrics import EVALUATION_STAGES, accuracy, ensemble_probabilities, evaluation_metrics
from lightning_kd.models.early_exit import DEFAULT_THRESHOLDS, EarlyExitResult, early_exit_sweep, exit_confidences
from lightning_kd.models.multi_exit import MultiExitNetwork
from lightning_kd.naming import join_variants
from lightning_kd.optim import SGD, ScheduleSpec
from lightning_kd.reporting import Report, percent, publish
from lightning_kd.tasks.base import BaseTask


def exit_metric_name(stage: str, exit: int, metric: str = "acc") -> str:
    """Logged name of one exit's metric.

    Example:
        >>> exit_metric_name("val", 2), exit_metric_name("test", 1, "ece")
        ('val/exit_2/acc', 'test/exit_1/ece')
    """
    return f"{stage}/exit_{exit}/{metric}"


def exits_ensemble_metric_name(stage: str) -> str:
    """Logged name of the accuracy of the exits' ensemble (their averaged softmax).

    Example:
        >>> exits_ensemble_metric_name("val")
        'val/exits_ensemble_acc'
    """
    return f"{stage}/exits_ensemble_acc"


def _millions(macs: float) -> str:
    return f"{macs / 1e6:,.2f}M"


class SelfDistillation(BaseTask):
    """Train every exit of a multi-exit network, the deepest teaching the others (BYOT).

    ``preset`` names the weighting (:data:`~lightning_kd.losses.self_distillation.SELF_DISTILLATION_PRESETS`):
    ``"paper"`` (``alpha = 0.1``, ``T = 3``, ``lambda = 1e-6``, KL and squared feature distance),
    ``"reproduction"`` (that reproduction's code: the deepest CE weighted by ``1 - alpha``, ``T^2``, the hint
    summed over the batch) or ``"journal_code"`` (``0.7 CE + 0.3 soft CE`` at ``T = 3``, ``0.03`` times the L2
    distance, no hint for the exit below the deepest);
    ``alpha``, ``temperature`` and ``feature_weight`` override its numbers.

    Logged: ``train/loss`` and each exit's parts ``train/exit_<i>/{ce,soft,hint}_loss``; per exit
    ``{val,test}/exit_<i>/acc``, ``acc_top5`` and ``ece``; the exits' ensemble (averaged softmax)
    ``{val,test}/exits_ensemble_acc``; and, as for every task, ``{val,test}/acc`` etc. of the deepest
    exit (the backbone). At the end of fit and of test a table of every exit's accuracy, parameters and
    multiply-adds is printed and logged to W&B (``exits/<stage>``, with a plot of accuracy against
    compute); the test adds the early-exit sweep over ``early_exit_thresholds`` (``early_exit/test``,
    kept as :attr:`early_exit_results`).

    Args:
        net: The multi-exit network (:class:`~lightning_kd.models.MultiExitNetwork`).
        preset: ``"paper"`` (default), ``"reproduction"`` or ``"journal_code"``.
        alpha: Weight of the soft term on each shallow exit, in ``[0, 1]`` (default: the preset's).
        temperature: Softening of the deepest exit's target, ``> 0`` (default: the preset's).
        feature_weight: Weight ``lambda`` of the feature hint, ``>= 0`` (default: the preset's; 0 turns
            the hint off and freezes the adaptation layers).
        early_exit_thresholds: Confidence thresholds of the test's early-exit sweep.
        label_smoothing: Smoothing ``eps`` of every exit's label term, in ``[0, 1)``.
        smoothing_convention: ``"uniform"`` or ``"others"`` (see :class:`~lightning_kd.tasks.Classifier`).
        optimizer: See :class:`~lightning_kd.tasks.base.BaseTask`.
        lr_scheduler: See :class:`~lightning_kd.tasks.base.BaseTask`.

    Example:
        >>> from lightning_kd.models import MultiExitNetwork, SmallCNN
        >>> net = MultiExitNetwork(SmallCNN(widths=(8, 16, 32)), input_shape=(1, 28, 28))
        >>> task = SelfDistillation(net, preset="journal_code")
        >>> task.criterion
        SelfDistillationLoss(alpha=0.3, temperature=3.0, feature_weight=0.03, soft_term='soft_ce', \
hint_distance='norm', skip_hint_below_deepest=True)
    """

    handed_on = "net"

    def __init__(
        self,
        net: nn.Module,
        preset: SelfDistillationPreset = "paper",
        alpha: float | None = None,
        temperature: float | None = None,
        feature_weight: float | None = None,
        early_exit_thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
        label_smoothing: float = 0.0,
        smoothing_convention: SmoothingConvention = DEFAULT_SMOOTHING_CONVENTION,
        optimizer: OptimizerCallable = SGD,
        lr_scheduler: ScheduleSpec = "cosine",
    ) -> None:
        super().__init__(optimizer, lr_scheduler, net=net)
        self.early_exit_results: list[EarlyExitResult] = []

    def configure_losses(self) -> None:
        hparams = self.hparams
        weights = self_distillation_weights(hparams["preset"], hparams["alpha"], hparams["temperature"],
                                            hparams["feature_weight"])
        thresholds = list(hparams["early_exit_thresholds"])
        if not thresholds or not all(math.isfinite(t) for t in thresholds):
            raise Refusal(f"early_exit_thresholds must be a non-empty list of finite numbers, got {thresholds}")
        self.criterion = SelfDistillationLoss(weights, self.label_smoothing())

    def configure_models(self, net: nn.Module | None) -> None:  # type: ignore[override]
        if not isinstance(net, MultiExitNetwork):
            raise Refusal(
                f"SelfDistillation needs a MultiExitNetwork as `net`, got {type(net).__name__}: wrap the backbone, "
                "e.g. MultiExitNetwork(backbone, exits='stages', input_shape=(3, 32, 32)); in a config, "
                "net: {class_path: lightning_kd.models.MultiExitNetwork, init_args: {backbone: ...}}"
            )
        self.net = net
        if self.criterion.weights.feature_weight == 0:  # no hint: the adapters get no gradient (DDP refuses such)
            net.adapters.requires_grad_(False)
        elif self.criterion.weights.skip_hint_below_deepest and len(net.adapters):
            net.adapters[-1].requires_grad_(False)  # the journal code gives the exit below the deepest no hint

    def trained_networks(self) -> dict[str, nn.Module]:
        return {"net": self.net}

    # -- training ---------------------------------------------------------------------------------
    def training_losses(self, batch: Batch) -> tuple[dict[str, Tensor], Tensor]:
        out = self.net.forward_exits(batch["input"])
        return self.criterion(out.logits, batch["target"], out.hints, out.features[-1]), out.logits[-1]

    # -- evaluation -------------------------------------------------------------------------------
    def configure_metrics(self, num_classes: int) -> None:
        super().configure_metrics(num_classes)
        exits = range(1, self.net.num_exits + 1)
        self.exit_metrics = nn.ModuleDict({
            stage: nn.ModuleList(evaluation_metrics(num_classes, prefix=exit_metric_name(stage, i, "")) for i in exits)
            for stage in EVALUATION_STAGES})
        self.exits_ensemble_metrics = nn.ModuleDict({stage: accuracy(num_classes) for stage in EVALUATION_STAGES})
        # the test's outputs of every exit, for the early-exit sweep (gathered over DDP processes)
        self.test_confidences, self.test_predictions, self.test_targets = CatMetric(), CatMetric(), CatMetric()

    def evaluation_step(self, batch: Batch, stage: str) -> Tensor:
        out = self.net.forward_exits(batch["input"])
        target, batch_size = batch["target"], len(batch["target"])
        for logits, metrics in zip(out.logits, self.exit_metrics[stage], strict=True):
            metrics.update(logits, target)
            self.log_dict(metrics, batch_size=batch_size)
        ensemble = self.exits_ensemble_metrics[stage]
        ensemble(ensemble_probabilities([z.softmax(dim=1) for z in out.logits]), target)
        self.log(exits_ensemble_metric_name(stage), ensemble, batch_size=batch_size)
        if stage == "test":
            confidences, predictions = exit_confidences(out.logits)
            self.test_confidences.update(confidences)
            self.test_predictions.update(predictions.float())
            self.test_targets.update(target.float())
        self.log_evaluation(batch, out.logits[-1], stage)
        return out.logits[-1]

    def on_test_epoch_start(self) -> None:
        super().on_test_epoch_start()
        for collected in (self.test_confidences, self.test_predictions, self.test_targets):
            collected.reset()

    # -- reports ----------------------------------------------------------------------------------
    def on_fit_end(self) -> None:
        self._report_exits("val")

    def on_test_end(self) -> None:
        self._report_exits("test")
        self.early_exit_results = self._early_exit_sweep()
        self._report_early_exit(self.early_exit_results)

    def _report_exits(self, stage: str) -> None:
        """Every exit's accuracy beside its cost: printed, and to W&B as a table and a plot."""
        trainer = attached_trainer(self)
        if trainer is None:
            return
        logged = trainer.callback_metrics
        costs = self.net.exit_costs()
        full = costs[-1].macs or 1
        rows = [[str(cost.exit), cost.parameters, cost.macs, cost.macs / full,
                 float(logged[name]) if (name := exit_metric_name(stage, cost.exit)) in logged else None]
                for cost in costs]
        ensemble = logged.get(exits_ensemble_metric_name(stage))
        if ensemble is not None:  # every exit run: the backbone once, every head
            parameters, macs = self.net.ensemble_cost()
            rows.append(["ensemble", parameters, macs, macs / full, float(ensemble)])
        title = f"lightning-kd exits: {'validation (last epoch)' if stage == 'val' else 'test'}, in %"
        publish(trainer, Report(
            f"exits/{stage}", title, ["exit", "parameters", "multiply-adds", "share of full compute", "accuracy"], rows,
            console=[("exit", str), ("parameters", "{:,}".format), ("MACs", _millions), ("compute", percent),
                     ("accuracy", percent)],
            plot=(f"exits/{stage}/accuracy_vs_compute", "multiply-adds", "accuracy",
                  f"Accuracy of each exit against its compute ({stage})"),
            plot_rows=len(costs)))

    def _early_exit_sweep(self) -> list[EarlyExitResult]:
        if self.test_targets.update_count == 0:
            return []
        confidences = self.test_confidences.compute()
        predictions = self.test_predictions.compute().long()
        targets = self.test_targets.compute().long()
        macs = [cost.macs for cost in self.net.exit_costs()]
        return early_exit_sweep(confidences, predictions, targets, macs, list(self.hparams["early_exit_thresholds"]))

    def _report_early_exit(self, results: list[EarlyExitResult]) -> None:
        trainer = attached_trainer(self)
        if trainer is None or not results:
            return
        full = self.net.exit_costs()[-1].macs or 1
        exits = range(1, self.net.num_exits + 1)
        rows = [[r.threshold, r.accuracy, r.mean_macs, r.mean_macs / full, *r.exit_fractions] for r in results]
        publish(trainer, Report(
            "early_exit/test", "lightning-kd early exit on the test split, in %: stop at the first exit this confident",
            ["threshold", "accuracy", "mean multiply-adds", "share of full compute",
             *(f"stopped at exit {i}" for i in exits)], rows,
            console=[("threshold", "{:g}".format), ("accuracy", percent), ("MACs", _millions), ("compute", percent),
                     *((f"at exit {i}", percent) for i in exits)],
            plot=("early_exit/test/accuracy_vs_compute", "mean multiply-adds", "accuracy",
                  "Early exit: accuracy against mean compute (test)")))

    @classmethod
    def run_variant(cls, arguments: dict[str, Any]) -> str | None:
        weights = self_distillation_weights(arguments.get("preset", "paper"), arguments.get("alpha"),
                                            arguments.get("temperature"), arguments.get("feature_weight"))
        own = (f"{arguments.get('preset', 'paper')}-alpha{weights.alpha:g}-T{weights.temperature:g}"
               f"-lambda{weights.feature_weight:g}")
        return join_variants(own, super().run_variant(arguments))

