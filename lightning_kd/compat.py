"""Every private name of Lightning and torch this package relies on, in one place.

Nothing outside this module touches a private attribute of another library. ``tests/test_compat.py``
checks each name below against the installed versions, so an upgrade that removes one fails there,
loudly, rather than somewhere deep in a fit.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import re
from typing import TYPE_CHECKING, Any

import torch
from jsonargparse import DefaultHelpFormatter
from pytorch_lightning.callbacks import Callback, Checkpoint, EarlyStopping, RichProgressBar
from pytorch_lightning.profilers import PassThroughProfiler
from pytorch_lightning.trainer import call as lightning_call
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from lightning_kd.text import plain_text

if TYPE_CHECKING:
    import pytorch_lightning as pl
    from pytorch_lightning.strategies import Strategy

DDP_IGNORE_ATTRIBUTE = "_ddp_params_and_buffers_to_ignore"
"""The attribute ``DistributedDataParallel`` reads off the module it wraps: names it neither all-reduces
nor broadcasts (torch sets it in its private ``_set_params_and_buffers_to_ignore_for_model``)."""

LIGHTNING_DEFAULT_MAX_EPOCHS = 1000
"""What Lightning sets ``max_epochs`` to when neither ``max_epochs`` nor ``max_steps`` is given."""


class IgnoredByDDP:
    """Mixin: DDP leaves alone the parameters and buffers named by :meth:`names_ignored_by_ddp`."""

    def names_ignored_by_ddp(self) -> list[str]:
        """Parameter and buffer names (as in ``state_dict``) that DDP must not sync."""
        return []

    @property
    def _ddp_params_and_buffers_to_ignore(self) -> list[str]:
        # read by DistributedDataParallel when it wraps the module (name: DDP_IGNORE_ATTRIBUTE)
        return self.names_ignored_by_ddp()


class PlainHookName:
    """Mixin: the name of the hook Lightning is running is stored as a plain attribute.

    Lightning sets ``_current_fx_name`` on the module before and after every hook it calls, about forty times
    a training step. Through ``nn.Module.__setattr__``, which looks the name up among the parameters, buffers and
    submodules first, each costs about a microsecond, some 40 us a step; the name is a string (or ``None``),
    never one of those, so it goes straight into the instance's ``__dict__``, where ``nn.Module`` would put it.

    Example:
        >>> import pytorch_lightning as pl
        >>> class Task(PlainHookName, pl.LightningModule):
        ...     pass
        >>> task = Task()
        >>> task._current_fx_name = "training_step"
        >>> task.__dict__["_current_fx_name"], task._current_fx_name
        ('training_step', 'training_step')
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)


def attached_trainer(module: pl.LightningModule) -> pl.Trainer | None:
    """The trainer ``module`` is attached to, or ``None`` (``module.trainer`` raises when there is none)."""
    return module._trainer


def hyperparameters_given_by_cli() -> bool:
    """Whether LightningCLI is building the module now and hands ``save_hyperparameters`` the config it parsed.

    Lightning then saves that config (networks as ``class_path``/``init_args``) instead of the arguments'
    values, and ``load_from_checkpoint`` rebuilds every network from it.
    """
    from pytorch_lightning.core.mixins.hparams_mixin import _given_hyperparameters

    return _given_hyperparameters.get() is not None


_LIGHTNING_CALL_CALLBACK_HOOKS = lightning_call._call_callback_hooks
"""Lightning's own dispatcher of callback hooks (``pytorch_lightning.trainer.call._call_callback_hooks``)."""

_CALLBACK_NO_OPS = {name: function for name, function in vars(Callback).items()
                    if callable(function) and (name.startswith("on_") or name in {"setup", "teardown"})}
"""``Callback``'s own hooks, which do nothing: a callback whose hook is one of these has not overridden it."""

_DISPATCH_PARAMETERS = ("trainer", "hook_name", "args", "monitoring_callbacks", "kwargs")
"""The parameters of the dispatcher that :func:`_call_callback_hooks_that_act` stands in for."""

_dispatch_log = logging.getLogger(lightning_call.__name__)


