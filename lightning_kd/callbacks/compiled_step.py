"""A compiled training step: the method's forward and losses compiled (and their backward, through AOTAutograd),
captured as CUDA graphs on a GPU, with the optimizer's fused kernel."""

from __future__ import annotations

from typing import Any, Literal, get_args

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_info

from lightning_kd.compat import inductor_options
from lightning_kd.errors import Refusal
from lightning_kd.optim import use_fused_step

CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]


BUILT_KERNELS = "_lightning_kd_built_kernels"
"""Where a fused optimizer keeps its param groups' ``fused`` and ``foreach`` as built: ``[(fused, foreach), ...]``."""


class CompiledStep(Callback):
    """Compile every training step's forward and losses with ``torch.compile``, for any method.

    What is compiled is the task's :meth:`~lightning_kd.tasks.base.BaseTask.training_losses`: the networks' forward,
    the teachers' (or the teacher-output cache's gather, which a cache in the device's memory does inside the
    compiled region) and the method's loss; AOTAutograd compiles its backward with it. On a CUDA device the default
    mode, ``"reduce-overhead"``, also captures both as CUDA graphs, so a step launches a few graphs instead of
    hundreds of kernels. Around it the step stays as it is: the non-finite checks, the training log and Lightning's
    loop, with the flags of the checks left on the device between reads (:mod:`lightning_kd.tasks.finite`).

    Shapes are static: the last partial training batch of each epoch is dropped (the data modules'
    ``drop_last_train``; a data module without it keeps its batches, and a batch of another shape is compiled,
    or captured, once more). The optimizer steps with torch's fused kernel where it has one (SGD, Adam, AdamW),
    which does the same arithmetic in another order. Validation, testing and prediction run eagerly.

    A network whose layers a method taps (the feature methods: FitNets, AT, CRD, ...) runs that forward eagerly:
    torch.compile does not guard the hooks that tap it, and a forward compiled for one set of tapped layers skipped
    another's. The method's loss and the untapped forwards are still compiled.

    A network swapped in (a Born-Again generation's student) is traced into the same graph: the parameters are its
    inputs, so a fit compiles one graph for its steps without a teacher and one with. A step whose shapes or
    structure keep changing is compiled again each time, up to torch's ``recompile_limit`` (8), after which it runs
    eagerly, with torch's warning.

    Losses and weights equal the eager step's up to floating-point rounding (tested over 20 steps on a CPU with
    inductor); a run that must be bit-identical to an eager one, or resumed bit-identically, trains eagerly.

    Args:
        mode: ``torch.compile``'s mode; ``None``: ``"reduce-overhead"`` on a CUDA device, ``"default"`` elsewhere.
        backend: ``torch.compile``'s backend (``"inductor"``; ``"aot_eager"`` traces without generating code).
        fuse_optimizer: Step the optimizer with its fused kernel where it has one.
        drop_last: Drop each epoch's last partial training batch (static shapes).
        eager_random: With inductor, draw the step's random numbers (dropout, CRD's negatives) from torch's generator
            as the eager step does (inductor's ``fallback_random``), so that the compiled step trains as the eager
            one; ``False`` lets inductor draw them inside its kernels (faster with dropout; other numbers).

    Example:
        >>> CompiledStep().settings()
        {'mode': None, 'backend': 'inductor', 'fuse_optimizer': True, 'drop_last': True, 'eager_random': True}
    """

    def __init__(self, mode: CompileMode | None = None, backend: str = "inductor", fuse_optimizer: bool = True,
                 drop_last: bool = True, eager_random: bool = True) -> None:
        if mode is not None and mode not in get_args(CompileMode):
            raise Refusal(f"CompiledStep mode must be one of {', '.join(get_args(CompileMode))} (or unset), "
                          f"got {mode!r}")
        self.mode, self.backend, self.fuse_optimizer, self.drop_last = mode, backend, fuse_optimizer, drop_last
        self.eager_random = eager_random
        self.fused: bool | None = None
        """Whether the optimizer steps fused in this fit (``None`` before it starts)."""

    def settings(self) -> dict[str, Any]:
        """The callback's arguments, as given."""
        return {"mode": self.mode, "backend": self.backend, "fuse_optimizer": self.fuse_optimizer,
                "drop_last": self.drop_last, "eager_random": self.eager_random}

    def _mode(self, device: torch.device) -> str:
        return self.mode or ("reduce-overhead" if device.type == "cuda" else "default")

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if not hasattr(pl_module, "training_losses") or not hasattr(pl_module, "check_training_step"):
            raise Refusal(f"CompiledStep compiles a lightning-kd task's training_losses, and "
                          f"{type(pl_module).__name__} is not one: compile your own module's step yourself")
        if not pl_module.automatic_optimization:
            raise Refusal(f"CompiledStep compiles a step Lightning optimises, and {type(pl_module).__name__} steps "
                          "its optimizers itself (one network at a time): train it without CompiledStep")
        mode = self._mode(trainer.strategy.root_device)
        if "reduce-overhead" in mode and trainer.strategy.root_device.type != "cuda":
            raise Refusal(f"CompiledStep mode {mode!r} captures CUDA graphs, and this run trains on "
                          f"{trainer.strategy.root_device.type}: use mode 'default' (or leave it unset)")
        datamodule = getattr(trainer, "datamodule", None)
        if self.drop_last and hasattr(datamodule, "drop_last_train"):
            self._kept_drop_last = (datamodule, datamodule.drop_last_train)  # given back at the fit's end
            datamodule.drop_last_train = True  # type: ignore[union-attr]
        elif self.drop_last:
            rank_zero_info(f"CompiledStep: {type(datamodule).__name__ if datamodule else 'this data'} cannot drop "
                           "its last partial training batch: a batch of another shape is compiled once more")
        step = type(pl_module).training_losses.__get__(pl_module)
        if self.backend == "inductor":  # the mode's settings, and where the random numbers come from
            options = inductor_options(mode, fallback_random=self.eager_random)
            compiled = torch.compile(step, backend="inductor", options=options, dynamic=False)
        else:
            compiled = torch.compile(step, mode=mode, backend=self.backend, dynamic=False)
        pl_module.__dict__["training_losses"] = compiled

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # after a resume restored the optimizer's state: the fused kernel reads it as it is
        self.fused = self._fuse(trainer)
        dropped = "; each epoch's last partial training batch dropped" if "_kept_drop_last" in self.__dict__ else ""
        rank_zero_info(f"CompiledStep: training_losses compiled ({self.backend}, mode "
                       f"{self._mode(pl_module.device)}), optimizer {'fused' if self.fused else 'as built'}{dropped}")

    def _fuse(self, trainer: pl.Trainer) -> bool:
        unfused = [optimizer for optimizer in trainer.optimizers if not optimizer.defaults.get("fused")]
        if not self.fuse_optimizer:
            return False
        for optimizer in unfused:  # how each was built, kept on it for its checkpoints (on_save_checkpoint)
            optimizer.__dict__[BUILT_KERNELS] = [(group.get("fused"), group.get("foreach"))
                                                 for group in optimizer.param_groups]
        # clipping reads the gradients unscaled, before the step: under 16-mixed the scaler unscales them first
        unscales = not trainer.gradient_clip_val
        return all(use_fused_step(optimizer, unscales) for optimizer in unfused)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        # the optimizers as they were built: the fused kernel is this callback's choice, so a resume without it steps
        # as the run was configured (and one with it fuses again)
        for optimizer, state in zip(trainer.optimizers, checkpoint.get("optimizer_states", []), strict=False):
            built = optimizer.__dict__.get(BUILT_KERNELS)
            for group, (fused, foreach) in zip(state["param_groups"], built or [], strict=False):  # (groups added
                # after fusing keep their flags)
                group["fused"], group["foreach"] = fused, foreach

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if batch_idx == 0 and self.fused:  # after every epoch-start hook: an optimizer built there (a Born-Again
            self._fuse(trainer)  # generation's) steps fused too
        if "reduce-overhead" in self._mode(pl_module.device):  # a new step: the last one's graph outputs may go
            torch.compiler.cudagraph_mark_step_begin()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            pl_module.__dict__.pop("training_losses", None)
            kept = self.__dict__.pop("_kept_drop_last", None)
            if kept is not None:
                kept[0].drop_last_train = kept[1]
