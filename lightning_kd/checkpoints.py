"""Reading networks out of checkpoints, and the record a task writes so that its checkpoints can be read.

A checkpoint is either one written by this package (a Lightning checkpoint whose ``lightning_kd``
entry names the network it hands on and, for CLI runs, how to build it) or a plain ``state_dict``.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from pathlib import Path, PurePath
from typing import Any

import torch
from torch import Tensor, nn

from lightning_kd.errors import Refusal

CHECKPOINT_KEY = "lightning_kd"
"""The checkpoint entry holding :func:`network_record`."""
FORMAT_VERSION = 2
"""Version 2: teachers live under ``teachers.<role>.`` in the task's state dict (version 1: ``teacher.``)."""


class CheckpointError(Refusal):
    """A checkpoint is missing, unreadable, or does not fit the network."""


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint file onto the CPU, with errors that say what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for truncated or foreign files
        raise CheckpointError(f"checkpoint {path} is corrupt or not a PyTorch checkpoint: {error}") from error
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f"checkpoint {path} holds a {type(checkpoint).__name__}, not a state dict")
    return dict(checkpoint)


def network_record(
    path: str, config: Mapping[str, Any] | None, num_classes: int | None, roles: Mapping[str, nn.Module],
    data: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What a task's checkpoint records under :data:`CHECKPOINT_KEY`.

    Args:
        path: Module path, inside the task, of the network the checkpoint hands on as a teacher.
        config: How to build that network (``class_path``/``init_args``), when known.
        num_classes: The data's class count.
        roles: Every network of the task by role, recorded with its class and size.
        data: What the network was trained on (:func:`data_identity`), when known: a student refuses a teacher
            trained on other data.
    """
    return {
        **({"data": dict(data)} if data else {}),
        "format_version": FORMAT_VERSION,
        "network": path,
        "network_config": dict(config) if config is not None else None,
        "num_classes": num_classes,
        "roles": {
            role: {"class": type(net).__name__, "parameters": sum(p.numel() for p in net.parameters())}
            for role, net in roles.items()
        },
    }


def network_state_dict(checkpoint: Mapping[str, Any], source: str = "checkpoint") -> dict[str, Tensor]:
    """The handed-on network's weights: from a lightning-kd checkpoint, or the plain state dict itself."""
    if CHECKPOINT_KEY in checkpoint:
        prefix = checkpoint[CHECKPOINT_KEY]["network"] + "."
        return {k[len(prefix) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
    if "state_dict" in checkpoint:
        raise CheckpointError(
            f"{source} is a Lightning checkpoint not written by lightning-kd; save the network's own "
            "state_dict (torch.save(net.state_dict(), path)) and load that"
        )
    if not checkpoint or not all(isinstance(v, Tensor) for v in checkpoint.values()):
        raise CheckpointError(f"{source} is neither a lightning-kd checkpoint nor a state dict of tensors")
    return dict(checkpoint)


def build_network(config: Mapping[str, Any]) -> nn.Module:
    """Instantiate a network from its ``{"class_path": ..., "init_args": {...}}`` config."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--network", type=nn.Module)
    parsed = parser.parse_object({"network": dict(config)})
    return parser.instantiate_classes(parsed).network


def load_network(path: str | Path, network: nn.Module | None = None) -> nn.Module:
    """Load a network's weights from ``path``, building the network from the checkpoint if not given.

    Args:
        path: A checkpoint written by this package, or a plain ``state_dict``.
        network: The network to load into. May be omitted for checkpoints of CLI runs, which
            record how to build their network.

    Raises:
        CheckpointError: The file is missing or corrupt, holds no network config while ``network``
            is omitted, or its weights do not fit the network (missing/unexpected keys, shapes).

    Example:
        >>> import tempfile, torch
        >>> from lightning_kd.models import SmallCNN
        >>> net = SmallCNN(num_classes=10)
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     torch.save(net.state_dict(), f"{tmp}/net.pt")
        ...     copy = load_network(f"{tmp}/net.pt", SmallCNN(num_classes=10))
        >>> all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), copy.state_dict().values()))
        True
    """
    return load_network_and_config(path, network)[0]


def load_network_and_config(path: str | Path, network: nn.Module | None = None) -> tuple[nn.Module, dict | None]:
    """:func:`load_network`, also returning how to build the network when the checkpoint records it."""
    network, config, _ = load_network_config_and_data(path, network)
    return network, config


def load_network_config_and_data(path: str | Path, network: nn.Module | None = None
                                 ) -> tuple[nn.Module, dict | None, dict | None]:
    """:func:`load_network_and_config`, also returning the data the checkpoint says its network was trained on."""
    checkpoint = read_checkpoint(path)
    state_dict = network_state_dict(checkpoint, source=f"checkpoint {path}")
    config = checkpoint.get(CHECKPOINT_KEY, {}).get("network_config")
    if network is None:
        if config is None:
            raise CheckpointError(
                f"checkpoint {path} does not record how to build its network (a plain state dict, or a "
                "module built outside the CLI); pass the network as well"
            )
        network = build_network(config)
    load_weights(network, state_dict, source=f"checkpoint {path}")
    return network, config, checkpoint.get(CHECKPOINT_KEY, {}).get("data")


def load_weights(network: nn.Module, state_dict: Mapping[str, Tensor], source: str = "checkpoint") -> None:
    """``network.load_state_dict(state_dict)`` with one readable error for every kind of misfit."""
    own = network.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    mismatched = [
        f"{k}: {tuple(state_dict[k].shape)} in the checkpoint, {tuple(own[k].shape)} in the network"
        for k in own
        if k in state_dict and state_dict[k].shape != own[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys {_preview(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_preview(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches {_preview(mismatched)}")
    if problems:
        raise CheckpointError(
            f"{source} does not fit {type(network).__name__}: " + "; ".join(problems)
            + " (a different architecture, or a different number of classes?)"
        )
    network.load_state_dict(state_dict)


def _preview(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return f"[{shown}{', ...' if len(items) > limit else ''}] ({len(items)} in all)"


def data_identity(datamodule: Any) -> dict[str, Any] | None:
    """The data a network is trained on, as a checkpoint records it: the data module's class and input shape.

    Example:
        >>> from lightning_kd.data import DigitsDataModule
        >>> data_identity(DigitsDataModule())
        {'class': 'DigitsDataModule', 'input_shape': [1, 8, 8]}
    """
    if datamodule is None:
        return None
    shape = getattr(datamodule, "input_shape", None)
    return {"class": type(datamodule).__name__, "input_shape": list(shape) if shape is not None else None}


def task_record(task: Any, wandb_run: dict[str, str] | None = None, data: Mapping[str, Any] | None = None
                ) -> dict[str, Any]:
    """The record a task writes into each checkpoint (:data:`CHECKPOINT_KEY`): how to hand its network on as a
    teacher (:func:`network_record`) and, when it logs to W&B, the run (``test``/``predict`` continue it).

    ``task`` is a :class:`~lightning_kd.tasks.base.BaseTask` (any module with its ``network``, ``handed_on``,
    ``network_config``, ``num_classes`` and ``networks``).
    """
    path = next(name for name, module in task.named_modules() if module is task.network)
    record = network_record(path, task.network_config(task.handed_on), task.num_classes, task.networks(), data)
    if (epochs := cosine_epochs(task)) is not None:  # a resume must keep the schedule's length
        record["schedule_epochs"] = epochs
    if wandb_run is not None:
        record["wandb"] = wandb_run
    return record


def objects_among(arguments: Mapping[str, Any]) -> list[str]:
    """Names of the arguments that are objects, not data (networks, optimizer classes).

    A task built in Python leaves them out of its saved hyperparameters, or checkpoints would pickle whole
    modules; ``load_from_checkpoint`` then takes them as arguments.

    Example:
        >>> objects_among({"student": torch.nn.Linear(1, 1), "temperature": 4.0})
        ['student']
    """
    return [name for name, value in arguments.items() if not plain(value)[0]]


def keep_plain(hparams: MutableMapping[str, Any]) -> None:
    """Keep only the data in ``hparams``, paths as strings (checkpoints then load with ``weights_only``).

    An object left (one a task takes besides its networks) is dropped: an argument of ``load_from_checkpoint``.

    Example:
        >>> from pathlib import Path
        >>> hparams = {"teacher_ckpt": Path("t.ckpt"), "head": torch.nn.Linear(1, 1)}
        >>> keep_plain(hparams)
        >>> hparams
        {'teacher_ckpt': 't.ckpt'}
    """
    for name, (is_plain, value) in [(name, plain(value)) for name, value in hparams.items()]:
        if is_plain:
            hparams[name] = value
        else:
            del hparams[name]


def plain(value: Any) -> tuple[bool, Any]:
    """``(True, value)`` for data (safe to store in a checkpoint and log; paths as strings), else ``(False, None)``.

    Example:
        >>> from pathlib import Path, PurePath
        >>> plain([1, Path("a.ckpt")]), plain(torch.nn.Linear(1, 1))
        ((True, [1, 'a.ckpt']), (False, None))
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return True, value
    if isinstance(value, PurePath):
        return True, str(value)
    if isinstance(value, (list, tuple)):
        items = [plain(v) for v in value]
        return all(ok for ok, _ in items), [v for _, v in items]
    if isinstance(value, dict):
        entries = {k: plain(v) for k, v in value.items()}
        ok = all(isinstance(k, str) and ok for k, (ok, _) in entries.items())
        return ok, {k: v for k, (_, v) in entries.items()}
    return False, None


