"""Born-Again generations inside one ``fit``: promote, re-initialise, restart, checkpoint, ensemble, report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_only, rank_zero_warn
from torch import Tensor, nn
from torch.utils.data import DataLoader

from lightning_kd.callbacks.epoch_checkpoints import checkpoint_folder
from lightning_kd.callbacks.evaluation import SPLITS, evaluation_loaders, predict_splits
from lightning_kd.compat import LIGHTNING_DEFAULT_MAX_EPOCHS, rewrap_for_ddp, set_epoch_budget
from lightning_kd.errors import Refusal
from lightning_kd.metrics import TokenPredictions, ensemble_perplexity, ensemble_probabilities, prediction_metrics
from lightning_kd.protocols import Promotable
from lightning_kd.reporting import (
    log_metrics,
    log_wandb_table,
    percent,
    print_table,
    update_wandb_summary,
)
from lightning_kd.rng import set_rng_states


class Generations(Callback):
    """Run a Born-Again sequence in one ``fit``: ``generations`` students, each taught by the one before.

    Generation 0 (the teacher) is trained first from labels, unless the
    :class:`~lightning_kd.tasks.BornAgain` task was given a teacher, which then is generation 0.
    At the start of each later generation this callback:

    1. scores the finished generation on the val and test sets and keeps its predictions (on the CPU:
       ensembles are built from these, so memory does not grow with the networks),
    2. saves its weights to ``{dirpath}/generation_{g}.ckpt`` (never overwritten by a later generation;
       loadable as a teacher with :func:`~lightning_kd.checkpoints.load_network`),
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
    unset (or set it to that sum). With ``fast_dev_run`` every generation runs one batch and nothing
    is written (no generation checkpoints, no ``generations.json``).

    A run resumed with ``ckpt_path`` continues in the right generation with the right teacher; the
    callback's checkpoint state includes the RNG states, so with deterministic settings (deterministic
    kernels; with random augmentation, no persistent data-loader workers, whose seeds are drawn once
    per run) a resumed run from an epoch-end checkpoint ends with the same weights as an
    uninterrupted one.

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
            raise Refusal(
                f"generations must be an integer >= 1 (born-again generations after generation 0), got {generations}"
            )
        counts = epochs if isinstance(epochs, list) else [epochs]
        if not counts or any(not isinstance(e, int) or e < 1 for e in counts):
            raise Refusal(f"epochs must be a positive integer or a list of them, got {epochs}")
        self.generations = generations
        self.epochs = epochs
        self.dirpath = dirpath
        self.ensemble_include_teacher = ensemble_include_teacher
        self.ensemble_every_generation = ensemble_every_generation
        self.print_table = print_table
        self.plan: dict[int, int] = {}
        self.dry_run = False
        self.records: dict[int, dict[str, Any]] = {}
        self.targets: dict[str, Tensor] = {}
        self.results: dict[str, Any] = {}
        self._loaders: dict[str, DataLoader] = {}

    # -- plan -------------------------------------------------------------------------------------
    def plan_for(self, pl_module: pl.LightningModule) -> dict[int, int]:
        """Epochs of each generation ``pl_module`` will train, by generation."""
        if not isinstance(pl_module, Promotable):
            raise Refusal(f"the Generations callback drives a task with generations (such as BornAgain), not "
                          f"{type(pl_module).__name__}")
        trained = list(range(pl_module.first_generation, self.generations + 1))
        counts = self.epochs if isinstance(self.epochs, list) else [self.epochs] * len(trained)
        if len(counts) != len(trained):
            first = "generation 0 (trained from labels)" if pl_module.first_generation == 0 else "generation 1"
            raise Refusal(
                f"epochs lists {len(counts)} counts, but {len(trained)} generations are trained "
                f"({first} to generation {self.generations})"
            )
        return dict(zip(trained, counts, strict=True))

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self.plan = self.plan_for(pl_module)
        assert isinstance(pl_module, Promotable)
        resuming = trainer.ckpt_path is not None
        if pl_module.generation != pl_module.first_generation and not resuming:
            raise Refusal(
                f"this {type(pl_module).__name__} task has already trained up to generation {pl_module.generation}; "
                "a new sequence needs a new task (or resume the old one with ckpt_path)"
            )
        # a callback object may serve several fits (the CLI builds it once); a resumed fit reloads its state
        self.records, self.targets, self.results = {}, {}, {}
        self.dry_run = bool(trainer.fast_dev_run)
        if self.dry_run:
            # fast_dev_run: one batch of every generation (it limits the batches), nothing written; its
            # one-step budget would stop the sequence after generation 0
            self.plan = dict.fromkeys(self.plan, 1)
        pl_module.plan_generations(dict(self.plan))
        total = self.total_epochs
        counts = list(self.plan.values())
        if self.dry_run:
            set_epoch_budget(trainer, total, unlimited_steps=True)
            return
        if trainer.max_steps != -1:
            raise Refusal("the Generations callback sets the epoch budget; remove trainer.max_steps")
        if trainer.fit_loop.max_epochs not in (total, LIGHTNING_DEFAULT_MAX_EPOCHS, None, -1):
            raise Refusal(
                f"trainer.max_epochs is {trainer.fit_loop.max_epochs} but the generations take {total} epochs "
                f"({' + '.join(map(str, counts))}); leave max_epochs unset or set it to {total}"
            )
        set_epoch_budget(trainer, total)

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
        assert isinstance(pl_module, Promotable)
        self._loaders = evaluation_loaders(trainer)
        if pl_module.first_generation == 1 and 0 not in self.records:
            assert pl_module.teacher is not None
            self.records[0] = {"epochs": 0, "checkpoint": None, **self._predict(trainer, pl_module.teacher)}

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert isinstance(pl_module, Promotable)
        # a loop rather than an if: a resumed run may land past a boundary it has not acted on yet
        while pl_module.generation < self.generation_of_epoch(trainer.current_epoch):
            self._finish_generation(trainer, pl_module)
            self._start_next_generation(trainer, pl_module)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit" or not isinstance(pl_module, Promotable):
            return
        generation = pl_module.generation
        metrics = {
            f"generation_{generation}/{key}": float(value)
            for key, value in trainer.callback_metrics.items()
            if key.startswith("val/")
        }
        metrics["generation/epoch"] = trainer.current_epoch - self.generation_start(generation) + 1
        log_metrics(trainer, metrics, axis="generation/epoch")

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert isinstance(pl_module, Promotable)
        if trainer.current_epoch < self.total_epochs:
            rank_zero_warn(
                f"training stopped at epoch {trainer.current_epoch} of {self.total_epochs}, in generation "
                f"{pl_module.generation}; the report covers the generations that finished"
            )
        elif pl_module.generation == max(self.plan):
            self._finish_generation(trainer, pl_module)
        self._report(trainer)

    # -- generation boundaries --------------------------------------------------------------------
    def _finish_generation(self, trainer: pl.Trainer, pl_module: Promotable) -> None:
        generation = pl_module.generation
        if generation in self.records:  # already done before an interruption
            return
        path = None if self.dry_run else self._dirpath(trainer) / f"generation_{generation}.ckpt"
        if path is not None:
            trainer.save_checkpoint(path, weights_only=True)
        self.records[generation] = {
            "epochs": self.plan[generation],
            "checkpoint": None if path is None else str(path),
            **self._predict(trainer, pl_module.student),
        }
        row = self._generation_row(generation)
        log_metrics(trainer, {f"born_again/{key}": value for key, value in row.items() if key != "generation"}
                    | {"born_again/generation": generation}, axis="born_again/generation")
        if self.ensemble_every_generation and generation != max(self.plan):  # the last one: in the report
            self._log_ensembles(trainer)

    def _start_next_generation(self, trainer: pl.Trainer, pl_module: Promotable) -> None:
        if pl_module.promote():  # a new student module: DDP must sync its parameters
            rewrap_for_ddp(trainer.strategy)
        # a fresh optimizer (empty momentum) and schedule, over the new student's parameters
        trainer.strategy.setup_optimizers(trainer)

    def _predict(self, trainer: pl.Trainer, network: nn.Module) -> dict[str, Tensor]:
        """The network's softmax outputs on each evaluation split (on the CPU; the same on every rank)."""
        probabilities, targets = predict_splits(trainer, network, self._loaders)
        for split, labels in targets.items():
            self.targets.setdefault(split, labels)
        return probabilities

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
                predictions = [self.records[g][split] for g in members]
                if isinstance(predictions[0], TokenPredictions):  # tokens: the paper's perplexity (no argmax kept)
                    row[f"ensemble/{split}/ppl"] = ensemble_perplexity(predictions)
                    continue
                probs = ensemble_probabilities(predictions)
                row[f"ensemble/{split}/acc"] = prediction_metrics(probs, self.targets[split])["acc"]
            rows.append(row)
        return rows

    def _log_ensembles(self, trainer: pl.Trainer) -> list[dict[str, Any]]:
        rows = self._ensembles()
        for row in rows:
            log_metrics(trainer, row, axis="ensemble/size")
        return rows

    def _report(self, trainer: pl.Trainer) -> None:
        rows = [self._generation_row(g) for g in sorted(self.records)]
        ensembles = self._log_ensembles(trainer)
        by_generation = {row["ensemble/generations"]: row for row in ensembles}
        for row in rows:
            ensemble = by_generation.get(row["generation"], {})
            row.update({key: value for key, value in ensemble.items() if key.endswith(("/acc", "/ppl"))})
        self.results = {
            "generations": rows,
            "ensembles": ensembles,
            "ensemble_include_teacher": self.ensemble_include_teacher,
            "checkpoints": {g: record["checkpoint"] for g, record in sorted(self.records.items())},
        }
        self._publish(trainer, rows)

    def _publish(self, trainer: pl.Trainer, rows: list[dict[str, Any]]) -> None:
        if not self.dry_run:
            self._write_json(trainer)
        columns = sorted({key for row in rows for key in row} - {"generation"}, key=_column_order)
        log_wandb_table(trainer, "born_again/generations", ["generation", *columns],
                        [[row["generation"], *(row.get(key) for key in columns)] for row in rows])
        update_wandb_summary(trainer, {f"born_again/generation_{row['generation']}/{key}": row[key]
                                       for row in rows for key in columns if row.get(key) is not None})
        if self.print_table:
            shown = [(key, header) for key, header in _CONSOLE_COLUMNS if any(key in row for row in rows)]
            if any(key.endswith("/ppl") for key, _ in shown):  # language models: perplexities (accuracies in the JSON)
                shown = [(key, header) for key, header in shown if key.endswith("/ppl") or key == "test/agreement"]
            title = "Born-Again generations" + (
                " (ensembles include generation 0)" if self.ensemble_include_teacher else "")
            print_table(title, ["gen", *(header for _, header in shown)],
                        [[str(row["generation"]), *(_shown(key, row.get(key)) for key, _ in shown)] for row in rows])

    @rank_zero_only
    def _write_json(self, trainer: pl.Trainer) -> None:
        dirpath = self._dirpath(trainer)
        dirpath.mkdir(parents=True, exist_ok=True)
        (dirpath / "generations.json").write_text(json.dumps(self.results, indent=2) + "\n")

    def _dirpath(self, trainer: pl.Trainer) -> Path:
        return checkpoint_folder(trainer, self.dirpath)

    # -- checkpoint state -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        records = {generation: {split: value.as_dict() if isinstance(value, TokenPredictions) else value
                                for split, value in record.items()} for generation, record in self.records.items()}
        # the random state is in every checkpoint's task record (tasks.resume), not here
        return {"records": records, "targets": self.targets, "plan": dict(self.plan)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = {int(g): int(e) for g, e in state_dict.get("plan", {}).items()}
        if saved and self.plan and saved != self.plan:
            # resuming with another plan would end early or train generations the record never planned
            raise Refusal(
                f"the checkpoint's run planned {_describe_plan(saved)}; this command plans "
                f"{_describe_plan(self.plan)}. Resume with the same Generations settings (generations, epochs), "
                "or start a new run without ckpt_path"
            )
        self.records = {
            generation: {split: TokenPredictions.from_dict(value) if TokenPredictions.is_dict(value) else value
                         for split, value in record.items()}
            for generation, record in state_dict["records"].items()
        }
        self.targets = dict(state_dict["targets"])
        if "rng" in state_dict:  # a checkpoint of lightning-kd 0.1, whose task record has no random state
            set_rng_states(state_dict["rng"])


def _describe_plan(plan: dict[int, int]) -> str:
    return f"generations {min(plan)}..{max(plan)} of {', '.join(str(e) for e in plan.values())} epochs"


def _column_order(key: str) -> tuple[int, int, str]:
    split = next((i for i, s in enumerate(SPLITS) if f"{s}/" in key), len(SPLITS))
    return (key.startswith("ensemble/"), split, key)


def _shown(key: str, value: float | None) -> str:
    """A console cell: perplexities as they are, fractions as percents."""
    return percent(value) if not key.endswith("/ppl") or value is None else f"{value:.2f}"


# the console table: (column, header); the JSON file and the W&B table hold every column
_CONSOLE_COLUMNS = (
    ("val/ppl", "val ppl"),
    ("test/ppl", "test ppl"),
    ("ensemble/val/ppl", "ensemble 1..g\nval ppl"),
    ("ensemble/test/ppl", "ensemble 1..g\ntest ppl"),
    ("val/acc", "val acc"),
    ("test/acc", "test acc"),
    ("test/agreement", "test agreement\nwith teacher"),
    ("test/ece", "test ECE"),
    ("ensemble/val/acc", "ensemble 1..g\nval acc"),
    ("ensemble/test/acc", "ensemble 1..g\ntest acc"),
)
