"""``lightning-kd``: the LightningCLI of this package.

Example:
    $ lightning-kd list                      # methods, networks and shipped configs
    $ lightning-kd fit --config digits_ban   # a shipped config, by name
    $ lightning-kd fit --config configs/digits_kd.yaml --model.init_args.temperature 2
    $ lightning-kd test --config configs/digits_kd.yaml --ckpt_path checkpoints/digits/kd-student.ckpt
"""

from __future__ import annotations

import importlib
import inspect
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import Namespace
from pytorch_lightning import LightningDataModule, Trainer
from pytorch_lightning.callbacks import ProgressBar
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from torch import nn

from lightning_kd import __version__
from lightning_kd.callbacks import Generations, PredictionWriter, RunSummary
from lightning_kd.callbacks.progress import EpochLines, KDProgressBar
from lightning_kd.catalog import shipped_configs, summary_line, task_classes
from lightning_kd.checkpoints import CHECKPOINT_KEY, read_checkpoint
from lightning_kd.compat import PlainHelpFormatter
from lightning_kd.console import quiet_known_noise
from lightning_kd.loggers import WandbLogger as KDWandbLogger
from lightning_kd.tasks import BaseTask
from lightning_kd.tasks.base import building_from_config


def import_object(path: str) -> Any:
    """The object a dotted ``class_path`` names (the parsed config holds full paths)."""
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


class LoggerSaveConfigCallback(SaveConfigCallback):
    """Write the config that ran beside the run's checkpoints, and store it in each logger's run.

    The file is ``config.yaml`` for ``fit`` and ``config-<subcommand>.yaml`` otherwise, in the
    ``ModelCheckpoint``'s folder (else the logger's, else ``default_root_dir``): each run's outputs
    folder, rather than one file every command overwrites.
    """

    def save_config(self, trainer: Trainer, pl_module: Any, stage: str) -> None:
        stage = str(getattr(stage, "value", stage))  # Lightning passes a TrainerFn
        self._pending = "config.yaml" if stage == "fit" else f"config-{stage}.yaml"
        config = yaml.safe_load(self.parser.dump(self.config, skip_none=False, format="yaml"))
        for logger in trainer.loggers:
            logger.log_hyperparams({"config": config})

    def _write(self, trainer: Trainer) -> None:
        # written once the callbacks are set up: ModelCheckpoint warns about a folder holding files at setup
        name = self.__dict__.pop("_pending", None)
        if name is not None:
            folder = _run_folder(trainer)
            folder.mkdir(parents=True, exist_ok=True)
            self.parser.save(self.config, folder / name, skip_none=False, overwrite=True, multifile=False)

    def on_fit_start(self, trainer: Trainer, pl_module: Any) -> None:
        self._write(trainer)

    def on_validation_start(self, trainer: Trainer, pl_module: Any) -> None:
        self._write(trainer)

    def on_test_start(self, trainer: Trainer, pl_module: Any) -> None:
        self._write(trainer)

    def on_predict_start(self, trainer: Trainer, pl_module: Any) -> None:
        self._write(trainer)


def _run_folder(trainer: Trainer) -> Path:
    checkpoint = trainer.checkpoint_callback
    if checkpoint is not None and getattr(checkpoint, "dirpath", None):
        return Path(checkpoint.dirpath)
    return Path(trainer.log_dir or trainer.default_root_dir)


def _data_facts(data_config: Namespace | None) -> dict[str, Any]:
    """``num_classes`` / ``input_shape`` of the configured data, if its module says them before loading."""
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
    if isinstance(input_shape, (tuple, list)):
        facts["input_shape"] = list(input_shape)
        facts["in_channels"] = input_shape[0]
    return facts


