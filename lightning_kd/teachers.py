"""Frozen teachers: one container for one teacher or several, with every teacher rule in one place.

Rules, for every member: no gradient (``requires_grad`` off, forward under ``torch.no_grad()``; not
``inference_mode``, whose tensors cannot be saved for the student's backward), eval mode whatever
``train()`` the task receives (BatchNorm keeps its running statistics), and left out of DDP by the
task that holds the container.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn

from lightning_kd.checkpoints import CheckpointError, build_network, load_network_config_and_data, plain
from lightning_kd.errors import Refusal
from lightning_kd.losses.validation import check_choice
from lightning_kd.models.taps import LayerSpec, NetworkOutput, forward_with_taps

TeacherSpec = nn.Module | list[nn.Module] | None
"""A teacher network, a list of them, or none (a checkpoint may also hold a network's ``class_path`` config)."""
# Typed with str, not Path: jsonargparse writes the None entries of a list[str | Path | None] back as the
# string "None", and checkpoints would then name a file "None". Path objects work all the same.
CheckpointSpec = list[str | None] | str | None
"""A teacher checkpoint path, a list of them (``None`` where a teacher has only a network), or none."""


TeacherPrecision = Literal["32", "bf16", "16"]
TEACHER_PRECISIONS: tuple[str, ...] = get_args(TeacherPrecision)


@dataclass(frozen=True)
class TeacherForward:
    """How the frozen teachers' forward runs (see :class:`~lightning_kd.callbacks.FastTeacher`).

    Attributes:
        precision: The precision of the teachers' forward: ``"bf16"`` or ``"16"`` (autocast to it), ``"32"``
            (autocast off: fp32 even under a ``bf16-mixed`` or ``16-mixed`` trainer), or ``None`` (default: as the
            trainer runs, under its autocast if it has one). Their outputs are upcast to fp32 for the losses.
        channels_last: Teachers' weights and inputs in channels-last memory format.
        compile_backend: ``torch.compile`` the teachers with this backend (``"inductor"``; ``None``: eager).
    """

    precision: TeacherPrecision | None = None
    channels_last: bool = False
    compile_backend: str | None = None

    def __post_init__(self) -> None:
        if self.precision is not None:
            check_choice("teacher precision", self.precision, TEACHER_PRECISIONS)
        if self.compile_backend is not None and self.compile_backend not in torch.compiler.list_backends(
                exclude_tags=()):  # refused here, not at the first forward
            raise Refusal(f"unknown compile_backend {self.compile_backend!r}; torch.compile's backends: "
                          f"{', '.join(torch.compiler.list_backends())}")

    def autocast(self, device_type: str) -> contextlib.AbstractContextManager[Any]:
        """The context the teachers' forward runs in on ``device_type``: autocast to the precision, autocast off for
        ``"32"``, and nothing of its own (the trainer's autocast, if any) for ``None``.

        Example:
            >>> x = torch.ones(2, 2)
            >>> with torch.autocast("cpu", dtype=torch.bfloat16):
            ...     with TeacherForward().autocast("cpu"):
            ...         as_trainer = (x @ x).dtype
            ...     with TeacherForward(precision="32").autocast("cpu"):
            ...         fp32 = (x @ x).dtype
            >>> as_trainer, fp32
            (torch.bfloat16, torch.float32)
        """
        if self.precision is None:
            return contextlib.nullcontext()
        if self.precision == "32":
            return torch.autocast(device_type, enabled=False)
        return torch.autocast(device_type, dtype={"bf16": torch.bfloat16, "16": torch.float16}[self.precision])


def teacher_role(index: int) -> str:
    """Role name of the ``index``-th teacher: ``teacher``, ``teacher_2``, ``teacher_3``, ...

    Example:
        >>> [teacher_role(i) for i in range(3)]
        ['teacher', 'teacher_2', 'teacher_3']
    """
    return "teacher" if index == 0 else f"teacher_{index + 1}"


def freeze(network: nn.Module) -> nn.Module:
    """Stop gradients into ``network`` and put it in eval mode (BatchNorm uses running statistics).

    Unlike ``BaseFinetuning.freeze`` this also calls ``eval()``; :class:`Teachers` keeps it there when
    Lightning calls ``train()`` on the whole task.
    """
    network.requires_grad_(False)
    return network.eval()


class Teachers(nn.ModuleDict):
    """Frozen teachers by role (``teacher``, ``teacher_2``, ...), in the order they were given.

    Every network put in is frozen; ``train()`` leaves them all in eval mode; :meth:`outputs` runs
    them under ``torch.no_grad()``.

    Example:
        >>> from lightning_kd.models import MLP, SmallCNN
        >>> teachers = Teachers([SmallCNN(num_classes=10), MLP(num_classes=10)])
        >>> list(teachers), teachers.train().training, teachers["teacher_2"].training
        (['teacher', 'teacher_2'], False, False)
    """

    def __init__(self, networks: Sequence[nn.Module] = (), configs: Sequence[dict | None] = (),
                 trained_on: Sequence[dict | None] = ()) -> None:
        self.forward_settings = TeacherForward()
        self._compiled: dict[str, Any] = {}
        super().__init__({teacher_role(i): network for i, network in enumerate(networks)})
        self.configs: list[dict | None] = list(configs) or [None] * len(networks)
        """How to build each teacher given (``class_path``/``init_args``), where known."""
        self.trained_on: list[dict | None] = list(trained_on) or [None] * len(networks)
        """The data each teacher's checkpoint says it was trained on (``checkpoints.data_identity``), where known."""

    def __setitem__(self, role: str, network: nn.Module) -> None:
        trained_on = getattr(self, "trained_on", None)
        if trained_on is not None:  # a network put in later (a promotion) was trained here: nothing to check
            position = list(self).index(role) if role in self else len(trained_on)
            trained_on[position:position + 1] = [None]
        super().__setitem__(role, freeze(network))
        self._prepare(role)

    def configure_forward(self, settings: TeacherForward) -> None:
        """Run the teachers' forward as ``settings`` say (autocast precision, channels-last, compiled)."""
        self.forward_settings = settings
        for role in self:
            self._prepare(role)

    def _prepare(self, role: str) -> None:
        settings, network = self.forward_settings, self[role]
        if settings.channels_last:
            network.to(memory_format=torch.channels_last)
        self._compiled.pop(role, None)
        if settings.compile_backend is not None:  # logits-only calls; tapped calls run the modules eagerly
            self._compiled[role] = torch.compile(network, backend=settings.compile_backend)

    def train(self, mode: bool = True) -> Teachers:
        # Lightning calls train() on the whole task at each epoch start; teachers stay in eval mode
        return super().train(False)

    @torch.no_grad()
    def outputs(self, x: Tensor, layers: LayerSpec | Mapping[str, LayerSpec] = ()) -> list[NetworkOutput]:
        """Every teacher's logits (and tapped features), detached, in role order.

        Args:
            x: The input batch.
            layers: Layers to tap in every teacher, or a mapping from role to that teacher's layers.
        """
        settings = self.forward_settings
        if settings.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        results = []
        for role, network in self.items():
            wanted = layers.get(role, ()) if isinstance(layers, Mapping) else layers
            with settings.autocast(x.device.type):
                if not wanted and role in self._compiled:
                    output = NetworkOutput(self._compiled[role](x))
                else:
                    output = forward_with_taps(network, x, wanted)
            # what the losses get is fp32 (and contiguous) whatever precision the teacher ran in
            results.append(NetworkOutput(output.logits.detach().float(),
                                         {k: v.detach().float().contiguous() for k, v in output.features.items()}))
        return results

    @classmethod
    def load(cls, teacher: TeacherSpec, teacher_ckpt: CheckpointSpec) -> Teachers:
        """Resolve teachers given as networks, checkpoints, or both (one checkpoint per network).

        A checkpoint written by a CLI run records how to build its network, so it needs no network.

        A teacher network may also be given as its ``class_path``/``init_args`` config (how a task's
        checkpoint records its teachers, whose weights it holds itself).

        Raises:
            Refusal: The two lists differ in length, or a teacher has neither network nor checkpoint.
            CheckpointError: A checkpoint is missing, corrupt, or does not fit; the message names the teacher.
        """
        networks = _one_or_many(teacher)
        checkpoints = _one_or_many(teacher_ckpt)
        if networks and checkpoints and len(networks) != len(checkpoints):
            raise Refusal(
                f"{len(networks)} teacher networks but {len(checkpoints)} teacher checkpoints; give one checkpoint "
                "per teacher network (null for a teacher without one)"
            )
        count = max(len(networks), len(checkpoints))
        networks += [None] * (count - len(networks))
        checkpoints += [None] * (count - len(checkpoints))
        loaded, configs, trained_on = [], [], []
        for index, (network, checkpoint) in enumerate(zip(networks, checkpoints, strict=True)):
            role = teacher_role(index)
            config = dict(network) if isinstance(network, Mapping) else None
            if config is not None:
                network = build_network(config)
            data = None
            if checkpoint is not None:
                try:
                    network, recorded, data = load_network_config_and_data(checkpoint, network)
                except CheckpointError as error:
                    raise CheckpointError(f"{role}: {error}") from error
                config = config or recorded
            if network is None:
                raise Refusal(f"{role} has neither a network (`teacher`) nor a checkpoint (`teacher_ckpt`)")
            loaded.append(network)
            configs.append(config)
            trained_on.append(data)
        return cls(loaded, configs, trained_on)

    def check_trained_on(self, data: dict | None) -> None:
        """Refuse a teacher whose checkpoint says it was trained on other data than ``data`` (both named)."""
        for role, recorded in zip(self, self.trained_on, strict=False):
            if not recorded or not data:
                continue
            differences = []
            for key in ("class", "input_shape"):
                there, here = recorded.get(key), data.get(key)
                if there is not None and here is not None and plain(there)[1] != plain(here)[1]:
                    differences.append(f"{key} {plain(there)[1]} there, {plain(here)[1]} here")
            if differences:
                raise Refusal(
                    f"{role} was trained on other data than this run's ({'; '.join(differences)}): it would teach "
                    "what it never learned. Train a teacher on this data, or, if this is intended, give its weights "
                    "as a plain state dict (torch.save(network.state_dict(), path)), which records no data")


def _one_or_many(value: object) -> list:
    """A teacher argument as a list: ``None`` is none, a list or tuple its entries, anything else one entry."""
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]
