"""Born-Again generations inside one ``fit``: promote, re-initialise, restart, checkpoint, ensemble, report."""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_only, rank_zero_warn
from pytorch_lightning.utilities.seed import isolate_rng
from rich.console import Console
from rich.table import Table
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from lightning_kd.metrics import ensemble_probabilities, prediction_metrics
from lightning_kd.tasks.born_again import BornAgain

SPLITS = ("val", "test")
# what Lightning sets max_epochs to when the user gives neither max_epochs nor max_steps
_LIGHTNING_DEFAULT_MAX_EPOCHS = 1000


class Generations(Callback):
    """Run a Born-Again sequence in one ``fit``: ``generations`` students, each taught by the one before.

    Generation 0 (the teacher) is trained first from labels, unless the
    :class:`~lightning_kd.tasks.BornAgain` task was given a teacher, which then is generation 0.
    At the start of each later generation this callback:

    1. scores the finished generation on the val and test sets and keeps its predictions (on the CPU:
       ensembles are built from these, so memory does not grow with the networks),
    2. saves its weights to ``{dirpath}/generation_{g}.ckpt`` (never overwritten by a later generation;
       loadable as a teacher with :func:`~lightning_kd.teacher.load_network`),
    3. promotes it: it becomes the frozen, eval-mode teacher; the student gets fresh weights drawn
       from a seed of the run's seed and the generation (identical on every DDP rank, different per
       generation),
    4. rebuilds the optimizer and learning-rate schedule, which restart from scratch and span the
       new generation's epochs.

    After the last generation it scores born-again ensembles of generations ``1..k`` (the mean of
    their softmax outputs; with ``ensemble_include_teacher`` generation 0 joins each), logs
    ``ensemble/{val,test}/acc`` against ``ensemble/size``, prints a table of the generations and
    writes it to ``{dirpath}/generations.json`` and, with W&B, to a ``born_again/generations`` table.
    While training, every validation is also logged as ``generation_{g}/val/...`` against
    ``generation/epoch`` (the epoch within the generation), which W&B uses as the x-axis, so the
    generations' curves lie side by side.

    The trainer's epoch budget is the sum of the generations' epochs; leave ``trainer.max_epochs``
    unset (or set it to that sum). A run resumed with ``ckpt_path`` continues in the right
    generation with the right teacher; the callback's checkpoint state includes the RNG states, so
    with deterministic settings (deterministic kernels; with random augmentation, no persistent
    data-loader workers, whose seeds are drawn once per run) a resumed run from an epoch-end
    checkpoint ends with the same weights as an uninterrupted one.

    Args:
        generations: Born-again generations after generation 0 (the paper trains 3).
        epochs: Epochs of every trained generation, or one count per trained generation (generation
            0 first, unless a teacher was given).
        dirpath: Where generation checkpoints and ``generations.json`` go (default: the
            ``ModelCheckpoint``'s folder, else ``{default_root_dir}/checkpoints``).
        ensemble_include_teacher: Include generation 0 in the ensembles.
        ensemble_every_generation: Also log the ensemble of the generations so far after each one.
        print_table: Print the table of generations at the end.

    Example:
        >>> Generations(generations=3, epochs=[30, 20, 20, 20]).epochs
        [30, 20, 20, 20]
    """

    def __init__(
        self,
        generations: int = 3,
        epochs: int | list[int] = 10,
        dirpath: str | Path | None = None,
        ensemble_include_teacher: bool = False,
        ensemble_every_generation: bool = False,
        print_table: bool = True,
    ) -> None:
        if not isinstance(generations, int) or generations < 1:
            raise ValueError(
                f"generations must be an integer >= 1 (born-again generations after generation 0), got {generations}"
            )
        counts = epochs if isinstance(epochs, list) else [epochs]
        if not counts or any(not isinstance(e, int) or e < 1 for e in counts):
            raise ValueError(f"epochs must be a positive integer or a list of them, got {epochs}")
        self.generations = generations
        self.epochs = epochs
        self.dirpath = dirpath
        self.ensemble_include_teacher = ensemble_include_teacher
        self.ensemble_every_generation = ensemble_every_generation
        self.print_table = print_table
        self.plan: dict[int, int] = {}
        self.records: dict[int, dict[str, Any]] = {}
        self.targets: dict[str, Tensor] = {}
        self.results: dict[str, Any] = {}
        self._loaders: dict[str, DataLoader] = {}

    # -- plan -------------------------------------------------------------------------------------
    def plan_for(self, pl_module: pl.LightningModule) -> dict[int, int]:
        """Epochs of each generation ``pl_module`` will train, by generation."""
        if not isinstance(pl_module, BornAgain):
            raise TypeError(f"the Generations callback drives a BornAgain task, not {type(pl_module).__name__}")
        trained = list(range(pl_module.first_generation, self.generations + 1))
        counts = self.epochs if isinstance(self.epochs, list) else [self.epochs] * len(trained)
        if len(counts) != len(trained):
            first = "generation 0 (trained from labels)" if pl_module.first_generation == 0 else "generation 1"
            raise ValueError(
                f"epochs lists {len(counts)} counts, but {len(trained)} generations are trained "
                f"({first} to generation {self.generations})"
            )
        return dict(zip(trained, counts, strict=True))

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self.plan = self.plan_for(pl_module)
        assert isinstance(pl_module, BornAgain)
        resuming = trainer.ckpt_path is not None
        if pl_module.generation != pl_module.first_generation and not resuming:
            raise ValueError(
                f"this BornAgain task has already trained up to generation {pl_module.generation}; a new sequence "
                "needs a new task (or resume the old one with ckpt_path)"
            )
        # a callback object may serve several fits (the CLI builds it once); a resumed fit reloads its state
        self.records, self.targets, self.results = {}, {}, {}
        pl_module.generation_epochs = dict(self.plan)
        total = self.total_epochs
        counts = list(self.plan.values())
        if trainer.max_steps != -1:
            raise ValueError("the Generations callback sets the epoch budget; remove trainer.max_steps")
        if trainer.fit_loop.max_epochs not in (total, _LIGHTNING_DEFAULT_MAX_EPOCHS, None, -1):
            raise ValueError(
                f"trainer.max_epochs is {trainer.fit_loop.max_epochs} but the generations take {total} epochs "
                f"({' + '.join(map(str, counts))}); leave max_epochs unset or set it to {total}"
            )
        trainer.fit_loop.max_epochs = total

    @property
    def total_epochs(self) -> int:
        return sum(self.plan.values())

    def generation_start(self, generation: int) -> int:
        """The (global) epoch at which ``generation`` starts."""
        return sum(epochs for g, epochs in self.plan.items() if g < generation)

    def generation_of_epoch(self, epoch: int) -> int:
        """The generation that trains during (global) epoch ``epoch``."""
        for generation, epochs in self.plan.items():
            if epoch < self.generation_start(generation) + epochs:
                return generation
        return max(self.plan)

    # -- hooks ------------------------------------------------------------------------------------
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert isinstance(pl_module, BornAgain)
        self._loaders = _evaluation_loaders(trainer)
        self._define_wandb_axes(trainer)
        if pl_module.first_generation == 1 and 0 not in self.records:
            assert pl_module.teacher is not None
            self.records[0] = {"epochs": 0, "checkpoint": None, **self._predict(trainer, pl_module.teacher)}

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert isinstance(pl_module, BornAgain)
        # a loop rather than an if: a resumed run may land past a boundary it has not acted on yet
        while pl_module.generation < self.generation_of_epoch(trainer.current_epoch):
            self._finish_generation(trainer, pl_module)
            self._start_next_generation(trainer, pl_module)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit" or not isinstance(pl_module, BornAgain):
            return
        generation = pl_module.generation
        metrics = {
            f"generation_{generation}/{key}": float(value)
            for key, value in trainer.callback_metrics.items()
            if key.startswith("val/")
        }
        metrics["generation/epoch"] = trainer.current_epoch - self.generation_start(generation) + 1
        self._log(trainer, metrics)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert isinstance(pl_module, BornAgain)
        if trainer.current_epoch < self.total_epochs:
            rank_zero_warn(
                f"training stopped at epoch {trainer.current_epoch} of {self.total_epochs}, in generation "
                f"{pl_module.generation}; the report covers the generations that finished"
            )
        elif pl_module.generation == max(self.plan):
            self._finish_generation(trainer, pl_module)
        self._report(trainer)

    # -- generation boundaries --------------------------------------------------------------------
    def _finish_generation(self, trainer: pl.Trainer, pl_module: BornAgain) -> None:
        generation = pl_module.generation
        if generation in self.records:  # already done before an interruption
            return
        path = self._dirpath(trainer) / f"generation_{generation}.ckpt"
        trainer.save_checkpoint(path, weights_only=True)
        self.records[generation] = {
            "epochs": self.plan[generation],
            "checkpoint": str(path),
            **self._predict(trainer, pl_module.student),
        }
        row = self._generation_row(generation)
        self._log(trainer, {f"born_again/{key}": value for key, value in row.items() if key != "generation"}
                  | {"born_again/generation": generation})
        if self.ensemble_every_generation and generation != max(self.plan):  # the last one: in the report
            self._log_ensembles(trainer)

    def _start_next_generation(self, trainer: pl.Trainer, pl_module: BornAgain) -> None:
        if pl_module.promote():  # a new student module: DDP must sync its parameters
            _rewrap_for_ddp(trainer)
        # a fresh optimizer (empty momentum) and schedule, over the new student's parameters
        trainer.strategy.setup_optimizers(trainer)

    @torch.no_grad()
    def _predict(self, trainer: pl.Trainer, network: nn.Module) -> dict[str, Tensor]:
        """Softmax outputs on each evaluation split, on the CPU, in the loader's (fixed) order.

        Every rank runs the whole split (up to the trainer's ``limit_{val,test}_batches``), so no
        collective is needed and all ranks hold the same record.
        """
        device = next(network.parameters()).device
        was_training = network.training
        network.eval()
        outputs: dict[str, Tensor] = {}
        with isolate_rng():  # iterating a loader draws a seed; keep the training RNG stream untouched
            for split, loader in self._loaders.items():
                probs, targets = [], []
                limit = _batch_limit(getattr(trainer, f"limit_{split}_batches"), len(loader))
                if limit == 0:
                    continue
                for _, batch in zip(range(limit), loader, strict=False):
                    # as Lightning's own loops do: the precision plugin's input dtype ("true" half precision)
                    inputs = trainer.precision_plugin.convert_input(batch["input"].to(device))
                    with trainer.precision_plugin.forward_context():
                        logits = network(inputs)
                    probs.append(logits.float().softmax(dim=1).cpu())
                    targets.append(batch["target"])
                outputs[split] = torch.cat(probs)
                self.targets.setdefault(split, torch.cat(targets))
        network.train(was_training)
        return outputs

    # -- reporting --------------------------------------------------------------------------------
    def _splits(self) -> list[str]:
        return [split for split in SPLITS if split in self.targets]

    def _generation_row(self, generation: int) -> dict[str, Any]:
        record, teacher = self.records[generation], self.records.get(generation - 1)
        row: dict[str, Any] = {"generation": generation}
        for split in self._splits():
            reference = teacher[split] if teacher is not None else None
            metrics = prediction_metrics(record[split], self.targets[split], reference)
            row.update({f"{split}/{name}": value for name, value in metrics.items()})
        return row

    def ensemble_members(self, size: int) -> list[int]:
        """Generations in the ensemble of ``size`` born-again generations (1..size, plus 0 if included)."""
        members = list(range(1, size + 1))
        return [0, *members] if self.ensemble_include_teacher and 0 in self.records else members

    def _ensembles(self) -> list[dict[str, Any]]:
        """Accuracy of the ensemble of generations ``1..k`` for every ``k`` whose members all finished."""
        rows = []
        for size in range(1, self.generations + 1):
            members = self.ensemble_members(size)
            if not all(g in self.records for g in members):
                break
            row: dict[str, Any] = {"ensemble/generations": size, "ensemble/size": len(members)}
            for split in self._splits():
                probs = ensemble_probabilities([self.records[g][split] for g in members])
                row[f"ensemble/{split}/acc"] = prediction_metrics(probs, self.targets[split])["acc"]
            rows.append(row)
        return rows

    def _log_ensembles(self, trainer: pl.Trainer) -> list[dict[str, Any]]:
        rows = self._ensembles()
        for row in rows:
            self._log(trainer, row)
        return rows

    def _report(self, trainer: pl.Trainer) -> None:
        rows = [self._generation_row(g) for g in sorted(self.records)]
        ensembles = self._log_ensembles(trainer)
        by_generation = {row["ensemble/generations"]: row for row in ensembles}
        for row in rows:
            ensemble = by_generation.get(row["generation"], {})
            row.update({key: value for key, value in ensemble.items() if key.endswith("/acc")})
        self.results = {
            "generations": rows,
            "ensembles": ensembles,
            "ensemble_include_teacher": self.ensemble_include_teacher,
            "checkpoints": {g: record["checkpoint"] for g, record in sorted(self.records.items())},
        }
        self._publish(trainer, rows)

    @rank_zero_only
    def _publish(self, trainer: pl.Trainer, rows: list[dict[str, Any]]) -> None:
        dirpath = self._dirpath(trainer)
        dirpath.mkdir(parents=True, exist_ok=True)
        (dirpath / "generations.json").write_text(json.dumps(self.results, indent=2) + "\n")
        columns = sorted({key for row in rows for key in row} - {"generation"}, key=_column_order)
        data = [[row["generation"], *(row.get(key) for key in columns)] for row in rows]
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_table(key="born_again/generations", columns=["generation", *columns], data=data)
                logger.experiment.summary.update(
                    {f"born_again/generation_{row['generation']}/{key}": row[key] for row in rows for key in columns
                     if row.get(key) is not None}
                )
        if self.print_table:
            Console().print(_rich_table(rows, self.ensemble_include_teacher))

    @rank_zero_only
    def _define_wandb_axes(self, trainer: pl.Trainer) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                experiment = logger.experiment
                for axis, pattern in (("generation/epoch", "generation_*"), ("ensemble/size", "ensemble/*"),
                                      ("born_again/generation", "born_again/*")):
                    experiment.define_metric(axis)
                    experiment.define_metric(pattern, step_metric=axis)

    @staticmethod
    def _log(trainer: pl.Trainer, metrics: dict[str, float]) -> None:
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)

    def _dirpath(self, trainer: pl.Trainer) -> Path:
        if self.dirpath is not None:
            return Path(self.dirpath)
        checkpoint = trainer.checkpoint_callback
        if checkpoint is not None and getattr(checkpoint, "dirpath", None):
            return Path(checkpoint.dirpath)
        return Path(trainer.default_root_dir) / "checkpoints"

    # -- checkpoint state -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"records": self.records, "targets": self.targets, "rng": _collect_rng_states()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.records = dict(state_dict["records"])
        self.targets = dict(state_dict["targets"])
        if "rng" in state_dict:
            _set_rng_states(state_dict["rng"])