def _fill_network_config(config: Namespace, facts: dict[str, Any]) -> None:
    """Set the data's facts on a network config where the class takes them and the user kept the default."""
    network_class = import_object(config.class_path)
    if not (inspect.isclass(network_class) and issubclass(network_class, nn.Module)):
        return
    parameters = inspect.signature(network_class).parameters
    init_args = config.get("init_args") or Namespace()
    for name, value in facts.items():
        if name not in parameters:
            continue
        default = parameters[name].default
        current = init_args.get(name)
        if current is None or current == default or (isinstance(default, tuple) and current == list(default)):
            init_args[name] = value
    config.init_args = init_args


def _network_configs(value: Any) -> list[Namespace]:
    """Network configs found in one model argument (a config, or a list of them)."""
    if isinstance(value, Namespace) and value.get("class_path"):
        return [value]
    if isinstance(value, list):
        return [v for item in value for v in _network_configs(item)]
    return []


def _fill_from_data(config: Namespace) -> None:
    """Give every network config of the model the data's class count and input shape (see KDLightningCLI)."""
    facts = _data_facts(config.get("data"))
    model_args = config.model.get("init_args") if config.get("model") else None
    if not facts or model_args is None:
        return
    for value in vars(model_args).values():
        for network_config in _network_configs(value):
            _fill_network_config(network_config, facts)


def _complete_config(config: Namespace, subcommand: str | None) -> None:
    """What the CLI adds to a parsed config before it runs (and before --print_config shows it)."""
    _fill_from_data(config)
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


class KDArgumentParser(LightningArgumentParser):
    """The CLI's parser: help in plain text, network arguments listing this package's networks only."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", PlainHelpFormatter)
        super().__init__(*args, **kwargs)


class KDLightningCLI(LightningCLI):
    """LightningCLI for distillation: networks get the data's class count and input shape.

    Any network given to the model (``class_path``/``init_args``) whose constructor takes
    ``num_classes``, ``in_channels`` or ``input_shape`` receives the data module's value unless the
    config sets another one (then the task refuses the mismatch before training). A rich progress
    bar (one line per epoch when the output is not a terminal) and a
    :class:`~lightning_kd.callbacks.RunSummary` are added to every run.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("parser_class", KDArgumentParser)
        kwargs.setdefault("model_class", BaseTask)
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("datamodule_class", LightningDataModule)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("save_config_callback", LoggerSaveConfigCallback)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True, "save_to_log_dir": False})
        kwargs.setdefault("seed_everything_default", 0)
        kwargs.setdefault("auto_configure_optimizers", False)
        super().__init__(*args, **kwargs)

    def parse_arguments(self, parser: Any, args: Any) -> None:
        # --print_config prints what will run: the networks' sizes filled in from the data first (jsonargparse
        # would print before that). With flags (--print_config=skip_default) jsonargparse prints as it does.
        argv = list(sys.argv[1:] if args is None else args) if not isinstance(args, (dict, Namespace)) else None
        if argv is None or "--print_config" not in argv:
            super().parse_arguments(parser, args)
            return
        self.config = parser.parse_args([arg for arg in argv if arg != "--print_config"])
        subcommand = self.config.get("subcommand")
        _complete_config(self.config[subcommand] if subcommand else self.config, subcommand)
        dumped = yaml.safe_load(parser.dump(self.config, skip_none=False, skip_validation=True))
        print(yaml.safe_dump(dumped[subcommand] if subcommand else dumped, sort_keys=False), end="")
        raise SystemExit(0)

    def before_instantiate_classes(self) -> None:
        _complete_config(self.config[self.subcommand] if self.subcommand else self.config, self.subcommand)

    def instantiate_classes(self) -> None:
        with building_from_config():
            super().instantiate_classes()
        self._check_saved_network_configs()

    def _check_saved_network_configs(self) -> None:
        # checkpoints rebuild the networks from the configs the task saved: refuse to train without them
        config = self.config[self.subcommand] if self.subcommand else self.config
        model_args = config.model.get("init_args") if config.get("model") else None
        for name, value in vars(model_args or Namespace()).items():
            if _network_configs(value) and not self.model.hparams.get(name):
                raise RuntimeError(
                    f"the task did not save the config of `{name}`, so its checkpoints could not rebuild that "
                    "network: this Lightning version no longer hands the parsed config to save_hyperparameters"
                )

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        config = self.config_init.get(self.subcommand, self.config_init) if self.subcommand else self.config_init
        trainer_config = config.get("trainer") or {}
        callbacks = list(trainer_config.get("callbacks") or [])
        if not any(isinstance(c, RunSummary) for c in callbacks):
            callbacks.append(RunSummary())
        if self.subcommand == "predict" and not any(isinstance(c, PredictionWriter) for c in callbacks):
            callbacks.append(PredictionWriter())  # predict writes its predictions to a file
        wants_bar = trainer_config.get("enable_progress_bar") is not False
        if wants_bar and not any(isinstance(c, ProgressBar) for c in callbacks):
            # a live bar in a terminal; in a log file (nohup, SLURM) a line per epoch
            callbacks.append(KDProgressBar() if sys.stdout.isatty() else EpochLines())
        schedule = next((c for c in callbacks if isinstance(c, Generations)), None)
        if schedule is not None and self.subcommand == "fit" and trainer_config.get("max_epochs") is None:
            # the generations set the epoch budget; giving it to the Trainer spares a "max_epochs not set" warning
            kwargs.setdefault("max_epochs", sum(schedule.plan_for(self.model).values()))
        return super().instantiate_trainer(callbacks=callbacks, **kwargs)


