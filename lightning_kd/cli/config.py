"""What the command line adds to a parsed config before it runs: the data's sizes, the W&B run's organisation."""

from __future__ import annotations

import importlib
import inspect
import json
from pathlib import Path
from typing import Any

from jsonargparse import Namespace
from torch import nn

from lightning_kd.checkpoints import CHECKPOINT_KEY, RESUME_FREE, read_checkpoint
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
    _move_outputs_under_root(config)
    _organise_wandb_run(config, subcommand)


# callbacks whose network-free settings change what the student is trained on: their runs are named apart
_TRAINING_CALLBACKS = {"TeacherOutputCache": "cache", "FastTeacher": "fastteacher"}


def _short_name(class_path: Any) -> str:
    return str(class_path).rsplit(".", 1)[-1].lower()


def _trained_networks(arguments: dict[str, Any]) -> str | None:
    """The trained network(s) of a task's arguments, by class (``smallcnn``; ``smallcnn+mlp`` for several)."""
    for role in ("student", "net", "peers"):
        value = arguments.get(role)
        items = value if isinstance(value, (list, tuple)) else [value]
        names = [_short_name(item["class_path"]) for item in items if isinstance(item, dict) and item.get("class_path")]
        if names:
            return "+".join(dict.fromkeys(names))
    return None


def _callback_tags(config: Namespace) -> list[str]:
    """``cache-fp16``, ``fastteacher-bf16``: the callbacks of a config that change what training sees."""
    tags = []
    for callback in config.get("trainer", Namespace()).get("callbacks") or []:
        if not isinstance(callback, Namespace) or not callback.get("class_path"):
            continue
        short = str(callback.class_path).rsplit(".", 1)[-1]
        if short in _TRAINING_CALLBACKS:
            init_args = callback.get("init_args") or Namespace()
            precision = init_args.get("precision") if isinstance(init_args, Namespace) else None
            tags.append("-".join(part for part in (_TRAINING_CALLBACKS[short], precision) if part))
    return tags


def run_identity(config: Namespace) -> dict[str, Any]:
    """The run's ``name`` (method, variant, trained network, training callbacks, seed:
    ``bornagain-ban+l-smallcnn-seed0``), its ``group`` (the config file's name) and ``tags``."""
    model_class = import_object(config.model.class_path) if config.get("model") else None
    model_args = config.model.get("init_args") if config.get("model") else None
    arguments = model_args.as_dict() if isinstance(model_args, Namespace) else {}
    method = model_class.__name__.lower() if model_class is not None else "run"
    variant = model_class.run_variant(arguments) if hasattr(model_class, "run_variant") else None
    network = _trained_networks(arguments)
    data = config.data.class_path.rsplit(".", 1)[-1].removesuffix("DataModule").lower() if config.get("data") else None
    configs = [Path(str(path)) for path in (config.get("config") or [])]
    parts = (method, variant, network, *_callback_tags(config), f"seed{config.get('seed_everything')}")
    return {"name": "-".join(part for part in parts if part), "group": configs[0].stem if configs else method,
            "tags": [tag for tag in (method, variant, network, data) if tag]}


def _move_outputs_under_root(config: Namespace) -> None:
    """``trainer.default_root_dir`` moves everything a run writes: each relative ``dirpath`` of a callback, the W&B
    folder and the predictions file are taken under it (the checkpoints a run reads stay as given)."""
    trainer = config.get("trainer") or Namespace()
    root = trainer.get("default_root_dir")
    if not root:
        return
    entries = [*(trainer.get("callbacks") or []), trainer.get("logger")]
    for entry in entries:
        init_args = entry.get("init_args") if isinstance(entry, Namespace) else None
        if not isinstance(init_args, Namespace):
            continue
        for key in ("dirpath", "save_dir", "path"):
            value = init_args.get(key)
            if isinstance(value, (str, Path)) and not Path(value).is_absolute():
                init_args[key] = str(Path(root) / value)


