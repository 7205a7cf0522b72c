"""``lightning-kd``: the LightningCLI of this package, and its entry point.

Example:
    $ lightning-kd list                      # methods, networks and shipped configs
    $ lightning-kd fit --config digits_ban   # a shipped config, by name
    $ lightning-kd fit --config configs/digits_kd.yaml --model.init_args.temperature 2
    $ lightning-kd test --config digits_kd --ckpt_path checkpoints/digits_kd/latest/kd-student.ckpt
"""

from __future__ import annotations

import copy
import inspect
import os
import re
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any, ClassVar, NoReturn

import yaml
from jsonargparse import Namespace
from pytorch_lightning import LightningDataModule, Trainer
from pytorch_lightning.callbacks import ProgressBar
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from pytorch_lightning.utilities.exceptions import MisconfigurationException

from lightning_kd import __version__
from lightning_kd.callbacks import Generations, OutputLock, PredictionWriter, RunSummary
from lightning_kd.callbacks.progress import EpochLines, KDProgressBar
from lightning_kd.callbacks.run_folder import RunFolder
from lightning_kd.callbacks.run_record import RunRecord
from lightning_kd.checkpoint_io import check_checkpoint_to_read
from lightning_kd.cli.arguments import append_later_callbacks, resolve_config_names, resolve_network_names
from lightning_kd.cli.config import (
    complete_config,
    data_record,
    fill_from_data,
    network_configs,
    newest_last_checkpoint,
    refuse_changed_resume,
    run_identity,
    runs_folder,
)
from lightning_kd.cli.listing import listing
from lightning_kd.cli.save_config import LoggerSaveConfigCallback
from lightning_kd.compat import PlainHelpFormatter
from lightning_kd.console import quiet_evaluation_noise, quiet_known_noise
from lightning_kd.errors import NonFiniteLossError, Refusal
from lightning_kd.loggers import finish_failed_wandb_run
from lightning_kd.tasks import BaseTask


def _section(config: Any, subcommand: str | None) -> Any:
    """The part of a parsed (or dumped) config that belongs to the subcommand."""
    return config[subcommand] if subcommand else config


