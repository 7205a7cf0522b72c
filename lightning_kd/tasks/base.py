"""The base task every method builds on, in the spirit of torchgeo's ``BaseTask``.

A task's ``__init__`` hands its networks to :class:`BaseTask`, which saves the hyperparameters and
then calls the template methods in order: :meth:`~BaseTask.configure_losses` (cheap argument checks
first), :meth:`~BaseTask.configure_models`, :meth:`~BaseTask.configure_metrics` (the last once the
data's class count is known, in ``setup``). A method then only writes :meth:`~BaseTask.training_losses`.

Every network has a role (``student``, ``teacher``, ``teacher_2``, ``peer_0``, ...; see
:meth:`~BaseTask.networks`). Everything trainable is optimised: every parameter of the task that
requires grad, whichever network, head, projector or loss module holds it; teachers never.
"""

from __future__ import annotations

import inspect
import re
import warnings
from abc import ABCMeta, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import PurePath
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pytorch_lightning import LightningModule
from pytorch_lightning.cli import OptimizerCallable
from pytorch_lightning.loggers import WandbLogger
from torch import Tensor, nn

from lightning_kd.checkpoints import CHECKPOINT_KEY, network_record
from lightning_kd.compat import IgnoredByDDP, attached_trainer, step_metrics_are_written
from lightning_kd.data.base import Batch
from lightning_kd.losses import LabelSmoothing
from lightning_kd.metrics import EpochSums, accuracy, evaluation_metrics, training_metric_name
from lightning_kd.optim import SGD, ScheduleSpec, build_optimization

_FROM_CONFIG: ContextVar[bool] = ContextVar("lightning_kd_from_config", default=False)


@contextmanager
def building_from_config() -> Iterator[None]:
    """Mark the tasks built inside as built from a parsed config (what :class:`~lightning_kd.cli.KDLightningCLI` does).

    Such a task saves the config it was given as its hyperparameters (networks as
    ``class_path``/``init_args``), so its checkpoints rebuild every network with no argument.
    """
    token = _FROM_CONFIG.set(True)
    try:
        yield
    finally:
        _FROM_CONFIG.reset(token)


def _plain(value: Any) -> tuple[bool, Any]:
    """``(True, value)`` for data (safe to store in a checkpoint and log; paths as strings), else ``(False, None)``."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True, value
    if isinstance(value, PurePath):  # as strings: checkpoints then load with weights_only
        return True, str(value)
    if isinstance(value, (list, tuple)):
        items = [_plain(v) for v in value]
        return all(ok for ok, _ in items), [v for _, v in items]
    if isinstance(value, dict):
        entries = {k: _plain(v) for k, v in value.items()}
        ok = all(isinstance(k, str) and ok for k, (ok, _) in entries.items())
        return ok, {k: v for k, (_, v) in entries.items()}
    return False, None


_SMOOTHING_ARGUMENTS = {"label_smoothing": "eps", "smoothing_convention": "convention"}
"""A task's label-smoothing arguments, and the :class:`~lightning_kd.losses.LabelSmoothing` fields they set."""


def label_smoothing_from(arguments: Mapping[str, Any]) -> LabelSmoothing:
    """The label smoothing that a task's ``label_smoothing`` and ``smoothing_convention`` arguments ask for.

    Example:
        >>> label_smoothing_from({"label_smoothing": 0.1, "smoothing_convention": "others"}).tag
        'ls0.1-others'
        >>> label_smoothing_from({}).eps
        0.0
    """
    given = {field: arguments[name] for name, field in _SMOOTHING_ARGUMENTS.items() if name in arguments}
    return LabelSmoothing(**given)


def join_variants(*parts: str | None) -> str | None:
    """Join the non-empty parts of a run's variant with ``-``; ``None`` when all are empty.

    Example:
        >>> join_variants("T4-alpha0.9", "ls0.1"), join_variants(None, "")
        ('T4-alpha0.9-ls0.1', None)
    """
    return "-".join(part for part in parts if part) or None


class NonFiniteLossError(FloatingPointError):
    """A training loss became NaN or infinite: the run stops there."""