def _column_order(key: str) -> tuple[int, int, str]:
    split = next((i for i, s in enumerate(SPLITS) if f"{s}/" in key), len(SPLITS))
    return (key.startswith("ensemble/"), split, key)


# the console table: (column, header); the JSON file and the W&B table hold every column
_CONSOLE_COLUMNS = (
    ("val/acc", "val acc"),
    ("test/acc", "test acc"),
    ("test/agreement", "test agreement\nwith teacher"),
    ("test/ece", "test ECE"),
    ("ensemble/val/acc", "ensemble 1..g\nval acc"),
    ("ensemble/test/acc", "ensemble 1..g\ntest acc"),
)


def _rich_table(rows: list[dict[str, Any]], with_teacher: bool) -> Table:
    title = "Born-Again generations" + (" (ensembles include generation 0)" if with_teacher else "")
    columns = [(key, header) for key, header in _CONSOLE_COLUMNS if any(key in row for row in rows)]
    table = Table(title=title)
    table.add_column("gen", justify="right")
    for _, header in columns:
        table.add_column(header, justify="right")
    for row in rows:
        cells = [f"{100 * row[key]:.2f}" if key in row else "" for key, _ in columns]
        table.add_row(str(row["generation"]), *cells)
    return table


def _batch_limit(limit: int | float, num_batches: int) -> int:
    """The batches a trainer's ``limit_{val,test}_batches`` allows (an int counts batches, a float is a fraction)."""
    if isinstance(limit, float):
        return int(num_batches * limit) if limit < 1 else num_batches
    return min(int(limit), num_batches)


