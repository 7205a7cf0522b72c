"""Born-Again Networks (Furlanello et al. 2018): a student learns from a frozen copy of its predecessor.

:class:`BornAgain` trains one generation at a time. On its own it is one born-again step (a student
distilled from a given teacher, or generation 0 from labels). With the
:class:`~lightning_kd.callbacks.Generations` callback one ``fit`` runs the whole sequence: at each
boundary the callback calls :meth:`BornAgain.promote`, which freezes the student as the next
teacher and gives the next generation fresh weights.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.cli import OptimizerCallable
from torch import Tensor, nn

from lightning_kd.checkpoints import build_network
from lightning_kd.data.base import Batch
from lightning_kd.errors import Refusal
from lightning_kd.losses import DEFAULT_SMOOTHING_CONVENTION, BornAgainLoss, BornAgainLossName, SmoothingConvention
from lightning_kd.models.base import reinitialize
from lightning_kd.models.inheritance import InheritSpec
from lightning_kd.models.inheritance import inherit_layers as inherit_layers_into
from lightning_kd.naming import join_variants
from lightning_kd.optim import SGD, ScheduleSpec
from lightning_kd.tasks.distillation import DistillationTask

GENERATION_KEY = "born_again"
"""Checkpoint entry recording which generation a checkpoint belongs to."""


def generation_seed(generation: int) -> int:
    """Seed of generation ``generation``'s initial weights: a function of the run's seed and the generation.

    The same on every DDP rank (so no broadcast is needed) and different for every generation. The
    run's seed is the one ``seed_everything`` (the CLI's ``seed_everything``) set, or 0.
    """
    base = int(os.environ.get("PL_GLOBAL_SEED", 0))
    return (base * 1_000_003 + 7_919 * (generation + 1)) % 2**63


class BornAgain(DistillationTask):
    """One Born-Again generation, and the state the :class:`~lightning_kd.callbacks.Generations` callback advances.

    Generation 0 learns from labels (cross-entropy); unless a teacher is given, in which case the
    teacher *is* generation 0 and training starts at generation 1. Every later generation learns
    from its frozen predecessor with ``loss``:

    * ``"ban"``: ``-(softmax(zt) * log_softmax(zs)).sum(1).mean()``, the teacher only, ``T = 1``;
    * ``"ban+l"``: BAN + ``CE(zs, y)``, an unweighted sum (logged as ``kd`` and ``ce``);
    * ``"cwtm"``: label cross-entropy with each sample weighted by the teacher's top probability
      (normalised to sum to 1 over the batch);
    * ``"dkpp"``: BAN against the teacher's softmax with its non-argmax entries permuted per sample,
      redrawn each step;
    * ``"kd"``: Hinton's ``(1 - alpha) CE + alpha T^2 KL`` (not in the paper): with a list of networks
      it is vanilla KD from a teacher trained in the same run.

    Args:
        student: The network of every generation, or a list: the first entry is the first generation
            trained, the next the one after, the last repeats (e.g. ``[wide, small]``: a wide
            generation 0, then small born-again students).
        teacher: A trained generation 0 (optional).
        teacher_ckpt: Its weights (optional; with a CLI checkpoint, no ``teacher`` network is needed).
        loss: ``"ban"``, ``"ban+l"``, ``"cwtm"``, ``"dkpp"`` or ``"kd"``.
        alpha: For ``loss="kd"`` only: weight of the distillation term (Hinton's convention; default 0.9).
        temperature: For ``loss="kd"`` only: softmax temperature (default 4); the paper's losses use ``T = 1``.
        label_smoothing: Smoothing ``eps`` of the label term, in ``[0, 1)``: generation 0's cross-entropy
            and the label term of ``"ban+l"``, ``"cwtm"`` and ``"kd"`` (``"ban"`` and ``"dkpp"`` have none).
        smoothing_convention: ``"uniform"`` or ``"others"`` (see :class:`~lightning_kd.tasks.Classifier`).
        optimizer: See :class:`~lightning_kd.tasks.base.BaseTask`; rebuilt for every generation.
        lr_scheduler: See :class:`~lightning_kd.tasks.base.BaseTask`; restarts every generation and
            spans that generation's epochs.
        inherit_layers: Layers of its teacher each generation copies in and keeps frozen (the paper's students of
            another architecture share the teacher's stem and classifier); generation 0, which has no teacher,
            trains them. See :class:`~lightning_kd.tasks.DistillationTask`.

    Attributes:
        generation: The generation being trained.
        first_generation: 0, or 1 when a teacher was given.

    Example:
        >>> from lightning_kd.models import MLP
        >>> task = BornAgain(MLP((1, 8, 8), hidden_sizes=(16,), num_classes=10), loss="ban+l")
        >>> task.generation, task.teacher
        (0, None)
        >>> task.promote()  # same architecture: the student is re-initialised in place
        False
        >>> task.generation, task.teacher.training, next(task.teacher.parameters()).requires_grad
        (1, False, False)
    """

    teacher_required = False

    def __init__(
        self,
        student: nn.Module | list[nn.Module],
        teacher: nn.Module | None = None,
        teacher_ckpt: str | Path | None = None,
        loss: BornAgainLossName = "ban",
        alpha: float | None = None,
        temperature: float | None = None,
        label_smoothing: float = 0.0,
        smoothing_convention: SmoothingConvention = DEFAULT_SMOOTHING_CONVENTION,
        optimizer: OptimizerCallable = SGD,
        lr_scheduler: ScheduleSpec = "cosine",
        inherit_layers: InheritSpec = None,
    ) -> None:
        super().__init__(student, teacher, teacher_ckpt, optimizer, lr_scheduler,  # type: ignore[arg-type]
                         inherit_layers=inherit_layers)

    def configure_losses(self) -> None:
        self.criterion = BornAgainLoss(self.hparams["loss"], self.hparams["alpha"], self.hparams["temperature"],
                                       self.label_smoothing())

    def configure_models(  # type: ignore[override]
        self,
        student: nn.Module | list[nn.Module] | tuple[nn.Module, ...] | None,
        teacher: nn.Module | None,
        teacher_ckpt: str | Path | None,
        student_ckpt: str | Path | None = None,
        inherit_layers: InheritSpec = None,
    ) -> None:
        # a list or tuple only: nn.Sequential is a network, not a list of generations
        networks = list(student) if isinstance(student, (list, tuple)) else [student]
        if not networks or any(not isinstance(net, nn.Module) for net in networks):
            raise Refusal("BornAgain needs `student`: a network, or a non-empty list of networks by generation")
        # Built in Python there is no config to rebuild from: later generations start from a copy of
        # these, re-initialised (taken now, before any training, and kept off the device)
        self._templates = [copy.deepcopy(net) for net in networks] if not self._student_configs() else []
        self._num_architectures = len(networks)
        super().configure_models(networks[0], teacher, teacher_ckpt, student_ckpt, inherit_layers)
        self.first_generation = 0 if self.teacher is None else 1
        self.generation = self.first_generation
        if inherit_layers is not None and self.teacher is None:
            # generation 0 has no teacher to inherit from: check now, on a throwaway generation 1, that it will find
            # the layers and that their shapes fit, rather than after generation 0 has trained
            inherit_layers_into(self.fresh_network(1), self.student, inherit_layers)
        self.generation_epochs: dict[int, int] = {}
        """Epochs of each generation, set by the ``Generations`` callback; the LR schedule spans them."""

    # -- generations ------------------------------------------------------------------------------
    def _student_configs(self) -> list[dict[str, Any]]:
        """The student configs from the CLI (``class_path``/``init_args``), one per architecture; else empty."""
        config = self.hparams.get("student")
        configs = config if isinstance(config, list) else [config]
        if all(isinstance(c, Mapping) and "class_path" in c for c in configs):
            return [dict(c) for c in configs]
        return []

    def architecture_index(self, generation: int) -> int:
        """Which entry of ``student`` generation ``generation`` uses."""
        if generation < self.first_generation:
            raise Refusal(f"generation {generation} is the given teacher, not a trained generation")
        return min(generation - self.first_generation, self._num_architectures - 1)

    def generation_config(self, generation: int) -> dict[str, Any] | None:
        """How to build generation ``generation``'s network, when the task came from a config."""
        configs = self._student_configs()
        return configs[self.architecture_index(generation)] if configs else None

    def network_config(self, role: str) -> dict[str, Any] | None:
        # the student is this generation's architecture, the teacher the previous one's
        if role == "student":
            return self.generation_config(self.generation)
        if role == "teacher" and self.generation > self.first_generation:
            return self.generation_config(self.generation - 1)
        return super().network_config(role)

    def fresh_network(self, generation: int) -> nn.Module:
        """Generation ``generation``'s network with its own fresh random weights, on the CPU.

        The weights depend only on the run's seed and ``generation`` (see :func:`generation_seed`):
        identical on every DDP rank, different for each generation, and the global RNG is untouched.
        """
        config = self.generation_config(generation)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(generation_seed(generation))
            if config is not None:
                return build_network(config)
            return reinitialize(copy.deepcopy(self._templates[self.architecture_index(generation)]))

    def promote(self) -> bool:
        """End the current generation: the student becomes the frozen teacher, the next generation starts afresh.

        The teacher is an exact copy of the student (weights and BatchNorm statistics). When the
        architecture stays the same, the student's parameters are re-initialised in place, so a DDP
        wrapper and anything else holding them stay valid; otherwise a new network replaces it (the
        caller re-wraps it for DDP). Optimizers must be rebuilt by the caller (the callback does).

        With ``inherit_layers``, the new student then inherits them from its new teacher.

        Returns:
            Whether DDP must wrap the task anew: the student is a new module (its architecture changed), or which
            of its parameters train changed (generation 1 freezes the layers generation 0 trained).
        """
        student = self.student
        trained_before = [p.requires_grad for p in student.parameters()]
        # where the student lives and in what dtype (a "true" half precision converts the whole module)
        placement = {"device": next(student.parameters()).device, "dtype": next(student.parameters()).dtype}
        teacher = self.fresh_network(self.generation).to(**placement)
        teacher.load_state_dict(student.state_dict())
        self.set_teacher(teacher)
        self.generation += 1
        fresh = self.fresh_network(self.generation)
        replaced = self.architecture_index(self.generation) != self.architecture_index(self.generation - 1)
        if replaced:
            self.student = fresh.to(**placement)
        else:
            student.load_state_dict(fresh.state_dict())
        self.inherit_teacher_layers()
        return replaced or [p.requires_grad for p in self.student.parameters()] != trained_before

    def restore_generation(self, generation: int) -> None:
        """Rebuild the networks of ``generation`` (weights to be loaded after): used when resuming."""
        if generation == self.generation:
            return
        if generation < self.first_generation:
            raise Refusal(f"cannot restore generation {generation}: this run starts at {self.first_generation}")
        if self.architecture_index(generation) != self.architecture_index(self.generation):
            self.student = self.fresh_network(generation)
        if generation > self.first_generation:
            self.set_teacher(self.fresh_network(generation - 1))
        self.generation = generation
        self.inherit_teacher_layers()  # which layers are frozen; their weights are the checkpoint's, loaded next

    # -- training ---------------------------------------------------------------------------------
    def training_losses(self, batch: Batch) -> tuple[dict[str, Tensor], Tensor]:
        logits = self.student(batch["input"])
        if self.teacher is None:  # generation 0 learns from labels
            return {"loss": self.criterion.label_smoothing(logits, batch["target"])}, logits
        (teacher,) = self.teacher_outputs(batch)
        return self.criterion(logits, teacher.logits, batch["target"]), logits

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        self.log("generation", float(self.generation), on_step=False, on_epoch=True, sync_dist=True)

    @classmethod
    def run_variant(cls, arguments: dict[str, Any]) -> str | None:
        loss = arguments.get("loss", "ban")
        alpha, temperature = arguments.get("alpha"), arguments.get("temperature")
        own = str(loss) if loss != "kd" else "kd" + (f"-T{temperature:g}" if temperature is not None else "") + (
            f"-alpha{alpha:g}" if alpha is not None else "")
        return join_variants(own, super().run_variant(arguments))

    def plan_generations(self, epochs: Mapping[int, int]) -> None:
        """Take the epochs of each generation (from the ``Generations`` callback): each one's schedule spans its own."""
        self.generation_epochs = dict(epochs)

    def progress_items(self) -> dict[str, str]:
        last = max(self.generation_epochs, default=self.generation)
        return {"generation": f"{self.generation}/{last}"}

    def schedule_epochs(self) -> int | None:
        return self.generation_epochs.get(self.generation) or super().schedule_epochs()

    # -- checkpoints ------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint[GENERATION_KEY] = {"generation": self.generation, "first_generation": self.first_generation}

    def get_extra_state(self) -> dict[str, int]:
        # in the state dict itself, so every way of loading one (resume, load_from_checkpoint, the
        # weights ddp_spawn hands back to the main process) first rebuilds the right generation
        return {"generation": self.generation, "first_generation": self.first_generation}

    def set_extra_state(self, state: dict[str, int]) -> None:
        # torch calls this before it loads the submodules' weights
        if int(state["first_generation"]) != self.first_generation:
            raise Refusal(
                f"these weights come from a run whose first trained generation is {state['first_generation']}, "
                f"this task's is {self.first_generation} (a teacher was given to one and not the other)"
            )
        self.restore_generation(int(state["generation"]))