# hyperparameters a resumed run may differ in: where weights came from (held by the checkpoint itself)
RESUME_FREE = ("teacher", "teacher_ckpt", "student_ckpt", "net_ckpt", "paraphraser_ckpt")


def cosine_epochs(task: Any) -> int | None:
    """The length of a task's cosine schedule (``None`` for another schedule): a resume must keep it."""
    return task.schedule_epochs() if getattr(task, "lr_scheduler", None) == "cosine" else None


def resume_refusal(stored: Mapping[str, Any], own: Mapping[str, Any], record: Mapping[str, Any],
                   schedule_epochs: int | None, source: str, teachers: Mapping[str, nn.Module] | None = None,
                   data: Mapping[str, Any] | None = None) -> str | None:
    """Why resuming the checkpoint ``source`` into a task of hyperparameters ``own`` would not continue its run, or
    ``None``: a method setting that differs (``stored`` are the checkpoint's, ``record`` its
    :data:`CHECKPOINT_KEY` record), a cosine schedule of another length, another teacher checkpoint, teachers of
    other classes or sizes than the checkpoint's (``teachers``, the task's now; a task that has none yet, a
    Born-Again run before its first promotion, is not compared), or other data (``data``, :func:`data_identity`).

    Example:
        >>> resume_refusal({"loss": "ban"}, {"loss": "ban+l"}, {}, None, "last.ckpt")
        "resuming last.ckpt continues that run, but this task's settings differ: loss: 'ban' in the checkpoint, \
'ban+l' here. Build the task as the run did to resume, or start a new run (student_ckpt starts from its weights)"
    """
    changed = [f"{name}: {stored[name]!r} in the checkpoint, {own[name]!r} here"
               for name in sorted(set(stored) & set(own))
               if not name.startswith("_") and name not in RESUME_FREE and plain(stored[name])[0]
               and plain(own[name])[0] and plain(stored[name])[1] != plain(own[name])[1]]
    for key in ("teacher_ckpt", "paraphraser_ckpt"):  # weights the run reads on: the same files
        given, recorded = own.get(key), record.get(key)
        if given is not None and recorded is not None and plain(given)[1] != plain(recorded)[1]:
            changed.append(f"{key}: {plain(recorded)[1]!r} in the checkpoint, {plain(given)[1]!r} here")
    if teachers:
        roles = record.get("roles", {})
        for role in sorted(name for name in roles if name.startswith("teacher")):
            then, now = roles[role], teachers.get(role)
            size = sum(p.numel() for p in now.parameters()) if now is not None else None
            if now is None or (then.get("class"), then.get("parameters")) != (type(now).__name__, size):
                here = f"{type(now).__name__} ({size:,} parameters)" if now is not None else "none"
                changed.append(f"{role}: {then.get('class')} ({then.get('parameters', 0):,} parameters) in the "
                               f"checkpoint, {here} here")
    if data and record.get("data") and plain(record["data"])[1] != plain(dict(data))[1]:
        changed.append(f"data: {record['data']} in the checkpoint, {dict(data)} here")
    stored_epochs = record.get("schedule_epochs")
    if stored_epochs is not None and schedule_epochs is not None and stored_epochs != schedule_epochs:
        changed.append(f"the cosine schedule spans {stored_epochs} epochs in the checkpoint, {schedule_epochs} here "
                       "(trainer.max_epochs): the learning rate would climb back up")
    if not changed:
        return None
    return (f"resuming {source} continues that run, but this task's settings differ: {'; '.join(changed)}. Build the "
            "task as the run did to resume, or start a new run (student_ckpt starts from its weights)")
