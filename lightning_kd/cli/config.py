"""What the command line adds to a parsed config before it runs: the data's sizes, the W&B run's organisation."""

from __future__ import annotations

import importlib
import inspect
import json
from pathlib import Path
from typing import Any

from jsonargparse import Namespace
from torch import nn

from lightning_kd.checkpoints import CHECKPOINT_KEY, read_checkpoint
from lightning_kd.errors import Refusal
from lightning_kd.loggers import WandbLogger as KDWandbLogger


def import_object(path: str) -> Any:
    """The object a dotted ``class_path`` names (the parsed config holds full paths)."""
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _data_facts(data_config: Namespace | None) -> dict[str, Any]:
    """``num_classes`` / ``input_shape`` (or ``vocab_size``) of the configured data, if its module says them before
    loading."""
    if data_config is None or not data_config.get("class_path"):
        return {}
    data_class = import_object(data_config.class_path)
    facts: dict[str, Any] = {}
    if callable(getattr(data_class, "data_facts", None)):
        init_args = data_config.get("init_args")
        declared = data_class.data_facts(**(init_args.as_dict() if init_args is not None else {}))
    else:  # any LightningDataModule: class attributes, where it has them
        declared = {name: getattr(data_class, name, None) for name in ("num_classes", "input_shape")}
    num_classes = declared.get("num_classes")
    input_shape = declared.get("input_shape")
    if isinstance(num_classes, int):
        facts["num_classes"] = num_classes
    if isinstance(input_shape, (tuple, list)) and not isinstance(declared.get("vocab_size"), int):
        facts["input_shape"] = list(input_shape)
        facts["in_channels"] = input_shape[0]
    for name in ("vocab_size", "char_vocab_size"):  # token data: language models take the vocabularies' sizes
        if isinstance(declared.get(name), int):
            facts[name] = declared[name]
    return facts


def _fill_network_config(config: Namespace, facts: dict[str, Any]) -> None:
    """Set the data's facts on a network config where the class takes them and the user kept the default.

    Networks inside it (a wrapper's ``backbone``) get them too.
    """
    network_class = import_object(config.class_path)
    if not (inspect.isclass(network_class) and issubclass(network_class, nn.Module)):
        return
    parameters = inspect.signature(network_class).parameters
    init_args = config.get("init_args") or Namespace()
    for value in vars(init_args).values():
        for inner in network_configs(value):
            _fill_network_config(inner, facts)
    for name, value in facts.items():
        if name not in parameters:
            continue
        default = parameters[name].default
        current = init_args.get(name)
        if current is None or current == default or (isinstance(default, tuple) and current == list(default)):
            init_args[name] = value
    config.init_args = init_args


def network_configs(value: Any) -> list[Namespace]:
    """Network configs found in one model argument (a config, or a list of them)."""
    if isinstance(value, Namespace) and value.get("class_path"):
        return [value]
    if isinstance(value, list):
        return [v for item in value for v in network_configs(item)]
    return []


def fill_from_data(config: Namespace) -> None:
    """Give every network config of the model the data's class count and input shape (see KDLightningCLI)."""
    facts = _data_facts(config.get("data"))
    model_args = config.model.get("init_args") if config.get("model") else None
    if not facts or model_args is None:
        return
    for value in vars(model_args).values():
        for network_config in network_configs(value):
            _fill_network_config(network_config, facts)


def complete_config(config: Namespace, subcommand: str | None) -> None:
    """What the CLI adds to a parsed config before it runs (and before --print_config shows it)."""
    fill_from_data(config)
    _organise_wandb_run(config, subcommand)


def _organise_wandb_run(config: Namespace, subcommand: str | None) -> None:
    """Name, group, job type and tags of a :class:`~lightning_kd.loggers.WandbLogger` run, where the config leaves them.

    A ``--ckpt_path`` written by a run with W&B makes ``test``/``validate``/``predict`` resume that run.
    """
    logger = config.get("trainer", Namespace()).get("logger")
    if not isinstance(logger, Namespace) or not logger.get("class_path"):
        return
    logger_class = import_object(logger.class_path)
    if not (inspect.isclass(logger_class) and issubclass(logger_class, KDWandbLogger)):
        return
    init_args = logger.get("init_args") or Namespace()
    model_class = import_object(config.model.class_path) if config.get("model") else None
    model_args = config.model.get("init_args") if config.get("model") else None
    arguments = model_args.as_dict() if isinstance(model_args, Namespace) else {}
    method = model_class.__name__.lower() if model_class is not None else "run"
    variant = model_class.run_variant(arguments) if hasattr(model_class, "run_variant") else None
    data = config.data.class_path.rsplit(".", 1)[-1].removesuffix("DataModule").lower() if config.get("data") else None
    configs = [Path(str(path)) for path in (config.get("config") or [])]
    defaults = {
        "name": "-".join(part for part in (method, variant, f"seed{config.get('seed_everything')}") if part),
        "group": configs[0].stem if configs else method,
        "job_type": subcommand,
        "tags": [tag for tag in (method, variant, data) if tag],
    }
    ckpt_path = config.get("ckpt_path")
    if subcommand != "fit" and ckpt_path and Path(ckpt_path).is_file():
        record = read_checkpoint(ckpt_path).get(CHECKPOINT_KEY, {}).get("wandb")
        if record:
            defaults["id"] = record["id"]
    for key, value in defaults.items():
        if init_args.get(key) is None:
            init_args[key] = value
    logger.init_args = init_args