def defaults_not_given(init: Any, defaults: dict[str, Any], args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` with ``defaults`` for the arguments given neither by name nor by position to ``init``."""
    positional = list(inspect.signature(init).parameters)[: len(args)]
    return {**{name: value for name, value in defaults.items() if name not in positional}, **kwargs}


class KDArgumentParser(LightningArgumentParser):
    """The CLI's parser: help in plain text, network arguments listing this package's networks only.

    A value that does not parse is reported in a few lines: a one-line usage (``--help`` has the
    rest) and the error itself, with jsonargparse's union-of-subclasses wrapping reduced to the
    class whose argument failed.
    """

    DEFAULTS: ClassVar[dict[str, Any]] = {"formatter_class": PlainHelpFormatter}  # over LightningArgumentParser's

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **defaults_not_given(super().__init__, self.DEFAULTS, args, kwargs))

    def print_usage(self, file: Any = None) -> None:
        # the full usage of a LightningCLI subcommand runs to some 50 lines before the error
        print(f"usage: {self.prog} [options]  (--help lists them)", file=file or sys.stdout)

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        condensed = condense_parse_error(message)
        if "Expected a dot import path string" in condensed:  # a network (or class) given by a name it lacks
            condensed += " (a network is a class_path, or a name `lightning-kd list networks` prints)"
        super().error(condensed, ex)


def condense_parse_error(message: str) -> str:
    """jsonargparse's error for a bad value, without the union wrapping, the reason kept.

    Example:
        >>> print(condense_parse_error('''Parser key "model":
        ...   Does not validate against any of the Union subtypes
        ...   Subtypes: [BaseTask, NoneType]
        ...   Errors:
        ...     - Problem with given class_path 'lightning_kd.VanillaKD':
        ...         Parser key "temperature":
        ...           Expected a float. Got value: abc
        ...     - Expected a NoneType
        ...   Given value type: NestedArg'''))
        Parser key "model" (lightning_kd.VanillaKD): Parser key "temperature": Expected a float. Got value: abc
        >>> print(condense_parse_error('''Parser key "temperature":
        ...   Does not validate against any of the Union subtypes
        ...   Subtypes: [<class 'float'>, <class 'NoneType'>]
        ...   Errors:
        ...     - Expected a <class 'float'>
        ...     - Expected a <class 'NoneType'>
        ...   Given value type: <class 'str'>
        ...   Given value: inf'''))
        Parser key "temperature": expected float or None, got 'inf' (YAML writes infinity as .inf)
    """
    if "Does not validate against any of the Union subtypes" not in message:
        return message
    lines = message.splitlines()
    problem = next((i for i, line in enumerate(lines) if "Problem with given class_path" in line), None)
    if problem is None:
        return _condense_union(lines)
    class_path = re.search(r"class_path '([^']+)'", lines[problem])
    indent = len(lines[problem]) - len(lines[problem].lstrip())
    block = []
    for line in lines[problem + 1 :]:  # the class_path's own error: the lines indented under it
        if line.strip() and len(line) - len(line.lstrip()) <= indent:
            break
        block.append(line)
    head = lines[0].strip().rstrip(":")
    detail = _condense_union(block) if any("Union subtypes" in line for line in block) else " ".join(
        line.strip() for line in block if line.strip())
    return f"{head} ({class_path.group(1) if class_path else '?'}): {detail}"


def _condense_union(lines: list[str]) -> str:
    """A union error (``Parser key ...: Does not validate ... Given value: x``) as one line: what was expected, what
    was given; a nested class_path problem keeps its own reason."""
    if any("Problem with given class_path" in line for line in lines):
        return condense_parse_error("\n".join(lines))
    text = "\n".join(lines)
    key = re.search(r'Parser key "([^"]+)"', text)
    subtypes = re.search(r"Subtypes: \[(.*)\]", text)
    given = re.search(r"Given value: (.*)", text)
    if key is None or subtypes is None:
        return " ".join(line.strip() for line in lines if line.strip())
    # "<class 'float'>" -> float, "list[torch.nn.modules.module.Module]" -> list[Module]
    names = [re.sub(r"\b(?:\w+\.)+(\w+)", r"\1", re.sub(r"<class '([\w.]+)'>", r"\1", item.strip()))
             for item in re.split(r",\s*(?![^\[]*\])", subtypes.group(1))]
    expected = " or ".join("None" if name == "NoneType" else name for name in names)
    value = given.group(1).strip() if given else "?"
    hint = " (YAML writes infinity as .inf)" if value.lower().lstrip("+-") in ("inf", "infinity") else ""
    return f'Parser key "{key.group(1)}": expected {expected}, got {value!r}{hint}'


class KDLightningCLI(LightningCLI):
    """LightningCLI for distillation: networks get the data's class count and input shape.

    Any network given to the model (``class_path``/``init_args``) whose constructor takes
    ``num_classes``, ``in_channels``, ``input_shape`` or (token data) ``vocab_size`` receives the
    data module's value unless the config sets another one (then the task refuses the mismatch before
    training). A rich progress bar (one line per epoch when the output is not a terminal) and a
    :class:`~lightning_kd.callbacks.RunSummary` are added to every run; an
    :class:`~lightning_kd.callbacks.OutputLock` to every fit (one live run per checkpoint folder) and a
    :class:`~lightning_kd.callbacks.PredictionWriter` to ``predict``.
    """

    DEFAULTS: ClassVar[dict[str, Any]] = {  # over LightningCLI's (the docs show them in the signature)
        "model_class": BaseTask,
        "datamodule_class": LightningDataModule,
        "save_config_callback": LoggerSaveConfigCallback,
        "save_config_kwargs": {"overwrite": True, "save_to_log_dir": False},
        "parser_class": KDArgumentParser,
        "seed_everything_default": 0,
        "subclass_mode_model": True,
        "subclass_mode_data": True,
        "auto_configure_optimizers": False,
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **defaults_not_given(super().__init__, self.DEFAULTS, args, kwargs))

    def _parse_arguments_and_print(self, parser: Any, args: Any) -> None:
        # --print_config prints what will run: the networks' sizes filled in from the data first (jsonargparse
        # would print before that). With flags (--print_config=skip_default) jsonargparse prints as it does.
        argv = list(sys.argv[1:] if args is None else args) if not isinstance(args, (dict, Namespace)) else None
        if argv is None or "--print_config" not in argv:
            super().parse_arguments(parser, args)
            return
        self.config = parser.parse_args([arg for arg in argv if arg != "--print_config"])
        subcommand = self.config.get("subcommand")
        complete_config(_section(self.config, subcommand), subcommand)
        dumped = yaml.safe_load(parser.dump(self.config, skip_none=False, skip_validation=True))
        print(yaml.safe_dump(_section(dumped, subcommand), sort_keys=False), end="")
        raise SystemExit(0)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--untrained", type=bool, default=False,
                            help="validate, test or predict with the config's freshly initialised weights, without "
                                 "--ckpt_path (refused otherwise)")

    def parse_arguments(self, parser: Any, args: Any) -> None:
        self._parse_arguments_and_print(parser, args)
        # what this command asks of the model, before LightningCLI replaces it with a checkpoint's (--ckpt_path)
        subcommand = self.config.get("subcommand")
        config = _section(self.config, subcommand)
        evaluates = subcommand in ("validate", "test", "predict")
        if evaluates and not config.get("ckpt_path") and not config.get("untrained"):
            raise Refusal(f"{subcommand} without --ckpt_path would score freshly initialised weights: give the "
                          f"checkpoint (--ckpt_path checkpoints/<config>/latest/<file>.ckpt), or --untrained true to "
                          f"{subcommand} the untrained networks")
        if subcommand == "fit" and config.get("ckpt_path") == "last":  # the newest run of this config's folder
            config.ckpt_path = str(resolve_last(config))
        self._requested = copy.deepcopy(config) if subcommand == "fit" and config.get("ckpt_path") else None
        ckpt_path = config.get("ckpt_path") if config is not None else None
        if ckpt_path and str(ckpt_path) not in ("last", "best", "hpc") and not str(ckpt_path).startswith("registry"):
            # before LightningCLI reads its hyperparameters: one line, not torch's traceback
            check_checkpoint_to_read(ckpt_path)

    def before_instantiate_classes(self) -> None:
        config = _section(self.config, self.subcommand)
        complete_config(config, self.subcommand)
        if self._requested is not None:  # compared as it would run: sizes from the data (its logger is not)
            fill_from_data(self._requested)
            refuse_changed_resume(self._requested, config)

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except Exception as error:
            # a ValueError raised by a constructor the config names (nn.Dropout's p, a scheduler's setting) is the
            # user's value: one line, the reason kept; anything else is a bug and keeps its traceback
            reason = constructor_reason(error)
            if reason is not None:
                raise Refusal(f"building the config's objects failed: {reason}") from error
            raise
        self._check_saved_network_configs()

    def _check_saved_network_configs(self) -> None:
        # checkpoints rebuild the networks from the configs the task saved: refuse to train without them
        config = _section(self.config, self.subcommand)
        model_args = config.model.get("init_args") if config.get("model") else None
        for name, value in vars(model_args or Namespace()).items():
            if network_configs(value) and not self.model.hparams.get(name):
                raise RuntimeError(
                    f"the task did not save the config of `{name}`, so its checkpoints could not rebuild that "
                    "network: this Lightning version no longer hands the parsed config to save_hyperparameters"
                )

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        config = _section(self.config_init, self.subcommand)
        trainer_config = config.get("trainer") or {}
        callbacks = list(trainer_config.get("callbacks") or [])
        if not any(isinstance(c, RunSummary) for c in callbacks):
            callbacks.append(RunSummary())
        if self.subcommand == "fit" and not any(isinstance(c, RunFolder) for c in callbacks):
            # each run in a folder of its own (a resumed one in its checkpoint's): first, before the callbacks
            # that write there look for it
            parsed = _section(self.config, self.subcommand)
            logger = parsed.get("trainer", Namespace()).get("logger")
            logger_args = logger.get("init_args") if isinstance(logger, Namespace) else None
            name = (logger_args.get("name") if isinstance(logger_args, Namespace) else None) or \
                run_identity(parsed)["name"]  # the W&B run's name, as the config (or the CLI) set it
            ckpt_path = parsed.get("ckpt_path")
            callbacks.insert(0, RunFolder(name, Path(ckpt_path).resolve().parent if ckpt_path else None))
        if self.subcommand == "fit" and not any(isinstance(c, OutputLock) for c in callbacks):
            callbacks.append(OutputLock())  # one live run per checkpoint folder
        if self.subcommand == "fit":  # the data settings, in every checkpoint: a resume is checked against them
            data = data_record(_section(self.config, self.subcommand))
            record = next((c for c in callbacks if isinstance(c, RunRecord)), None)
            if record is None:
                callbacks.append(RunRecord({"data": data}))
            else:  # one per trainer (Lightning refuses two): the config's own record keeps the data settings too
                record.record("data", data)
        if self.subcommand in {"test", "validate", "predict"}:
            quiet_evaluation_noise()  # they take a checkpoint's weights, not the fit's callback states
        if self.subcommand == "predict" and not any(isinstance(c, PredictionWriter) for c in callbacks):
            callbacks.append(PredictionWriter())  # predict writes its predictions to a file
        wants_bar = trainer_config.get("enable_progress_bar") is not False
        if wants_bar and not any(isinstance(c, ProgressBar) for c in callbacks):
            # a live bar in a terminal; in a log file (nohup, SLURM) a line per epoch
            callbacks.append(KDProgressBar() if sys.stdout.isatty() else EpochLines())
        schedule = next((c for c in callbacks if isinstance(c, Generations)), None)
        if schedule is not None and self.subcommand == "fit":
            # the generations set the epoch budget; giving it to the Trainer spares a "max_epochs not set" warning
            budget = sum(schedule.plan_for(self.model).values())
            given = trainer_config.get("max_epochs")
            if given is not None and given != budget and not trainer_config.get("fast_dev_run"):
                # refused whatever its value: Lightning's own default (1000) is no excuse to replace it
                raise Refusal(f"trainer.max_epochs is {given} but the generations take {budget} epochs; leave "
                                 f"max_epochs unset or set it to {budget}")
            kwargs.setdefault("max_epochs", budget)
        try:
            return super().instantiate_trainer(callbacks=callbacks, **kwargs)
        except Exception as error:
            if not lightning_refused(error):
                raise  # a bug (ours or a library's), with its traceback
            # an accelerator this machine lacks, devices it cannot give: the settings' fault, in one line
            raise Refusal(f"the trainer's settings: {one_line(error)}") from error


# jsonargparse's own words for a type that did not match: not the reason a constructor refused a value
_TYPE_MISMATCH = ("Not a valid subclass", "Expected a", "Does not validate", "Problem with given class_path",
                  "Subclass types expect", "a class path", "a dict with", "a dict without", "Parser key", "Given value")


def constructor_reason(error: BaseException) -> str | None:
    """Why a constructor named by the config refused its value (a ``ValueError`` or ``RuntimeError`` of torch or of a
    network), found in ``error``'s chain or inside jsonargparse's union report; ``None`` when the error is of another
    kind (a bug)."""
    chain, seen = [], set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        chain.append(error)
        error = error.__cause__ or error.__context__
    # ValueError and RuntimeError are what torch and the networks raise for a bad value; an AttributeError,
    # KeyError or TypeError there is a bug, and keeps its traceback
    if not all(isinstance(e, (ValueError, RuntimeError)) for e in chain) or any(isinstance(e, Refusal) for e in chain):
        return None
    reasons = []
    for item in chain:
        lines = [line.strip() for line in str(item).splitlines()]
        if "Does not validate against any of the Union subtypes" in str(item):  # the reasons are its "- " items
            lines = [line.removeprefix("- ").strip() for line in lines if line.startswith("- ")]
        elif item.__cause__ is not None or item.__context__ is not None:
            continue  # a wrapper: the reason is further down
        else:
            lines = lines[:1]  # a constructor's own error: its first line
        reasons += [text for text in lines if text and not text.startswith(_TYPE_MISMATCH) and text not in reasons]
    return reasons[0] if len(reasons) == 1 else None


def raised_by_lightning(error: BaseException) -> bool:
    """Whether Lightning itself raised ``error`` (its innermost frame is Lightning's code), as it does when it
    refuses a setting; a ``TypeError`` raised elsewhere on the way is a bug."""
    import lightning_fabric
    import pytorch_lightning

    frames = traceback.extract_tb(error.__traceback__)
    folders = [str(Path(package.__file__).parent) + os.sep for package in (pytorch_lightning, lightning_fabric)]
    return bool(frames) and frames[-1].filename.startswith(tuple(folders))


def lightning_refused(error: BaseException) -> bool:
    """Whether ``error`` is Lightning refusing a setting: its ``MisconfigurationException``, or a ``ValueError``,
    ``TypeError`` or ``ImportError`` that Lightning's own code raised (a ``val_check_interval`` longer than the
    epoch, devices the machine lacks, an accelerator's missing package)."""
    if isinstance(error, MisconfigurationException):
        return True
    return isinstance(error, (ValueError, TypeError, ImportError)) and raised_by_lightning(error)


def one_line(error: BaseException) -> str:
    """``error``'s message on one line (Lightning's wrap).

    Example:
        >>> one_line(ValueError("`devices` selected with `CPUAccelerator`\\n  should be an int > 0."))
        '`devices` selected with `CPUAccelerator` should be an int > 0.'
    """
    return " ".join(str(error).split())


def resolve_last(config: Namespace) -> Path:
    """``--ckpt_path last`` of a fit: the ``last`` checkpoint of the newest run in the config's runs folder.

    Lightning would look in the new run's (empty) folder, warn, and train from scratch.

    Raises:
        Refusal: There is no such checkpoint.
    """
    root = runs_folder(config)
    found = newest_last_checkpoint(root) if root is not None else None
    if found is None:
        where = str(root) if root is not None else "the run's checkpoint folder (no ModelCheckpoint dirpath is set)"
        raise Refusal(f"--ckpt_path last: no checkpoint named last in the runs of {where}, so nothing would be "
                      "resumed; give the checkpoint's path, or drop --ckpt_path to start a new run")
    return found


DESCRIPTION = """Knowledge distillation with PyTorch Lightning: one method per LightningModule, one command to run it.

Run a method:    lightning-kd fit --config digits_ban        (a shipped config by name, or any YAML file)
See what ships:  lightning-kd list [methods|networks|configs]
Make a corpus:   lightning-kd data janeausten --root data/janeausten   (from Debian's r-cran-janeaustenr)
Version:         lightning-kd --version
Each subcommand (fit, validate, test, predict) has its own --help; --print_config shows the config that runs."""


def main(args: list[str] | None = None) -> None:
    """Entry point of ``lightning-kd`` and ``python -m lightning_kd``; ``args`` default to ``sys.argv``."""
    argv = list(sys.argv[1:] if args is None else args)
    if argv[:1] == ["--version"]:
        print(f"lightning-kd {__version__}")
        return
    if argv[:1] == ["list"]:
        print(listing(argv[1] if len(argv) > 1 else "all"))
        return
    if argv[:1] == ["data"]:
        from lightning_kd.cli.data import data_command

        data_command(argv[1:])
        return
    quiet_known_noise()
    if os.getcwd() not in sys.path:  # a config's own classes (my_method.MyKD) import from the working directory,
        sys.path.append(os.getcwd())  # as under `python -m`; last, so a local file never shadows a library
    with tempfile.TemporaryDirectory(prefix="lightning-kd-") as scratch:
        resolved = append_later_callbacks(resolve_network_names(resolve_config_names(argv)), Path(scratch))
        if args is None:  # the process's own command line: DDP's re-launch must see the resolved paths too
            sys.argv[1:] = resolved
        try:
            KDLightningCLI(args=None if args is None else resolved, parser_kwargs={"description": DESCRIPTION})
        except BaseException as error:
            # W&B would record the run as finished (exit code 0): the process is still alive when the logger ends
            if not (isinstance(error, SystemExit) and error.code in (0, None)):
                refusal = find_refusal(error)
                # a refused start (not a training that diverged) leaves no empty W&B run
                finish_failed_wandb_run(2 if refusal is not None else 1,
                                        refused=refusal is not None and not isinstance(refusal, NonFiniteLossError))
            raise


DEBUG_VARIABLE = "LIGHTNING_KD_DEBUG"


def console() -> None:
    """The ``lightning-kd`` command: :func:`main`, with a refusal shown as one readable line.

    A :class:`~lightning_kd.errors.Refusal` (a bad value, a missing checkpoint, a network that does not
    fit the data, ...), wherever it was raised and however a library wrapped it, is printed as
    ``lightning-kd: error: <message>`` and the command exits with status 2; ``LIGHTNING_KD_DEBUG=1``
    shows the traceback. So is a setting Lightning refuses (:func:`lightning_refused`: an accelerator or devices
    the machine lacks, say). Any other error is a bug and keeps its traceback.
    """
    try:
        main()
    except Exception as error:
        refusal = None if os.environ.get(DEBUG_VARIABLE) else find_refusal(error)
        if refusal is None:
            raise
        print(f"lightning-kd: error: {refusal}\n(set {DEBUG_VARIABLE}=1 for the traceback)", file=sys.stderr)
        raise SystemExit(2) from None


def find_refusal(error: BaseException) -> Refusal | None:
    """The outermost :class:`~lightning_kd.errors.Refusal` in ``error``'s chain (causes and contexts), if any; a
    setting Lightning refused there (:func:`lightning_refused`) counts as one.

    Example:
        >>> try:
        ...     try:
        ...         raise Refusal("alpha must be in [0, 1], got 2")
        ...     except Refusal as inner:
        ...         raise RuntimeError("wrapped by a library") from inner
        ... except RuntimeError as outer:
        ...     print(find_refusal(outer))
        alpha must be in [0, 1], got 2
        >>> find_refusal(KeyError("an internal bug")) is None
        True
        >>> print(find_refusal(MisconfigurationException("No supported gpu backend found!")))
        Lightning refused the run: No supported gpu backend found!
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, Refusal):
            return current
        if lightning_refused(current):
            return Refusal(f"Lightning refused the run: {one_line(current)}")
        current = current.__cause__ or current.__context__
    return None