DESCRIPTION = """Knowledge distillation with PyTorch Lightning: one method per LightningModule, one command to run it.

Run a method:    lightning-kd fit --config digits_ban        (a shipped config by name, or any YAML file)
See what ships:  lightning-kd list [methods|networks|configs]
Version:         lightning-kd --version
Each subcommand (fit, validate, test, predict) has its own --help; --print_config shows the config that runs."""


def listing(what: str = "all") -> str:
    """The text of ``lightning-kd list``: methods, networks and/or shipped configs."""
    from lightning_kd.models import list_models

    sections = {
        "methods": [(f"lightning_kd.{cls.__name__}", summary_line(cls)) for cls in task_classes()],
        "networks": [(name, "") for name in list_models()]
        + [("tv_<name>", "any torchvision classification model (TorchvisionNetwork)"),
           ("timm_<name>", "any timm model (TimmNetwork; pip install 'lightning-kd[timm]')")],
        "configs": [(name, str(path)) for name, path in shipped_configs().items()],
    }
    if what != "all" and what not in sections:
        raise SystemExit(f"lightning-kd list: choose methods, networks or configs, not {what!r}")
    chosen = sections if what == "all" else {what: sections[what]}
    lines = []
    for title, entries in chosen.items():
        lines.append(f"{title}:")
        width = max(len(name) for name, _ in entries)
        lines += [f"  {name:<{width}}  {text}".rstrip() for name, text in entries]
    return "\n".join(lines)


def resolve_config_names(args: list[str]) -> list[str]:
    """Replace a ``--config`` value that names a shipped config (``digits_ban``) by that config's path.

    A value naming an existing file is kept as it is, so a local ``configs/digits_ban.yaml`` wins.
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


def main(args: list[str] | None = None) -> None:
    """Entry point of ``lightning-kd`` and ``python -m lightning_kd``; ``args`` default to ``sys.argv``."""
    argv = list(sys.argv[1:] if args is None else args)
    if argv[:1] == ["--version"]:
        print(f"lightning-kd {__version__}")
        return
    if argv[:1] == ["list"]:
        print(listing(argv[1] if len(argv) > 1 else "all"))
        return
    quiet_known_noise()
    with tempfile.TemporaryDirectory(prefix="lightning-kd-") as scratch:
        resolved = append_later_callbacks(resolve_config_names(argv), Path(scratch))
        if args is None:  # the process's own command line: DDP's re-launch must see the resolved paths too
            sys.argv[1:] = resolved
        KDLightningCLI(args=None if args is None else resolved, parser_kwargs={"description": DESCRIPTION})



