"""The base task every method builds on, in the spirit of torchgeo's ``BaseTask``.

A task's ``__init__`` hands its networks to :class:`BaseTask`, which saves the hyperparameters and
then calls the template methods in order: :meth:`~BaseTask.configure_losses` (cheap argument checks
first), :meth:`~BaseTask.configure_models`, :meth:`~BaseTask.configure_metrics` (the last once the
data's class count is known, in ``setup``). A method then only writes :meth:`~BaseTask.training_losses`.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from pathlib import PurePath
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pytorch_lightning import LightningModule
from pytorch_lightning.cli import OptimizerCallable
from torch import Tensor, nn

from lightning_kd.data.base import Batch
from lightning_kd.metrics import accuracy, evaluation_metrics
from lightning_kd.optim import SGD, ScheduleSpec, build_optimization
from lightning_kd.teacher import CHECKPOINT_KEY

try:  # set while LightningCLI instantiates a model: the hparams are then the parsed config
    from pytorch_lightning.core.mixins.hparams_mixin import _given_hyperparameters
except ImportError:  # pragma: no cover - older/newer Lightning
    _given_hyperparameters = None


def _is_plain(value: Any) -> bool:
    """Whether a hyperparameter is data (safe to store in a checkpoint and log), not an object."""
    if value is None or isinstance(value, (bool, int, float, str, PurePath)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return False


class BaseTask(LightningModule):
    """Base of every method: networks, losses, metrics, optimisation and logging.

    Subclasses set :attr:`network_attribute` and implement :meth:`configure_models` and
    :meth:`training_losses`.

    Args:
        optimizer: Optimizer class for the trainable parameters (default: SGD, lr 0.05,
            momentum 0.9, weight decay 5e-4).
        lr_scheduler: ``"cosine"`` (over the trainer's ``max_epochs``), ``"none"``, or a
            ``torch.optim.lr_scheduler`` class, stepped each epoch.
        **models: The task's networks (and how to load them), passed on to :meth:`configure_models`.
    """

    network_attribute: ClassVar[str]
    """Attribute holding the network this task trains; checkpoints hand it on as a teacher."""

    def __init__(self, optimizer: OptimizerCallable = SGD, lr_scheduler: ScheduleSpec = "cosine",
                 **models: Any) -> None:
        super().__init__()
        self._save_plain_hyperparameters()
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.num_classes: int | None = None
        # losses first: their hyperparameters are checked before a teacher checkpoint is read
        self.configure_losses()
        self.configure_models(**models)

    def _save_plain_hyperparameters(self) -> None:
        # Under LightningCLI the hparams are the config (networks as class_path/init_args dicts) and
        # reload through load_from_checkpoint. Built in Python, networks and optimizer classes are
        # objects: they are left out, or checkpoints would pickle whole modules.
        from pytorch_lightning.utilities.parsing import collect_init_args

        frame = inspect.currentframe()
        init_frame = frame.f_back if frame is not None else None  # BaseTask.__init__
        given = _given_hyperparameters.get() if _given_hyperparameters is not None else None
        ignore: list[str] = []
        if given is None and init_frame is not None:
            init_args: dict[str, Any] = {}
            for local_args in collect_init_args(init_frame, [], classes=(BaseTask,)):
                init_args.update(local_args)
            ignore = [name for name, value in init_args.items() if not _is_plain(value)]
        self.save_hyperparameters(ignore=ignore, frame=init_frame)
        for name, value in self.hparams.items():
            if isinstance(value, PurePath):  # paths as strings: checkpoints load with weights_only
                self.hparams[name] = str(value)

    # -- template methods -------------------------------------------------------------------------
    def configure_models(self, **models: Any) -> None:
        """Assign the networks (and load/freeze teachers)."""
        raise NotImplementedError

    def configure_losses(self) -> None:
        """Build loss modules from ``self.hparams``; validate their arguments here."""

    def configure_metrics(self, num_classes: int) -> None:
        """Build the metrics once the class count is known (called from ``setup``)."""
        self.train_metrics = accuracy(num_classes)
        self.val_metrics = evaluation_metrics(num_classes, prefix="val/")
        self.test_metrics = evaluation_metrics(num_classes, prefix="test/")

    def training_losses(self, batch: Batch) -> tuple[dict[str, Tensor], Tensor]:
        """Return ``({"loss": total, "<part>": ..., ...}, logits)`` for one training batch.

        ``loss`` is minimised; every other entry is logged as ``train/<part>_loss``.
        """
        raise NotImplementedError

    # -- networks ---------------------------------------------------------------------------------
    @property
    def network(self) -> nn.Module:
        """The network this task trains."""
        return getattr(self, self.network_attribute)

    def networks_to_check(self) -> dict[str, nn.Module]:
        """Networks whose input and output shapes must fit the data, by role."""
        return {self.network_attribute: self.network}

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters handed to the optimizer (never a teacher's)."""
        return (p for p in self.network.parameters() if p.requires_grad)

    def forward(self, x: Tensor) -> Tensor:
        return self.network(x)

    # -- setup ------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        num_classes = getattr(datamodule, "num_classes", None)
        input_shape = getattr(datamodule, "input_shape", None)
        if num_classes is None:
            num_classes = getattr(self.network, "num_classes", None)
        if num_classes is None:
            raise ValueError(
                "cannot tell the number of classes: use a ClassificationDataModule (or any data module "
                "with `num_classes`) or a network with a `num_classes` attribute"
            )
        if input_shape is not None:
            for role, network in self.networks_to_check().items():
                self._check_network(role, network, num_classes, tuple(input_shape))
        if self.num_classes is None:
            self.num_classes = num_classes
            self.configure_metrics(num_classes)
        elif self.num_classes != num_classes:
            raise ValueError(f"this task was set up for {self.num_classes} classes, the data now has {num_classes}")

    @staticmethod
    def _check_network(role: str, network: nn.Module, num_classes: int, input_shape: tuple[int, ...]) -> None:
        """One eval-mode forward of a dummy batch: refuse a network that does not fit the data."""
        parameter = next(network.parameters(), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
        was_training = network.training
        network.eval()
        try:
            with torch.no_grad():
                logits = network(torch.zeros(2, *input_shape, device=device))
        except Exception as error:  # the network's own error names the layer; add what we know
            raise ValueError(
                f"the {role} network ({type(network).__name__}) fails on inputs of shape {input_shape} "
                f"from the data: {error}"
            ) from error
        finally:
            network.train(was_training)
        if logits.ndim != 2 or logits.shape[1] != num_classes:
            raise ValueError(
                f"the {role} network ({type(network).__name__}) predicts {tuple(logits.shape[1:])} outputs per "
                f"sample but the data has {num_classes} classes"
            )

    # -- steps ------------------------------------------------------------------------------------
    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        losses, logits = self.training_losses(batch)
        batch_size = len(batch["target"])
        for name, value in losses.items():
            key = "train/loss" if name == "loss" else f"train/{name}_loss"
            self.log(key, value, on_step=True, on_epoch=True, prog_bar=name == "loss", batch_size=batch_size,
                     sync_dist=True)
        self.train_metrics(logits.detach(), batch["target"])
        self.log("train/acc", self.train_metrics, on_step=False, on_epoch=True, batch_size=batch_size)
        return losses["loss"]

    def evaluation_step(self, batch: Batch, stage: str) -> Tensor:
        """Log ``{stage}/loss`` and the ``{stage}/`` metrics of the trained network; return its logits."""
        logits = self(batch["input"])
        batch_size = len(batch["target"])
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        metrics.update(logits, batch["target"])
        self.log(f"{stage}/loss", F.cross_entropy(logits, batch["target"]), batch_size=batch_size, sync_dist=True)
        self.log_dict(metrics, batch_size=batch_size)
        return logits

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self.evaluation_step(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self.evaluation_step(batch, "test")

    def predict_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return self(batch["input"]).softmax(dim=1)

    # -- optimisation -----------------------------------------------------------------------------
    def schedule_epochs(self) -> int | None:
        """Length in epochs of the learning-rate schedule ("cosine" decays over it): the trainer's ``max_epochs``."""
        max_epochs = self.trainer.max_epochs if self._trainer is not None else None
        return max_epochs if max_epochs is not None and max_epochs >= 0 else None

    def configure_optimizers(self) -> Any:
        parameters = self.trainable_parameters()
        return build_optimization(parameters, self.optimizer, self.lr_scheduler, self.schedule_epochs())

    # -- checkpoints ------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # what load_network needs to hand the trained network on as a teacher
        config = self.hparams.get(self.network_attribute)
        checkpoint[CHECKPOINT_KEY] = {
            "format_version": 1,
            "network": self.network_attribute,
            "network_config": config if isinstance(config, dict) else None,
            "num_classes": self.num_classes,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # a reload rebuilds the networks as objects, which hparams leave out; keep the checkpoint's
        # configs so a checkpoint saved again still records how to build its networks
        for name, value in checkpoint.get("hyper_parameters", {}).items():
            if not name.startswith("_") and name not in self.hparams:
                self.hparams[name] = value