class BaseTask(IgnoredByDDP, LightningModule, metaclass=ABCMeta):
    """Base of every method: networks by role, losses, metrics, optimisation, checkpoints and logging.

    Subclasses implement :meth:`configure_models`, :meth:`trained_networks` and
    :meth:`training_losses`, and set :attr:`handed_on` when the network their checkpoints hand on as
    a teacher is not the ``student``.

    Args:
        optimizer: Optimizer class for every trainable parameter (default: SGD, lr 0.05,
            momentum 0.9, weight decay 5e-4).
        lr_scheduler: ``"cosine"`` (over the trainer's ``max_epochs``), ``"none"``, or a
            ``torch.optim.lr_scheduler`` class, stepped each epoch.
        **models: The task's networks (and how to load them), passed on to :meth:`configure_models`.
    """

    handed_on: ClassVar[str] = "student"
    """Role of the network a checkpoint hands on as a teacher (and ``forward`` runs); a task whose user
    chooses it (one of several peers, say) sets it per instance in :meth:`configure_models`."""

    def __new__(cls, *args: Any, **kwargs: Any) -> BaseTask:
        # The arguments of the construction, bound to the subclass's own signature: the hyperparameters
        # are read from here, not from stack frames. Copies and unpickling call __new__ with no
        # arguments; binding then fails and there is nothing to record (nor any __init__ to run).
        instance = super().__new__(cls)
        try:
            bound = inspect.signature(cls.__init__).bind(instance, *args, **kwargs)
        except TypeError:
            return instance
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        arguments.pop(next(iter(arguments)))  # self
        object.__setattr__(instance, "_constructor_arguments", arguments)  # before nn.Module.__init__
        return instance

    def __init__(self, optimizer: OptimizerCallable = SGD, lr_scheduler: ScheduleSpec = "cosine",
                 **models: Any) -> None:
        super().__init__()
        self._save_hyperparameters()
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.num_classes: int | None = None
        # losses first: their hyperparameters are checked before a teacher checkpoint is read
        self.configure_losses()
        self.configure_models(**models)

    def _save_hyperparameters(self) -> None:
        arguments = self.__dict__.pop("_constructor_arguments", {})
        if _FROM_CONFIG.get():
            # Lightning stores the config the CLI parsed (networks as class_path/init_args dicts), which
            # load_from_checkpoint rebuilds from; the CLI checks that it did
            self.save_hyperparameters()
            return
        # Built in Python, networks and optimizer classes are objects: left out, or checkpoints would
        # pickle whole modules; load_from_checkpoint then takes them as arguments
        plain = {name: value for name, (ok, value) in ((n, _plain(v)) for n, v in arguments.items()) if ok}
        self.save_hyperparameters(plain)

    # -- template methods -------------------------------------------------------------------------
    @abstractmethod
    def configure_models(self, **models: Any) -> None:
        """Assign the networks (and load/freeze teachers)."""

    def configure_losses(self) -> None:
        """Build loss modules from ``self.hparams``; validate their arguments here."""

    def configure_metrics(self, num_classes: int) -> None:
        """Build the metrics once the class count is known (called from ``setup``)."""
        self.train_metrics = accuracy(num_classes)
        self._epoch_sums = EpochSums()
        self.val_metrics = evaluation_metrics(num_classes, prefix="val/")
        self.test_metrics = evaluation_metrics(num_classes, prefix="test/")

    @abstractmethod
    def training_losses(self, batch: Batch) -> tuple[dict[str, Tensor], Tensor]:
        """Return ``({"loss": total, "<part>": ..., ...}, logits)`` for one training batch.

        ``loss`` is minimised; every other entry is logged as ``train/<part>_loss``; ``logits`` are the
        handed-on network's, scored as ``train/acc``.
        """

    @abstractmethod
    def trained_networks(self) -> dict[str, nn.Module]:
        """The networks this task trains, by role (the handed-on one among them)."""

    def teacher_networks(self) -> dict[str, nn.Module]:
        """The frozen networks, by role (none unless the task distils)."""
        return {}

    # -- networks ---------------------------------------------------------------------------------
    def networks(self) -> dict[str, nn.Module]:
        """Every network of the task by role: the trained ones, then the teachers.

        The shape checks before training, the run summary and the checkpoint record all read this.
        """
        return {**self.trained_networks(), **self.teacher_networks()}

    @property
    def network(self) -> nn.Module:
        """The network checkpoints hand on as a teacher (role :attr:`handed_on`)."""
        return self.trained_networks()[self.handed_on]

    def network_config(self, role: str) -> dict[str, Any] | None:
        """How to build the network of ``role`` (``class_path``/``init_args``), when built from a config."""
        config = self.hparams.get(role)
        return dict(config) if isinstance(config, dict) and "class_path" in config else None

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters handed to the optimizer: every one of the task that requires grad, never a teacher's."""
        frozen = {id(p) for network in self.teacher_networks().values() for p in network.parameters()}
        return (p for p in self.parameters() if p.requires_grad and id(p) not in frozen)

    def names_ignored_by_ddp(self) -> list[str]:
        # the teachers: no gradient all-reduce, no buffer broadcast
        teachers = {id(network) for network in self.teacher_networks().values()}
        return [f"{path}.{key}" for path, module in self.named_modules() if id(module) in teachers
                for key in module.state_dict()]

    def label_smoothing(self) -> LabelSmoothing:
        """How the task's label term smooths the labels: its ``label_smoothing`` (``eps``) and
        ``smoothing_convention`` arguments; none for a task without them."""
        return label_smoothing_from(self.hparams)

    @classmethod
    def run_variant(cls, arguments: dict[str, Any]) -> str | None:
        """What tells this method's runs apart, from its init arguments (``"ban+l"``, ``"T4-alpha0.9"``).

        The CLI names W&B runs ``<method>-<variant>-seed<seed>``; ``None``: no variant. This base
        gives the label smoothing (``"ls0.1"``); a method joins its own part before it
        (:func:`join_variants`).
        """
        return label_smoothing_from(arguments).tag or None

    def summary_columns(self) -> dict[str, dict[str, float]]:
        """Extra columns of the run summary, by role (e.g. ``{"teacher": {"mean weight": 0.4}}``); none by default."""
        return {}

    def progress_items(self) -> dict[str, str]:
        """The method's own position for the progress display (e.g. ``{"generation": "1/3"}``); none by default."""
        return {}

    def forward(self, x: Tensor) -> Tensor:
        return self.network(x)

    # -- setup ------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        trainer = attached_trainer(self)
        datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
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
            for role, network in self.networks().items():
                self._check_network(role, network, num_classes, tuple(input_shape))
            # lets Lightning's model summary show input/output sizes and the forward's FLOPs
            self.example_input_array = torch.zeros(1, *input_shape)
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

    # -- hooks ------------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        # Lightning warns about modules in eval mode at the start of training; when they are exactly the
        # frozen teachers' modules, that is by design: silence that one message for this fit
        frozen = {id(m) for network in self.teacher_networks().values() for m in network.modules()}
        in_eval = [module for module in self.modules() if not module.training]
        if in_eval and all(id(module) in frozen for module in in_eval):
            warnings.filterwarnings("ignore", message=re.escape(f"Found {len(in_eval)} module(s) in eval mode"))
            self._eval_mode_filter = warnings.filters[0]

    def on_train_start(self) -> None:
        eval_mode_filter = self.__dict__.pop("_eval_mode_filter", None)
        if eval_mode_filter in warnings.filters:
            warnings.filters.remove(eval_mode_filter)

    # -- steps ------------------------------------------------------------------------------------
    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        losses, logits = self.training_losses(batch)
        self._stop_if_not_finite(losses)
        self.log_training(batch, losses, logits)
        return losses["loss"]

    def log_training(self, batch: Batch, losses: dict[str, Tensor], logits: Tensor) -> None:
        """Log ``train/loss`` and each other part as ``train/<part>_loss``: ``_step`` values on the steps the
        loggers write (and the loss every step while a progress bar shows it), ``_epoch`` means (and the plain
        names, for callbacks) at the epoch's last batch; and the handed-on network's ``train/acc`` per epoch.

        Each ``self.log`` call costs Lightning a fraction of a millisecond of Python, which on a GPU is a large
        share of a small network's step (``benchmarks/step_overhead.py``). So the values are summed on the
        device, batch-weighted, and logged only when something reads them.
        """
        batch_size = len(batch["target"])
        trainer = self.trainer
        if self._epoch_sums.epoch != trainer.current_epoch:  # a new epoch (or fit): nothing carried over
            self._epoch_sums = EpochSums(trainer.current_epoch)
            self.train_metrics.reset()
        named = {training_metric_name(name): value.detach() for name, value in losses.items()}
        self._epoch_sums.add(named, batch_size)
        self.train_metrics.update(logits.detach(), batch["target"])  # the epoch's value only: no per-batch compute
        written = step_metrics_are_written(trainer)
        for key, value in named.items():
            shown = key == "train/loss" and trainer.progress_bar_callback is not None
            if written or shown:
                self.log(f"{key}_step", value, on_step=True, on_epoch=False, prog_bar=key == "train/loss",
                         batch_size=batch_size, sync_dist=True)
        if trainer.is_last_batch:
            self._log_epoch_means()

    def _log_epoch_means(self) -> None:
        """Log the epoch's ``_epoch`` means (and plain names, for callbacks and monitors) and ``train/acc``."""
        for key, mean in self._epoch_sums.means().items():
            self.log(f"{key}_epoch", mean, on_step=False, on_epoch=True, sync_dist=True)
            self.log(key, mean, on_step=False, on_epoch=True, sync_dist=True, logger=False)
        self.log("train/acc", self.train_metrics.compute(), on_step=False, on_epoch=True)  # synced by torchmetrics
        self._epoch_sums = EpochSums(self._epoch_sums.epoch)  # logged: nothing left for on_train_epoch_end

    def on_train_epoch_end(self) -> None:
        # an epoch cut short (max_steps) never reaches its last batch: its means are logged here instead
        if self._epoch_sums.samples:
            self._log_epoch_means()

    def _stop_if_not_finite(self, losses: dict[str, Tensor]) -> None:
        """Stop at the first step whose loss (or a part of it) is NaN or infinite, on every DDP process.

        Raised before the optimizer steps, so no checkpoint of such weights is ever written.
        """
        finite = bool(torch.isfinite(torch.stack([v.detach().float().sum() for v in losses.values()])).all())
        trainer = attached_trainer(self)
        if trainer is not None and trainer.world_size > 1:  # every process stops, not one alone
            finite = trainer.strategy.reduce_boolean_decision(finite, all=True)
        if finite:
            return
        bad = [f"{training_metric_name(name)} = {float(v.detach().float().sum())}"
               for name, v in losses.items() if not torch.isfinite(v.detach()).all()]
        where = f"step {trainer.global_step} (epoch {trainer.current_epoch})" if trainer is not None else "a step"
        raise NonFiniteLossError(
            f"training stopped at {where}: {', '.join(bad) or 'the loss of another process'} is not finite. "
            "Likely causes: a learning rate too high for this network (the optimizer's lr), an extreme "
            "hyperparameter, or NaN inputs (the data's normalisation). No checkpoint of these weights was written."
        )

    def evaluation_step(self, batch: Batch, stage: str) -> Tensor:
        """Log ``{stage}/loss`` and the ``{stage}/`` metrics of the handed-on network; return its logits."""
        logits = self(batch["input"])
        self.log_evaluation(batch, logits, stage)
        return logits

    def log_evaluation(self, batch: Batch, logits: Tensor, stage: str) -> None:
        """Log ``{stage}/loss`` and the ``{stage}/`` metrics (accuracy, top-5, ECE) of the handed-on network."""
        batch_size = len(batch["target"])
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        metrics.update(logits, batch["target"])
        self.log(f"{stage}/loss", F.cross_entropy(logits, batch["target"]), batch_size=batch_size, sync_dist=True)
        self.log_dict(metrics, batch_size=batch_size)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self.evaluation_step(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self.evaluation_step(batch, "test")

    def predict_step(self, batch: Batch, batch_idx: int) -> dict[str, Tensor]:
        """``{"index": ..., "probabilities": ...}``: the handed-on network's softmax, with each sample's index."""
        return {"index": batch["index"], "probabilities": self(batch["input"]).softmax(dim=1)}

    # -- optimisation -----------------------------------------------------------------------------
    def schedule_epochs(self) -> int | None:
        """Length in epochs of the learning-rate schedule ("cosine" decays over it): the trainer's ``max_epochs``."""
        trainer = attached_trainer(self)
        max_epochs = trainer.max_epochs if trainer is not None else None
        return max_epochs if max_epochs is not None and max_epochs >= 0 else None

    def configure_optimizers(self) -> Any:
        parameters = list(self.trainable_parameters())
        return build_optimization(parameters, self.optimizer, self.lr_scheduler, self.schedule_epochs())

    # -- checkpoints ------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # what load_network needs to hand the network on as a teacher, and what each role was
        path = next(name for name, module in self.named_modules() if module is self.network)
        checkpoint[CHECKPOINT_KEY] = network_record(
            path, self.network_config(self.handed_on), self.num_classes, self.networks()
        )
        trainer = attached_trainer(self)
        runs = [logger.experiment for logger in trainer.loggers if isinstance(logger, WandbLogger)] if trainer else []
        run_id = getattr(runs[0], "id", None) if runs else None
        if isinstance(run_id, str):  # test/predict from this checkpoint continue this run (rank zero has it)
            checkpoint[CHECKPOINT_KEY]["wandb"] = {"id": run_id, "project": runs[0].project}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # a reload rebuilds the networks as objects, which hparams leave out; keep the checkpoint's
        # configs so a checkpoint saved again still records how to build its networks
        for name, value in checkpoint.get("hyper_parameters", {}).items():
            if not name.startswith("_") and name not in self.hparams:
                self.hparams[name] = value