# the checkpoint records its teachers itself (their weights, and how to build them) in place of teacher_ckpt
_RESTORED_FROM_CHECKPOINT = ("teacher", "teacher_ckpt")


def refuse_changed_resume(requested: Namespace, resumed: Namespace) -> None:
    """Refuse a resumed fit whose command asks the model for other settings than the checkpoint's run had.

    LightningCLI replaces the model's config with the one stored in the checkpoint; without this check
    an override such as ``--model.init_args.loss ban+l`` would be dropped without a word.
    """
    asked = _model_settings(requested)
    stored = _model_settings(resumed)
    changed = [f"{key}: {stored.get(key)!r} in the checkpoint, {asked.get(key)!r} asked"
               for key in sorted(set(asked) | set(stored)) if asked.get(key) != stored.get(key)]
    # the teacher checkpoint the run was given (the stored config no longer names it)
    model_args = requested.get("model", Namespace()).get("init_args") or Namespace()
    asked_teacher = model_args.get("teacher_ckpt")
    ckpt_path = resumed.get("ckpt_path")
    if asked_teacher is not None and ckpt_path and Path(ckpt_path).is_file():
        given = read_checkpoint(ckpt_path).get(CHECKPOINT_KEY, {}).get("teacher_ckpt")
        if given is not None and given != asked_teacher:
            changed.append(f"teacher_ckpt: {given!r} in the checkpoint, {asked_teacher!r} asked")
    # the teachers' networks: the run rebuilds them from the checkpoint's record, whatever this command asks
    asked_networks = _network_settings(model_args.get("teacher"))
    resumed_args = resumed.get("model", Namespace()).get("init_args") or Namespace()
    stored_networks = _network_settings(resumed_args.get("teacher"))
    if asked_networks is not None and stored_networks is not None and asked_networks != stored_networks:
        changed.append(f"teacher: {stored_networks!r} in the checkpoint, {asked_networks!r} asked")
    changed += _changed_data(requested, resumed.get("ckpt_path"))
    if changed:
        raise Refusal(
            f"resuming {resumed.get('ckpt_path')} continues that run, but this command changes its settings: "
            + "; ".join(changed) + ". Drop the changes to resume, or start a new run (without --ckpt_path)"
        )


# data settings that a resumed run may change: where the files are and how they are loaded
_DATA_SETTINGS_FREE_ON_RESUME = ("root", "download", "num_workers", "eval_batch_size")


def data_record(config: Namespace) -> dict[str, Any]:
    """The data module's ``class_path`` and settings in a fit's config, as the checkpoints record them."""
    data = config.get("data")
    if data is None:
        return {}
    init_args = data.get("init_args") or Namespace()
    settings = init_args.as_dict() if isinstance(init_args, Namespace) else dict(init_args)
    return {"class_path": data.get("class_path"), **settings}


def _changed_data(requested: Namespace, ckpt_path: str | None) -> list[str]:
    """How this command's data settings differ from those the checkpoint's run recorded (none if unrecorded)."""
    if not ckpt_path or not Path(ckpt_path).is_file():
        return []
    from lightning_kd.callbacks.run_record import RunRecord

    states = read_checkpoint(ckpt_path).get("callbacks", {})
    stored = next((state.get("data") for key, state in states.items() if key == RunRecord.__qualname__), None)
    if not stored:
        return []
    asked = json.loads(json.dumps(data_record(requested), default=str))
    return [f"data.{key}: {stored.get(key)!r} in the checkpoint, {asked.get(key)!r} asked"
            for key in sorted(set(asked) | set(stored))
            if key not in _DATA_SETTINGS_FREE_ON_RESUME and asked.get(key) != stored.get(key)]


def _network_settings(value: Any) -> Any:
    """A network config (or a list of them) as plain ``{"class_path", "init_args"}`` dicts; ``None`` if not one."""
    if isinstance(value, Namespace):
        value = value.as_dict()
    if isinstance(value, (list, tuple)):
        items = [_network_settings(item) for item in value]
        return None if any(item is None for item in items) else items
    if isinstance(value, dict) and "class_path" in value:
        init_args = value.get("init_args") or {}
        return {"class_path": value["class_path"],
                "init_args": init_args.as_dict() if isinstance(init_args, Namespace) else dict(init_args)}
    return None


def _model_settings(config: Namespace) -> dict[str, Any]:
    model = config.get("model")
    if model is None:
        return {}
    init_args = model.get("init_args") or model.get("dict_kwargs") or Namespace()
    settings = init_args.as_dict() if isinstance(init_args, Namespace) else dict(init_args)
    settings = {k: v for k, v in settings.items() if k not in _RESTORED_FROM_CHECKPOINT}
    return {"class_path": model.get("class_path"), **settings}