def _evaluation_loaders(trainer: pl.Trainer) -> dict[str, DataLoader]:
    """Fresh (unsharded) val and test loaders from the data module; a split it lacks is left out."""
    datamodule = trainer.datamodule
    if datamodule is None:
        rank_zero_warn("Generations: no data module, so no per-generation scores or ensembles")
        return {}
    loaders = {}
    for split in SPLITS:
        try:
            loaders[split] = getattr(datamodule, f"{split}_dataloader")()
        except Exception as error:  # a data module without that split; say so and go on
            rank_zero_warn(f"Generations: no {split} loader from {type(datamodule).__name__} ({error}); skipped")
    return loaders


def _rewrap_for_ddp(trainer: pl.Trainer) -> None:
    """The student's parameters changed: DDP must wrap the module again to sync the new ones."""
    strategy = trainer.strategy
    if isinstance(strategy.model, DistributedDataParallel):
        strategy.model = strategy._setup_model(strategy.lightning_module)  # type: ignore[attr-defined]
        strategy._register_ddp_hooks()  # type: ignore[attr-defined]
    elif strategy.model is not strategy.lightning_module:
        raise RuntimeError(
            f"changing the student's architecture between generations is supported on one device and with DDP, "
            f"not with {type(strategy).__name__}"
        )


def _collect_rng_states() -> dict[str, Any]:
    """The global RNG states, in types a ``weights_only`` checkpoint load accepts."""
    version, numpy_keys, position, has_gauss, cached_gauss = np.random.get_state()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [version, torch.from_numpy(np.asarray(numpy_keys, dtype=np.int64)), position, has_gauss, cached_gauss],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    version, numpy_keys, position, has_gauss, cached_gauss = states["numpy"]
    np.random.set_state((version, numpy_keys.numpy().astype(np.uint32), position, has_gauss, cached_gauss))
    random.setstate(_as_tuples(states["python"]))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _as_tuples(value: Any) -> Any:
    # checkpoints may turn the state's tuples into lists; random.setstate wants tuples
    if isinstance(value, Iterable) and not isinstance(value, (str, bytes, Tensor)):
        return tuple(_as_tuples(v) for v in value)
    return value