def _call_callback_hooks_that_act(trainer: pl.Trainer, hook_name: str, *args: Any,
                                  monitoring_callbacks: bool | None = None, **kwargs: Any) -> None:
    """Lightning's dispatch of a callback hook, less the callbacks whose hook is ``Callback``'s own (does nothing).

    Lightning calls every hook of every callback, each in a profiler context named after the callback's
    ``state_key`` (``ModelCheckpoint`` builds its key anew each time), about six hooks a training step: some
    3 us a callback and hook, 0.1 ms a step with the command line's eight callbacks. Without a profiler
    (Lightning's ``PassThroughProfiler``) skipping a hook that does nothing changes nothing else; with one, every
    hook is dispatched by Lightning as before, so the profile keeps its rows.
    """
    no_op = _CALLBACK_NO_OPS.get(hook_name)
    if no_op is None or type(trainer.profiler) is not PassThroughProfiler:
        _LIGHTNING_CALL_CALLBACK_HOOKS(trainer, hook_name, *args, monitoring_callbacks=monitoring_callbacks,
                                       **kwargs)
        return
    _dispatch_log.debug("%s: calling callback hook: %s", type(trainer).__name__, hook_name)
    pl_module = trainer.lightning_module
    if pl_module:
        previous = pl_module._current_fx_name
        pl_module._current_fx_name = hook_name
    for callback in trainer.callbacks:
        hook = getattr(callback, hook_name)
        if getattr(hook, "__func__", None) is no_op or not callable(hook):
            continue
        # Lightning's split of on_train_epoch_end: the monitoring callbacks (checkpoints, early stopping) last
        if monitoring_callbacks is not None and isinstance(callback, (EarlyStopping, Checkpoint)) is not (
                monitoring_callbacks):
            continue
        hook(trainer, trainer.lightning_module, *args, **kwargs)
    if pl_module:
        pl_module._current_fx_name = previous


def skip_callback_no_ops() -> bool:
    """Make Lightning's trainers skip the callback hooks that do nothing (see :func:`_call_callback_hooks_that_act`),
    in every fit of this process from now on.

    Importing lightning-kd's tasks calls it; :func:`restore_lightning_callback_dispatch` undoes it. Callbacks see the
    same calls, in the same order, with the same arguments; a hook patched onto ``Callback`` itself, or onto one
    callback instance, is called. Returns ``False``, and leaves the dispatcher as it is, when it is not Lightning's
    own (something else replaced it) or its parameters differ from those this was written against
    (``tests/test_callback_dispatch.py`` then fails, to have the copy checked against the new Lightning).

    Example:
        >>> skip_callback_no_ops()
        True
    """
    current = lightning_call._call_callback_hooks
    if current is _call_callback_hooks_that_act:
        return True
    if current is not _LIGHTNING_CALL_CALLBACK_HOOKS or tuple(
            inspect.signature(current).parameters) != _DISPATCH_PARAMETERS:
        return False
    lightning_call._call_callback_hooks = _call_callback_hooks_that_act
    return True


def restore_lightning_callback_dispatch() -> None:
    """Give Lightning its own callback dispatcher back (undo :func:`skip_callback_no_ops` for this process).

    Example:
        >>> restore_lightning_callback_dispatch()
        >>> lightning_call._call_callback_hooks is _LIGHTNING_CALL_CALLBACK_HOOKS
        True
        >>> skip_callback_no_ops()
        True
    """
    lightning_call._call_callback_hooks = _LIGHTNING_CALL_CALLBACK_HOOKS


def step_metrics_are_written(trainer: pl.Trainer) -> bool:
    """Whether the loggers write this training step's ``on_step`` values (every ``log_every_n_steps``).

    Lightning's own test, so a value logged only on these steps reaches every write.
    """
    return bool(trainer._logger_connector.should_update_logs or trainer.fast_dev_run)


def set_epoch_budget(trainer: pl.Trainer, max_epochs: int, unlimited_steps: bool = False) -> None:
    """Set the running fit's epoch budget (after the trainer was built); ``unlimited_steps`` lifts its step limit.

    Lightning reads ``fit_loop.max_epochs`` and its epoch loop's ``max_steps`` at every epoch's end, so a
    callback may change them in ``setup`` (``fast_dev_run`` sets a one-step limit there).
    """
    trainer.fit_loop.max_epochs = max_epochs
    if unlimited_steps:
        trainer.fit_loop.epoch_loop.max_steps = -1


def rewrap_for_ddp(strategy: Strategy) -> None:
    """Wrap the strategy's LightningModule in a new ``DistributedDataParallel`` (its parameters changed).

    Raises:
        RuntimeError: The strategy wraps the module in something other than DDP (FSDP, DeepSpeed, ...).
    """
    if isinstance(strategy.model, DistributedDataParallel):
        strategy.model = strategy._setup_model(strategy.lightning_module)  # type: ignore[attr-defined]
        strategy._register_ddp_hooks()  # type: ignore[attr-defined]
    elif strategy.model is not strategy.lightning_module:
        raise RuntimeError(
            f"replacing a trained network mid-fit is supported on one device and with DDP, not with "
            f"{type(strategy).__name__}"
        )


