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

from abc import ABCMeta, abstractmethod
from collections.abc import Iterator
from typing import Any, ClassVar

import torch
from pytorch_lightning import LightningModule
from pytorch_lightning.cli import OptimizerCallable
from torch import Tensor, nn

from lightning_kd.checkpoints import CHECKPOINT_KEY, data_identity, keep_plain, objects_among, task_record
from lightning_kd.compat import (
    IgnoredByDDP,
    PlainHookName,
    attached_trainer,
    hyperparameters_given_by_cli,
    skip_callback_no_ops,
)
from lightning_kd.console import restore_warning, silence_eval_mode_warning
from lightning_kd.data.base import Batch, data_sizes
from lightning_kd.errors import NonFiniteLossError, Refusal, check_training_schedule
from lightning_kd.loggers import wandb_run_reference
from lightning_kd.losses import LabelSmoothing, label_smoothing_from
from lightning_kd.metrics import evaluation_metrics
from lightning_kd.models.base import check_networks_fit
from lightning_kd.naming import join_variants, smoothing_variant
from lightning_kd.optim import SGD, ScheduleSpec, build_optimization
from lightning_kd.tasks.evaluation import EvaluationSteps
from lightning_kd.tasks.finite import FiniteChecks
from lightning_kd.tasks.resume import ResumeChecks
from lightning_kd.tasks.streams import StreamHooks
from lightning_kd.training_log import TrainingLog

__all__ = ["BaseTask", "NonFiniteLossError", "join_variants"]

# Lightning's trainers skip the callback hooks that do nothing from here on (0.1 ms a step with the command line's
# callbacks): here rather than in a task's __init__ so that a task unpickled in another process (ddp_spawn) has it too
skip_callback_no_ops()


class BaseTask(EvaluationSteps, FiniteChecks, ResumeChecks, StreamHooks, IgnoredByDDP, PlainHookName,
               LightningModule, metaclass=ABCMeta):
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

    def __init__(self, optimizer: OptimizerCallable = SGD, lr_scheduler: ScheduleSpec = "cosine",
                 **models: Any) -> None:
        super().__init__()
        # Lightning's own capture: every argument of the subclass's __init__ (read from its call), or, when
        # LightningCLI builds the task, the config it parsed (networks as class_path/init_args), which
        # load_from_checkpoint rebuilds from. Built in Python, networks and optimizer classes are objects: left
        # out, or checkpoints would pickle whole modules (load_from_checkpoint then takes them as arguments)
        given = {"optimizer": optimizer, "lr_scheduler": lr_scheduler, **models}
        from_config = hyperparameters_given_by_cli()
        self.save_hyperparameters(ignore=[] if from_config else objects_among(given))
        if not from_config:
            keep_plain(self.hparams)
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.num_classes: int | None = None
        self.token_unit: str | None = None  # "word"/"char" when the data are token streams (from the data module)
        # losses first: their hyperparameters are checked before a teacher checkpoint is read
        self.configure_losses()
        self.configure_models(**models)

    # -- template methods -------------------------------------------------------------------------
    @abstractmethod
    def configure_models(self, **models: Any) -> None:
        """Assign the networks (and load/freeze teachers)."""

    def configure_losses(self) -> None:
        """Build loss modules from ``self.hparams``; validate their arguments here."""

    def configure_metrics(self, num_classes: int) -> None:
        """Build the metrics once the class count is known (called from ``setup``); token data add perplexity."""
        self.training_log = TrainingLog()
        self.val_metrics = evaluation_metrics(num_classes, prefix="val/", unit=self.token_unit)
        self.test_metrics = evaluation_metrics(num_classes, prefix="test/", unit=self.token_unit)

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

    def frozen_modules(self) -> list[nn.Module]:
        """The modules kept in eval mode through training: every teacher's (and what a task freezes besides)."""
        return [m for network in self.teacher_networks().values() for m in network.modules()]

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

        The CLI names W&B runs ``<method>-<variant>-seed<seed>``; ``None``: no variant. This base gives the
        label smoothing (``"ls0.1"``); a method joins its own part before it
        (:func:`~lightning_kd.naming.join_variants`).
        """
        return smoothing_variant(arguments)

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
        super().setup(stage)  # checkpoints written atomically (ResumeChecks)
        trainer = attached_trainer(self)
        if stage == "fit" and trainer is not None:  # settings Lightning would fail on mid-run
            check_training_schedule(trainer)
        num_classes, input_shape = data_sizes(trainer, self.network)
        datamodule = getattr(trainer, "datamodule", None)
        if input_shape is not None:  # the example lets Lightning's model summary show sizes and FLOPs
            dtype = getattr(datamodule, "input_dtype", torch.float32)
            self.example_input_array = check_networks_fit(self.networks(), num_classes, input_shape, dtype)
        if self.num_classes is None:
            self.num_classes, self.token_unit = num_classes, getattr(datamodule, "unit", None)
            self.configure_metrics(num_classes)
        elif self.num_classes != num_classes:
            raise Refusal(f"this task was set up for {self.num_classes} classes, the data now has {num_classes}")

    # -- hooks ------------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        super().on_fit_start()  # a resume's checks and random state (ResumeChecks)
        # Lightning warns about modules in eval mode at the start of training: the frozen ones are, by design
        self._eval_mode_filter = silence_eval_mode_warning(list(self.modules()), self.frozen_modules())

    def on_train_start(self) -> None:
        restore_warning(self.__dict__.pop("_eval_mode_filter", None))

    # -- steps ------------------------------------------------------------------------------------
    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        losses, logits = self.training_losses(batch)
        # its losses (and, every log_every_n_steps, the weights): before the optimizer steps, on every DDP process
        self.check_training_step(losses)
        self.log_training(batch, losses, logits)
        return losses["loss"]

    def log_training(self, batch: Batch, losses: dict[str, Tensor], logits: Tensor) -> None:
        """Log ``train/loss``, each other part as ``train/<part>_loss`` and the handed-on network's ``train/acc``,
        summed on the device and written when read (see :mod:`lightning_kd.training_log`)."""
        self.training_log.step(self, losses, logits, batch["target"])

    def log_epoch_means(self, values: dict[str, Tensor], batch_size: int) -> None:
        """Log a method's own scalars for this training batch (a teacher's weight, say) as epoch means."""
        if getattr(self, "training_log", None) is not None and attached_trainer(self) is not None:
            self.training_log.record(self, values, batch_size)

    def on_train_epoch_end(self) -> None:
        self.check_weights("the end of the epoch")  # every step checked, validated or not
        # an epoch cut short (max_steps) never reaches its last batch: its means are logged here instead
        self.training_log.end_epoch(self)

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
        self.check_weights("writing a checkpoint")  # on every path that writes one
        # what load_network needs to hand the network on as a teacher, what each role was, and the W&B run
        trainer = attached_trainer(self)
        data = data_identity(getattr(trainer, "datamodule", None))  # a teacher's data, checked by its students
        checkpoint[CHECKPOINT_KEY] = task_record(self, wandb_run_reference(trainer), data)
        super().on_save_checkpoint(checkpoint)  # the random state (ResumeChecks)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)  # a resume is the same run (ResumeChecks)
        # a reload rebuilds the networks as objects, which hparams leave out; keep the checkpoint's configs so a
        # checkpoint saved again still records how to build its networks
        self.hparams.update({name: value for name, value in checkpoint.get("hyper_parameters", {}).items()
                             if not name.startswith("_") and name not in self.hparams})
