"""Deep Mutual Learning (Zhang et al. 2018): K peers trained together, each learning from the others.

No pre-trained teacher: every peer learns from the labels and from the other peers' predictions (see
:mod:`lightning_kd.losses.mutual`). Two update schemes:

* ``"simultaneous"``: one forward of every peer, each peer's targets (the others) detached, one
  backward of the summed losses, every peer stepped. One forward and one backward per peer and batch.
* ``"alternating"``: the paper's Algorithm 1. For ``k = 1..K``: predict with every peer (the ones
  already updated on this batch predict anew), compute ``L_k``, back-propagate into peer ``k`` only, step
  it. ``K`` forwards of every peer per batch (``K^2`` peer forwards, ``K - 1`` of them per peer without
  gradient) and ``K`` backwards; each peer's BatchNorm sees the batch ``K`` times. Later peers learn from
  targets already improved on the batch, which is where the two schemes differ.

Both run under DDP: the simultaneous scheme is one ordinary backward; the alternating one
back-propagates each peer without DDP's gradient sync and averages that peer's gradients over the
processes itself before its step.
"""

from __future__ import annotations

import copy
import itertools
import re
from collections.abc import Mapping
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
import torchmetrics
from pytorch_lightning.cli import OptimizerCallable
from torch import Tensor, nn

from lightning_kd.compat import attached_trainer
from lightning_kd.data.base import Batch
from lightning_kd.errors import Refusal
from lightning_kd.losses import DEFAULT_SMOOTHING_CONVENTION, SmoothingConvention, flatten_positions
from lightning_kd.losses.mutual import dml_loss, dml_peer_loss
from lightning_kd.losses.validation import check_choice, check_weight
from lightning_kd.metrics import EVALUATION_STAGES, accuracy, ensemble_probabilities, evaluation_metrics
from lightning_kd.models.ensemble import SoftmaxEnsemble
from lightning_kd.models.stacked import StackedForward
from lightning_kd.naming import join_variants
from lightning_kd.optim import SGD, ScheduleSpec
from lightning_kd.tasks.base import BaseTask
from lightning_kd.tasks.manual_optimization import PerNetworkOptimization

DMLScheme = Literal["simultaneous", "alternating"]
"""How the peers are updated on each batch (see the module)."""
DML_SCHEMES: tuple[str, ...] = get_args(DMLScheme)
DML_KEY = "deep_mutual_learning"
"""Checkpoint entry recording which peer the checkpoint hands on."""


def peer_role(index: int) -> str:
    """Role of the ``index``-th peer (0-based): ``peer_1``, ``peer_2``, ...

    Example:
        >>> [peer_role(i) for i in range(3)]
        ['peer_1', 'peer_2', 'peer_3']
    """
    return f"peer_{index + 1}"