def runs_folder(config: Namespace) -> Path | None:
    """The folder a config's runs go into: its first ``ModelCheckpoint``'s ``dirpath`` (``None`` without one)."""
    for callback in (config.get("trainer") or Namespace()).get("callbacks") or []:
        if not isinstance(callback, Namespace) or not callback.get("class_path"):
            continue
        callback_class = import_object(callback.class_path)
        init_args = callback.get("init_args") or Namespace()
        if getattr(callback_class, "__name__", "") == "ModelCheckpoint" or any(
                base.__name__ == "ModelCheckpoint" for base in getattr(callback_class, "__mro__", ())):
            dirpath = init_args.get("dirpath") if isinstance(init_args, Namespace) else None
            return Path(dirpath) if dirpath else None
    return None


def newest_last_checkpoint(root: Path) -> Path | None:
    """The ``last*.ckpt`` of the newest run in ``root`` (its run folders, or ``root`` itself for runs written
    before run folders), ``None`` if there is none."""
    if not root.is_dir():
        return None
    found = [path for pattern in ("last*.ckpt", "*/last*.ckpt") for path in root.glob(pattern)
             if path.parent.name != "latest"]
    return max(found, key=lambda path: path.stat().st_mtime_ns, default=None)


def _organise_wandb_run(config: Namespace, subcommand: str | None) -> None:
    """Name, group, job type and tags of a :class:`~lightning_kd.loggers.WandbLogger` run, where the config leaves them.

    A ``--ckpt_path`` written by a run with W&B makes every subcommand continue that run (a resumed ``fit`` too).
    """
    logger = config.get("trainer", Namespace()).get("logger")
    if not isinstance(logger, Namespace) or not logger.get("class_path"):
        return
    logger_class = import_object(logger.class_path)
    if not (inspect.isclass(logger_class) and issubclass(logger_class, KDWandbLogger)):
        return
    init_args = logger.get("init_args") or Namespace()
    defaults = {**run_identity(config), "job_type": subcommand}
    ckpt_path = config.get("ckpt_path")
    if ckpt_path and Path(ckpt_path).is_file():
        record = read_checkpoint(ckpt_path).get(CHECKPOINT_KEY, {}).get("wandb")
        if record:
            defaults["id"] = record["id"]
    for key, value in defaults.items():
        if init_args.get(key) is None:
            init_args[key] = value
    logger.init_args = init_args


# the checkpoint records its teachers itself (their weights, and how to build them) in place of teacher_ckpt, and
# holds the weights a run started from (student_ckpt, net_ckpt, FT's paraphraser_ckpt) in place of those files
_RESTORED_FROM_CHECKPOINT = RESUME_FREE


def refuse_changed_resume(requested: Namespace, resumed: Namespace) -> None:
    """Refuse a resumed fit whose command asks the model for other settings than the checkpoint's run had.

    LightningCLI replaces the model's config with the one stored in the checkpoint; without this check
    an override such as ``--model.init_args.loss ban+l`` would be dropped without a word.
    """
    asked = _model_settings(requested)
    stored = _model_settings(resumed)
    changed = [f"{key}: {stored.get(key)!r} in the checkpoint, {asked.get(key)!r} asked"
               for key in sorted(set(asked) | set(stored)) if asked.get(key) != stored.get(key)]
    # the files of weights the run was given (the stored config no longer names them): the same ones, if asked
    model_args = requested.get("model", Namespace()).get("init_args") or Namespace()
    ckpt_path = resumed.get("ckpt_path")
    record = read_checkpoint(ckpt_path).get(CHECKPOINT_KEY, {}) if ckpt_path and Path(ckpt_path).is_file() else {}
    for key in (name for name in RESUME_FREE if name.endswith("_ckpt")):
        asked_file, given = model_args.get(key), record.get(key)
        if asked_file is not None and given is not None and given != asked_file:
            changed.append(f"{key}: {given!r} in the checkpoint, {asked_file!r} asked")
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
