"""Frozen teachers: one container for one teacher or several, with every teacher rule in one place.

Rules, for every member: no gradient (``requires_grad`` off, forward under ``torch.no_grad()``; not
``inference_mode``, whose tensors cannot be saved for the student's backward), eval mode whatever
``train()`` the task receives (BatchNorm keeps its running statistics), and left out of DDP by the
task that holds the container.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from lightning_kd.checkpoints import CheckpointError, build_network, load_network_and_config
from lightning_kd.models.taps import LayerSpec, NetworkOutput, forward_with_taps

TeacherSpec = nn.Module | list[nn.Module] | None
"""A teacher network, a list of them, or none (a checkpoint may also hold a network's ``class_path`` config)."""
# Typed with str, not Path: jsonargparse writes the None entries of a list[str | Path | None] back as the
# string "None", and checkpoints would then name a file "None". Path objects work all the same.
CheckpointSpec = list[str | None] | str | None
"""A teacher checkpoint path, a list of them (``None`` where a teacher has only a network), or none."""


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

    def __init__(self, networks: Sequence[nn.Module] = (), configs: Sequence[dict | None] = ()) -> None:
        super().__init__({teacher_role(i): network for i, network in enumerate(networks)})
        self.configs: list[dict | None] = list(configs) or [None] * len(networks)
        """How to build each teacher given (``class_path``/``init_args``), where known."""

    def __setitem__(self, role: str, network: nn.Module) -> None:
        super().__setitem__(role, freeze(network))

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
        results = []
        for role, network in self.items():
            wanted = layers.get(role, ()) if isinstance(layers, Mapping) else layers
            output = forward_with_taps(network, x, wanted)
            results.append(NetworkOutput(output.logits.detach(), {k: v.detach() for k, v in output.features.items()}))
        return results

    @classmethod
    def load(cls, teacher: TeacherSpec, teacher_ckpt: CheckpointSpec) -> Teachers:
        """Resolve teachers given as networks, checkpoints, or both (one checkpoint per network).

        A checkpoint written by a CLI run records how to build its network, so it needs no network.

        A teacher network may also be given as its ``class_path``/``init_args`` config (how a task's
        checkpoint records its teachers, whose weights it holds itself).

        Raises:
            ValueError: The two lists differ in length, or a teacher has neither network nor checkpoint.
            CheckpointError: A checkpoint is missing, corrupt, or does not fit; the message names the teacher.
        """
        networks = _as_list(teacher)
        checkpoints = _as_list(teacher_ckpt)
        if networks and checkpoints and len(networks) != len(checkpoints):
            raise ValueError(
                f"{len(networks)} teacher networks but {len(checkpoints)} teacher checkpoints; give one checkpoint "
                "per teacher network (null for a teacher without one)"
            )
        count = max(len(networks), len(checkpoints))
        networks += [None] * (count - len(networks))
        checkpoints += [None] * (count - len(checkpoints))
        loaded, configs = [], []
        for index, (network, checkpoint) in enumerate(zip(networks, checkpoints, strict=True)):
            role = teacher_role(index)
            config = dict(network) if isinstance(network, Mapping) else None
            if config is not None:
                network = build_network(config)
            if checkpoint is not None:
                try:
                    network, recorded = load_network_and_config(checkpoint, network)
                except CheckpointError as error:
                    raise CheckpointError(f"{role}: {error}") from error
                config = config or recorded
            if network is None:
                raise ValueError(f"{role} has neither a network (`teacher`) nor a checkpoint (`teacher_ckpt`)")
            loaded.append(network)
            configs.append(config)
        return cls(loaded, configs)


def _as_list(value: object) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]
