"""The command line before jsonargparse reads it: shipped configs by name, composed callbacks."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from lightning_kd.catalog import shipped_configs
from lightning_kd.errors import Refusal


def resolve_config_names(args: list[str]) -> list[str]:
    """Replace a ``--config`` value that names a shipped config (``digits_ban``) by that config's path.

    A value naming an existing file is kept as it is, so a local ``configs/digits_ban.yaml`` wins; a path to a file
    that does not exist but names a shipped config is refused with the by-name form.
    """
    configs = shipped_configs()
    resolved = list(args)
    for index, arg in enumerate(resolved):
        flag, _, value = arg.partition("=")
        if flag not in ("--config", "-c"):
            continue
        if not value and index + 1 < len(resolved):
            index, value = index + 1, resolved[index + 1]
            if not Path(value).exists() and value.removesuffix(".yaml") in configs:
                resolved[index] = str(configs[value.removesuffix(".yaml")])
        elif value and not Path(value).exists() and value.removesuffix(".yaml") in configs:
            resolved[index] = f"{flag}={configs[value.removesuffix('.yaml')]}"
        _refuse_missing_config_path(value, configs)
    return resolved


def _refuse_missing_config_path(value: str, configs: dict[str, Path]) -> None:
    """A ``--config`` path that does not exist but names a shipped config (``configs/digits_ban.yaml`` outside the
    checkout): one line saying how it runs by name, rather than jsonargparse's "File does not exist"."""
    path = Path(value)
    if value and not path.exists() and path.parent != Path(".") and path.stem in configs:
        raise Refusal(f"--config {value}: no such file here; the shipped config of that name runs by name: "
                      f"--config {path.stem}")


def resolve_network_names(args: list[str]) -> list[str]:
    """Replace a network given by name to a model argument (``--model.init_args.student resnet20``, ``tv_resnet18``,
    ``timm/resnet18``) by the config that builds it (:func:`~lightning_kd.models.model_config`), as jsonargparse
    takes a network: a ``class_path`` and its ``init_args``. Only values that name a network are touched.

    Example:
        >>> resolve_network_names(["fit", "--model.init_args.student", "resnet20"])[2]
        '{"class_path": "lightning_kd.models.CifarResNet", "init_args": {"depth": 20, "widths": [16, 16, 32, 64]}}'
    """
    from lightning_kd.models import is_model_name, model_config

    resolved = list(args)
    for index, arg in enumerate(resolved):
        flag, equals, value = arg.partition("=")
        if not flag.startswith("--model.init_args.") or flag.count(".") != 2:
            continue
        if not equals:
            index, value = index + 1, resolved[index + 1] if index + 1 < len(resolved) else ""
        if value and is_model_name(value):
            text = json.dumps(model_config(value))
            resolved[index] = f"{flag}={text}" if equals else text
    return resolved


def append_later_callbacks(args: list[str], scratch: Path) -> list[str]:
    """Make a second (third, ...) ``--config`` file add its ``trainer.callbacks`` to the earlier ones.

    jsonargparse replaces a list given again; for callbacks that silently drops the first file's
    (the checkpoint callback, say). Each later file is copied to ``scratch`` without its callbacks,
    which follow it as ``--trainer.callbacks+=...`` arguments, in order.
    """
    composed: list[str] = []
    seen_config = False
    iterator = iter(args)
    for arg in iterator:
        flag, _, value = arg.partition("=")
        if flag not in ("--config", "-c"):
            composed.append(arg)
            continue
        value = value or next(iterator, "")
        path = Path(value)
        settings = yaml.safe_load(path.read_text()) if seen_config and path.is_file() else None
        trainer = settings.get("trainer") if isinstance(settings, dict) else None
        callbacks = trainer.pop("callbacks", None) if isinstance(trainer, dict) else None
        if callbacks:
            path = scratch / f"{len(composed)}-{path.name}"
            path.write_text(yaml.safe_dump(settings))
        composed += ["--config", str(path)]
        composed += [f"--trainer.callbacks+={json.dumps(callback)}" for callback in callbacks or []]
        seen_config = True
    return composed