class DeepMutualLearning(PerNetworkOptimization, BaseTask):
    """K >= 2 peers, each minimising ``CE(z_k, y) + 1/(K-1) sum_{l != k} KL(softmax(z_l) || softmax(z_k))``.

    Peers may have any architectures with the same class count. Each peer has its own optimizer and
    learning-rate schedule (built from ``optimizer`` and ``lr_scheduler``), or all share one
    (``shared_optimizer: true``).

    Logged: ``train/loss`` (the sum over peers), ``train/peer_<k>/ce_loss`` and ``train/peer_<k>/kl_loss``;
    per peer ``{val,test}/peer_<k>/acc``, ``acc_top5``, ``ece``; the peers' ensemble (averaged softmax)
    ``{val,test}/peers_ensemble_acc``; pairwise top-1 agreement ``{val,test}/agreement/peer_<k>-peer_<l>``;
    and, as for every task, ``{val,test}/acc``, ``acc_top5``, ``ece`` and ``loss`` of the handed-on peer
    (logged at the epoch's end, after a ``"best"`` peer is chosen). The run summary has a row per peer.

    Args:
        peers: The networks, a list of at least two.
        scheme: ``"simultaneous"`` (default) or ``"alternating"`` (the paper's algorithm).
        hand_on: The peer a checkpoint hands on as a teacher (``"peer_1"``, ``"peer_2"``, ...), or
            ``"best"``: the best peer on the latest validation.
        shared_optimizer: One optimizer (and schedule) over every peer instead of one per peer.
        batched: Run identical peers as one vectorised model in training (``vmap``; see
            :mod:`lightning_kd.models.stacked`); the simultaneous scheme only. Opt-in: on CPU it is
            1.2 to 2 times slower than the loop (``benchmarks/dml_batched.py``).
        label_smoothing: Smoothing ``eps`` of each peer's label term, in ``[0, 1)``.
        smoothing_convention: ``"uniform"`` or ``"others"`` (see :class:`~lightning_kd.tasks.Classifier`).
        optimizer: Optimizer class (see :class:`~lightning_kd.tasks.base.BaseTask`), one instance per peer.
        lr_scheduler: Schedule (see :class:`~lightning_kd.tasks.base.BaseTask`), one per optimizer.
        gradient_clip_val: Clip each optimizer's gradient norm to this before it steps (the trainer's
            ``gradient_clip_val`` does not apply to this task's manual optimisation; recurrent language models
            need it).

    Example:
        >>> from lightning_kd.models import MLP, SmallCNN
        >>> task = DeepMutualLearning([MLP(num_classes=10), SmallCNN(num_classes=10)], scheme="alternating")
        >>> list(task.networks()), task.handed_on
        (['peer_1', 'peer_2'], 'peer_1')
    """

    def __init__(
        self,
        peers: list[nn.Module],
        scheme: DMLScheme = "simultaneous",
        hand_on: str = "peer_1",
        shared_optimizer: bool = False,
        batched: bool = False,
        label_smoothing: float = 0.0,
        smoothing_convention: SmoothingConvention = DEFAULT_SMOOTHING_CONVENTION,
        optimizer: OptimizerCallable = SGD,
        lr_scheduler: ScheduleSpec = "cosine",
        gradient_clip_val: float | None = None,
    ) -> None:
        super().__init__(optimizer, lr_scheduler, peers=peers)
        self.automatic_optimization = False  # one optimizer per peer, stepped by this task (the escape hatch)

    def configure_losses(self) -> None:
        check_choice("mutual learning scheme", self.hparams["scheme"], DML_SCHEMES)
        if self.hparams.get("gradient_clip_val") is not None:
            check_weight(self.hparams["gradient_clip_val"], "gradient_clip_val")
        self.smoothing = self.label_smoothing()

    def configure_models(self, peers: list[nn.Module] | None) -> None:  # type: ignore[override]
        networks = list(peers) if isinstance(peers, (list, tuple)) else []
        if len(networks) < 2 or any(not isinstance(net, nn.Module) for net in networks):
            raise Refusal(f"DeepMutualLearning needs `peers`: a list of at least 2 networks, got "
                             f"{len(networks) if isinstance(peers, (list, tuple)) else type(peers).__name__}")
        self.peers = nn.ModuleList(networks)
        hand_on = self.hparams["hand_on"]
        roles = [peer_role(i) for i in range(len(networks))]
        if hand_on != "best" and hand_on not in roles:
            raise Refusal(f"hand_on must be one of {', '.join(roles)} or 'best', got {hand_on!r}")
        self.handed_on = "peer_1" if hand_on == "best" else hand_on
        self._stacked: StackedForward | None = None
        if self.hparams["batched"]:
            if self.hparams["scheme"] != "simultaneous":
                raise Refusal("batched: true runs all peers in one call, which only the 'simultaneous' scheme "
                                 "does; the 'alternating' scheme updates one peer at a time")
            self._stacked = StackedForward(list(self.peers))

    def trained_networks(self) -> dict[str, nn.Module]:
        return {peer_role(i): peer for i, peer in enumerate(self.peers)}

    def network_config(self, role: str) -> dict[str, Any] | None:
        configs = self.hparams.get("peers")
        match = re.fullmatch(r"peer_(\d+)", role)
        if isinstance(configs, list) and match and int(match.group(1)) <= len(configs):
            config = configs[int(match.group(1)) - 1]
            return dict(config) if isinstance(config, Mapping) and "class_path" in config else None
        return None

    def ensemble_network(self) -> SoftmaxEnsemble:
        """A copy of every peer as one plain network whose softmax is the peers' averaged softmax (eval mode)."""
        return SoftmaxEnsemble([copy.deepcopy(peer) for peer in self.peers]).eval()

    # -- training ---------------------------------------------------------------------------------
    def training_losses(self, batch: Batch) -> tuple[dict[str, Tensor], Tensor]:
        """Every peer's loss on the batch (no update): the simultaneous scheme's losses."""
        if self._stacked is not None:
            logits = list(self._stacked(batch["input"]).unbind(0))
        else:
            logits = [peer(batch["input"]) for peer in self.peers]
        return dml_loss(logits, batch["target"], self.smoothing), logits[self._handed_on_index()]

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        if self.hparams["scheme"] == "simultaneous":
            losses, logits = self.training_losses(batch)
            self.check_training_step(losses)
            self.step_all(losses["loss"])
        else:
            losses, logits = self._alternating_step(batch)
        self.log_training(batch, losses, logits)
        return losses["loss"].detach()

    def _alternating_step(self, batch: Batch) -> tuple[dict[str, Tensor], Tensor]:
        x, y = batch["input"], batch["target"]
        parts: dict[str, Tensor] = {}
        total = torch.zeros((), device=x.device)
        handed_on_logits = None
        for k, peer in enumerate(self.peers):
            with torch.no_grad():  # the others' predictions, after the updates made so far on this batch
                others = [other(x) if index != k else None for index, other in enumerate(self.peers)]
            logits = peer(x)
            out = dml_peer_loss([logits if z is None else z for z in others], k, y, self.smoothing)
            self.check_training_step(out, weights=k == 0)
            self.step_one(out["loss"], k)
            parts[f"{peer_role(k)}/ce"], parts[f"{peer_role(k)}/kl"] = out["ce"].detach(), out["kl"].detach()
            total = total + out["loss"].detach()
            if k == self._handed_on_index():
                handed_on_logits = logits.detach()
        assert handed_on_logits is not None
        return {"loss": total, **parts}, handed_on_logits

    def _handed_on_index(self) -> int:
        return int(self.handed_on.removeprefix("peer_")) - 1

    # -- evaluation -------------------------------------------------------------------------------
    def configure_metrics(self, num_classes: int) -> None:
        super().configure_metrics(num_classes)
        roles = [peer_role(i) for i in range(len(self.peers))]
        self.peer_metrics = nn.ModuleDict({
            stage: nn.ModuleDict({role: evaluation_metrics(num_classes, prefix=f"{stage}/{role}/", unit=self.token_unit)
                                  for role in roles})
            for stage in EVALUATION_STAGES})
        self.peer_losses = nn.ModuleDict({
            stage: nn.ModuleDict({role: torchmetrics.MeanMetric() for role in roles}) for stage in EVALUATION_STAGES})
        self.peers_ensemble_metrics = nn.ModuleDict({stage: accuracy(num_classes) for stage in EVALUATION_STAGES})
        self.agreement_metrics = nn.ModuleDict({
            stage: nn.ModuleDict({f"{a}-{b}": accuracy(num_classes) for a, b in itertools.combinations(roles, 2)})
            for stage in EVALUATION_STAGES})

    def evaluation_step(self, batch: Batch, stage: str) -> Tensor:
        outputs = [peer(batch["input"]) for peer in self.peers]
        # per token for sequences: the valid positions as samples
        all_logits = [flatten_positions(logits, batch["target"])[0] for logits in outputs]
        targets = flatten_positions(outputs[0], batch["target"])[1]
        batch_size = len(targets)
        for index, peer_logits in enumerate(all_logits):
            role = peer_role(index)
            self.peer_metrics[stage][role].update(peer_logits, targets)
            self.peer_losses[stage][role].update(F.cross_entropy(peer_logits, targets), batch_size)
        ensemble = self.peers_ensemble_metrics[stage]
        ensemble(ensemble_probabilities([z.softmax(dim=1) for z in all_logits]), targets)
        self.log(f"{stage}/peers_ensemble_acc", ensemble, batch_size=batch_size)
        for (a, za), (b, zb) in itertools.combinations(enumerate(all_logits), 2):
            name = f"{peer_role(a)}-{peer_role(b)}"
            metric = self.agreement_metrics[stage][name]
            metric(za, zb.argmax(dim=1))
            self.log(f"{stage}/agreement/{name}", metric, batch_size=batch_size)
        return outputs[self._handed_on_index()]

    def _log_peers(self, stage: str) -> None:
        """Log every peer's metrics, choose the best peer when asked, and log the handed-on peer's as ``{stage}/...``.

        At the epoch's end, so that ``{stage}/acc`` (what checkpoints monitor) is always the peer handed on.
        torchmetrics' ``compute`` syncs DDP processes: every rank chooses the same peer.
        """
        results = {}
        for index in range(len(self.peers)):
            role = peer_role(index)
            values = {name.removeprefix(f"{stage}/{role}/"): value
                      for name, value in self.peer_metrics[stage][role].compute().items()}
            values["loss"] = self.peer_losses[stage][role].compute()
            self.peer_metrics[stage][role].reset()
            self.peer_losses[stage][role].reset()
            results[role] = values
            self.log_dict({f"{stage}/{role}/{name}": value for name, value in values.items()}, sync_dist=False)
        if stage == "val" and self.hparams["hand_on"] == "best" and not self.trainer.sanity_checking:
            self.handed_on = max(results, key=lambda role: float(results[role]["acc"]))
        self.log_dict({f"{stage}/{name}": value for name, value in results[self.handed_on].items()})

    def on_validation_epoch_end(self) -> None:
        self._log_peers("val")
        super().on_validation_epoch_end()

    def monitored_metrics(self) -> dict[str, Any]:
        # the handed-on peer's, under the names it is logged by (val/ppl, val/acc, ...)
        role = peer_role(self._handed_on_index())
        return {name.replace(f"val/{role}/", "val/"): metric
                for name, metric in self.peer_metrics["val"][role].items(keep_base=False)}

    def on_test_epoch_end(self) -> None:
        self._log_peers("test")
        super().on_test_epoch_end()

    def summary_columns(self) -> dict[str, dict[str, float]]:
        trainer = attached_trainer(self)
        logged = trainer.callback_metrics if trainer is not None else {}
        return {peer_role(i): {"peer accuracy": float(logged[f"val/{peer_role(i)}/acc"])}
                for i in range(len(self.peers)) if f"val/{peer_role(i)}/acc" in logged}

    # -- checkpoints ------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint[DML_KEY] = {"handed_on": self.handed_on}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self.handed_on = checkpoint.get(DML_KEY, {}).get("handed_on", self.handed_on)

    @classmethod
    def run_variant(cls, arguments: dict[str, Any]) -> str | None:
        peers = arguments.get("peers")
        count = f"K{len(peers)}-" if isinstance(peers, list) else ""
        return join_variants(f"{count}{arguments.get('scheme', 'simultaneous')}", super().run_variant(arguments))