def wandb_init_arguments(logger: Any) -> dict[str, Any]:
    """The keyword arguments Lightning's ``WandbLogger`` will pass to ``wandb.init`` (editable until the run starts)."""
    return logger._wandb_init


class OneBasedRichProgressBar(RichProgressBar):
    """Lightning's rich bar counting epochs from 1 (``Epoch 1/80``), as the log lines and the summary do.

    Lightning's own reads ``Epoch 0/79``; its description comes from the private ``_get_train_description``.
    """

    def _get_train_description(self, current_epoch: int) -> str:
        description = f"Epoch {current_epoch + 1}"
        if self.trainer.max_epochs is not None and self.trainer.max_epochs >= 0:
            description += f"/{self.trainer.max_epochs}"
        return f"{description:{len(self.validation_description)}}"  # padded as Lightning's, against flicker


class PlainHelpFormatter(DefaultHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """jsonargparse's help made readable (its methods are argparse's formatter hooks).

    Descriptions keep their lines; reST markup reads as plain text; the list of "known subclasses" of
    a network argument (every ``nn.Module`` imported, hundreds) names only the zoo's networks and counts
    the rest.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        return _shorten_subclasses(plain_text(super()._get_help_string(action)))

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return super()._fill_text(plain_text(text), width, indent)

    def start_section(self, heading: str | None) -> None:
        super().start_section(plain_text(heading) if heading else heading)


def _shorten_subclasses(text: str) -> str:
    match = re.search(r"known subclasses: (.*)\)$", text, flags=re.S)  # the list closes the help's "(...)"
    if match is None:
        return text
    paths = match.group(1).split(", ")
    own = [path for path in paths if re.fullmatch(r"lightning_kd\.models\.[A-Z]\w*", path)]  # the zoo's networks
    if len(own) == len(paths):
        return text
    rest = f"{len(paths) - len(own)} other classes (any importable one works)"
    listed = ", ".join([*own, rest]) if own else rest
    return text[: match.start(1)] + listed + text[match.end(1):]


def hook_count(module: nn.Module) -> int:
    """Forward and forward-pre hooks registered on ``module`` itself (torch keeps them in private dicts)."""
    return len(module._forward_hooks) + len(module._forward_pre_hooks)


def foreach_max_abs(tensors: list[Tensor]) -> list[Tensor]:
    """Each tensor's largest absolute value (NaN if it holds one), in one fused pass (torch's ``_foreach_norm``, the
    kernel ``clip_grad_norm_`` uses; private, hence here)."""
    return list(torch._foreach_norm(tensors, float("inf")))


def foreach_l2_norms(tensors: list[Tensor]) -> list[Tensor]:
    """Each tensor's L2 norm in float32 (NaN or inf if it holds one), in one fused pass: the same private kernel as
    :func:`foreach_max_abs`, whose vectorised L2 path is 10-25 times faster on a CPU than its max-abs path."""
    return list(torch._foreach_norm(tensors, 2, dtype=torch.float32))


def fused_kernel_devices() -> set[str]:
    """The device types torch's fused optimizer kernels (``fused=True``) run on (a private torch list)."""
    from torch.optim.optimizer import _get_fused_kernels_supported_devices

    return set(_get_fused_kernels_supported_devices())


def mark_fused(optimizer: torch.optim.Optimizer, unscales: bool = True) -> None:
    """Make a built optimizer step with its fused kernel, as ``fused=True`` at construction would have (the
    constructor also sets a private flag that lets a gradient scaler hand it unscaling; ``unscales=False`` leaves
    the unscaling to the scaler, before the step, for whatever must read the true gradients first: clipping)."""
    optimizer.defaults.update(fused=True, foreach=False)
    for group in optimizer.param_groups:
        group.update(fused=True, foreach=False)
    optimizer._step_supports_amp_scaling = unscales


def inductor_options(mode: str, **settings: Any) -> dict[str, Any]:
    """The inductor settings ``torch.compile(mode=mode)`` would give (``dynamic=False``), with ``settings`` on top:
    ``torch.compile`` takes a mode or options, not both (torch's private ``list_mode_options``)."""
    from torch._inductor import list_mode_options

    return {**list_mode_options(mode, dynamic=False), **settings}
