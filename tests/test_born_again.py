"""Born-Again generations in one fit: promotion, re-initialisation, restarts, checkpoints, resume, ensembles."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from pytorch_lightning import Callback, seed_everything
from pytorch_lightning.callbacks import ModelCheckpoint
from torch import nn

from lightning_kd import BornAgain, Classifier
from lightning_kd.callbacks import Generations
from lightning_kd.checkpoints import load_network
from lightning_kd.data import DigitsDataModule
from lightning_kd.errors import Refusal
from lightning_kd.metrics import ensemble_probabilities, prediction_metrics
from lightning_kd.models import MLP, SmallCNN, reinitialize
from tests.helpers import KillAtEpoch, cpu_trainer

FAST = dict(limit_train_batches=6, max_epochs=None)


def state(network: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in network.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def parameters_differ(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """Every weight tensor (not the BatchNorm constants or counters) differs."""
    keys = [k for k in a if k.endswith("weight") and a[k].ndim > 1]
    return bool(keys) and all(not torch.equal(a[k], b[k]) for k in keys)


class GenerationSpy(Callback):
    """Records, at the first batch of each generation, what the generation starts from."""

    def __init__(self) -> None:
        self.starts: dict[int, dict[str, Any]] = {}
        self.ends: dict[int, dict[str, torch.Tensor]] = {}
        self.second_epoch_state_sizes: dict[int, int] = {}
        self.teacher_ever_in_train_mode = False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if pl_module.teacher is not None and pl_module.teacher.training:
            self.teacher_ever_in_train_mode = True
        if batch_idx != 0:
            return
        optimizer = trainer.optimizers[0]
        generation = pl_module.generation
        if generation in self.starts:
            self.second_epoch_state_sizes[generation] = len(optimizer.state)
            return
        teacher = pl_module.teacher
        self.starts[generation] = {
            "student": state(pl_module.student),
            "teacher": None if teacher is None else state(teacher),
            "teacher_training": None if teacher is None else teacher.training,
            "teacher_requires_grad": None if teacher is None else any(p.requires_grad for p in teacher.parameters()),
            "optimizer_state_size": len(optimizer.state),
            "optimizer_params": {id(p) for group in optimizer.param_groups for p in group["params"]},
            "student_params": {id(p) for p in pl_module.student.parameters()},
            "lr": optimizer.param_groups[0]["lr"],
            "epoch": trainer.current_epoch,
        }

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.ends[pl_module.generation] = state(pl_module.student)


def born_again_fit(
    tmp_path: Path,
    student: Any = None,
    widths: tuple[int, ...] = (8, 16),
    generations: int = 2,
    epochs: int | list[int] = 2,
    loss: str = "ban",
    callbacks: tuple[Callback, ...] = (),
    ckpt_path: str | None = None,
    teacher: nn.Module | None = None,
    **trainer: Any,
) -> tuple[BornAgain, Generations]:
    seed_everything(0)
    task = BornAgain(student if student is not None else SmallCNN(widths, num_classes=10), teacher=teacher, loss=loss)
    schedule = Generations(generations=generations, epochs=epochs, dirpath=tmp_path, print_table=False)
    options = {**FAST, **trainer}
    cpu_trainer(callbacks=[schedule, *callbacks], **options).fit(
        task, DigitsDataModule(batch_size=64), ckpt_path=ckpt_path
    )
    return task, schedule


def test_each_generation_starts_afresh_from_a_frozen_copy_of_the_last(tmp_path: Path) -> None:
    spy = GenerationSpy()
    task, schedule = born_again_fit(tmp_path, callbacks=(spy,))
    assert sorted(spy.starts) == [0, 1, 2] and task.generation == 2
    assert [spy.starts[g]["epoch"] for g in (0, 1, 2)] == [0, 2, 4]
    assert spy.starts[0]["teacher"] is None  # generation 0 learns from labels
    for g in (1, 2):
        start = spy.starts[g]
        assert same(start["teacher"], spy.ends[g - 1])  # bit for bit, BatchNorm statistics included
        assert start["teacher_training"] is False and start["teacher_requires_grad"] is False
        assert parameters_differ(start["student"], spy.ends[g - 1])  # not the trained weights
        assert parameters_differ(start["student"], spy.starts[g - 1]["student"])  # nor the last initialisation
        assert start["optimizer_params"] == start["student_params"]  # the optimizer holds the new student
    for g in (0, 1, 2):
        assert spy.starts[g]["optimizer_state_size"] == 0  # no momentum carried over
        assert spy.second_epoch_state_sizes[g] > 0  # (which the check would see)
        assert spy.starts[g]["lr"] == pytest.approx(0.05)  # the schedule restarts
    assert not spy.teacher_ever_in_train_mode  # at every batch, across validations and epochs
    assert task.generation_epochs == {0: 2, 1: 2, 2: 2}
    assert schedule.total_epochs == 6


def test_generation_checkpoints_are_kept_and_hold_each_generation(tmp_path: Path) -> None:
    spy = GenerationSpy()
    task, _ = born_again_fit(tmp_path, callbacks=(spy,))
    paths = [tmp_path / f"generation_{g}.ckpt" for g in (0, 1, 2)]
    assert all(p.is_file() for p in paths)
    for g, path in enumerate(paths):
        network = load_network(path, SmallCNN((8, 16), num_classes=10))
        assert same(state(network), spy.ends[g])
    assert same(state(load_network(paths[2], SmallCNN((8, 16), num_classes=10))), state(task.student))
    results = json.loads((tmp_path / "generations.json").read_text())
    assert [row["generation"] for row in results["generations"]] == [0, 1, 2]
    assert results["checkpoints"] == {str(g): str(p) for g, p in enumerate(paths)}


def test_generations_learn_on_real_digits(tmp_path: Path) -> None:
    _, schedule = born_again_fit(tmp_path, widths=(16, 32), generations=2, epochs=8, limit_train_batches=None)
    rows = schedule.results["generations"]
    assert all(row["test/acc"] > 0.85 for row in rows)  # chance is 0.10
    assert all(row["test/agreement"] > 0.85 for row in rows[1:])  # students follow their teachers


def test_ensemble_accuracy_equals_a_hand_computation(tmp_path: Path) -> None:
    # on a small case: two members, three samples
    member_a = torch.tensor([[0.6, 0.4], [0.3, 0.7], [0.45, 0.55]])
    member_b = torch.tensor([[0.2, 0.8], [0.4, 0.6], [0.7, 0.3]])
    targets = torch.tensor([0, 1, 0])
    mean = ensemble_probabilities([member_a, member_b])  # [[.4,.6], [.35,.65], [.575,.425]]: right on 2 of 3
    torch.testing.assert_close(mean, (member_a + member_b) / 2)
    assert prediction_metrics(mean, targets)["acc"] == pytest.approx(2 / 3)
    assert prediction_metrics(member_a, targets, reference=member_b)["agreement"] == pytest.approx(1 / 3)

    # in a run: the callback's numbers equal the generation checkpoints evaluated by hand
    _, schedule = born_again_fit(tmp_path, generations=2, epochs=1)
    datamodule = DigitsDataModule(batch_size=64)
    datamodule.setup()
    inputs = torch.stack([datamodule.test_set[i]["input"] for i in range(len(datamodule.test_set))])
    targets = torch.stack([datamodule.test_set[i]["target"] for i in range(len(datamodule.test_set))])
    probs = {}
    for g in (0, 1, 2):
        network = load_network(tmp_path / f"generation_{g}.ckpt", SmallCNN((8, 16), num_classes=10)).eval()
        with torch.no_grad():
            probs[g] = network(inputs).softmax(1)
    by_size = {row["ensemble/generations"]: row for row in schedule.results["ensembles"]}
    for k in (1, 2):
        mean = sum(probs[g] for g in range(1, k + 1)) / k
        hand = (mean.argmax(1) == targets).float().mean().item()
        assert by_size[k]["ensemble/test/acc"] == pytest.approx(hand)
        assert by_size[k]["ensemble/size"] == k
    rows = {row["generation"]: row for row in schedule.results["generations"]}
    assert rows[2]["test/agreement"] == pytest.approx((probs[2].argmax(1) == probs[1].argmax(1)).float().mean().item())


def test_ensembles_can_include_the_teacher(tmp_path: Path) -> None:
    seed_everything(0)
    schedule = Generations(generations=1, epochs=1, dirpath=tmp_path, ensemble_include_teacher=True, print_table=False)
    cpu_trainer(callbacks=[schedule], **FAST).fit(BornAgain(SmallCNN((8, 16), num_classes=10)), DigitsDataModule())
    assert schedule.results["ensembles"][0]["ensemble/size"] == 2  # generations 0 and 1
    records = schedule.records
    hand = prediction_metrics((records[0]["test"] + records[1]["test"]) / 2, schedule.targets["test"])["acc"]
    assert schedule.results["ensembles"][0]["ensemble/test/acc"] == pytest.approx(hand)


def test_ensembles_after_every_generation_are_logged(tmp_path: Path) -> None:
    import csv

    from pytorch_lightning.loggers import CSVLogger

    seed_everything(0)
    schedule = Generations(generations=2, epochs=1, dirpath=tmp_path, ensemble_every_generation=True,
                           print_table=False)
    logger = CSVLogger(tmp_path, name="logs")
    cpu_trainer(callbacks=[schedule], logger=logger, **FAST).fit(
        BornAgain(SmallCNN((8, 16), num_classes=10)), DigitsDataModule()
    )
    with open(Path(logger.log_dir) / "metrics.csv") as handle:
        sizes = [int(float(row["ensemble/size"])) for row in csv.DictReader(handle) if row.get("ensemble/size")]
    # after generation 0: none; after generation 1: size 1; at the end: sizes 1 and 2
    assert sizes == [1, 1, 2]


# generations 0, 1, 2 train in epochs 0-1, 2-3, 4-5: a kill at epoch 5 lands mid-generation 2; a kill at
# epoch 4 lands on the boundary (the last checkpoint is generation 1's end, its promotion not yet saved)
@pytest.mark.parametrize("kill_at_epoch", [4, 5])
def test_a_run_resumed_in_generation_2_ends_like_an_uninterrupted_one(tmp_path: Path, kill_at_epoch: int) -> None:
    checkpoints = dict(enable_checkpointing=True, deterministic=True)
    uninterrupted, reference = born_again_fit(
        tmp_path / "a", loss="dkpp", callbacks=(ModelCheckpoint(tmp_path / "a", save_last=True),), **checkpoints
    )
    with pytest.raises(RuntimeError, match="simulated kill"):
        born_again_fit(tmp_path / "b", loss="dkpp", callbacks=(ModelCheckpoint(tmp_path / "b", save_last=True),
                                                               KillAtEpoch(kill_at_epoch)), **checkpoints)
    last = torch.load(tmp_path / "b/last.ckpt", weights_only=True)
    assert last["born_again"]["generation"] == (1 if kill_at_epoch == 4 else 2)
    resumed, schedule = born_again_fit(
        tmp_path / "b", loss="dkpp", callbacks=(ModelCheckpoint(tmp_path / "b", save_last=True),),
        ckpt_path=str(tmp_path / "b/last.ckpt"), **checkpoints,
    )
    assert resumed.generation == uninterrupted.generation == 2
    assert same(state(resumed.student), state(uninterrupted.student))
    assert same(state(resumed.teacher), state(uninterrupted.teacher))
    assert schedule.results["generations"] == reference.results["generations"]
    assert schedule.results["ensembles"] == reference.results["ensembles"]


def test_a_list_of_networks_changes_architecture_after_generation_0(tmp_path: Path) -> None:
    seed_everything(0)
    wide, small = SmallCNN((16, 32), num_classes=10), MLP(hidden_sizes=(32,), num_classes=10)
    spy = GenerationSpy()
    task, schedule = born_again_fit(tmp_path, student=[wide, small], epochs=[4, 3, 3], callbacks=(spy,),
                                    limit_train_batches=None)
    assert isinstance(task.student, MLP) and isinstance(task.teacher, MLP)
    assert same(spy.starts[1]["teacher"], spy.ends[0]) and "body.0.weight" in spy.starts[1]["teacher"]
    assert spy.starts[1]["optimizer_params"] == spy.starts[1]["student_params"]
    assert task.generation_epochs == {0: 4, 1: 3, 2: 3}
    assert set(spy.starts[2]["student"]) == set(state(small))
    assert all(row["test/acc"] > 0.6 for row in schedule.results["generations"])  # chance is 0.1


def test_a_given_teacher_is_generation_0(tmp_path: Path) -> None:
    seed_everything(0)
    teacher_task = Classifier(SmallCNN((8, 16), num_classes=10))
    cpu_trainer(max_epochs=3).fit(teacher_task, DigitsDataModule())
    spy = GenerationSpy()
    task, schedule = born_again_fit(tmp_path, teacher=teacher_task.net, generations=2, epochs=[2, 1], callbacks=(spy,))
    assert task.first_generation == 1 and sorted(spy.starts) == [1, 2]
    assert same(spy.starts[1]["teacher"], state(teacher_task.net))
    assert schedule.records[0]["checkpoint"] is None and "test" in schedule.records[0]
    assert [row["generation"] for row in schedule.results["generations"]] == [0, 1, 2]
    with pytest.raises(ValueError, match="epochs lists 3 counts, but 2 generations are trained"):
        born_again_fit(tmp_path, teacher=teacher_task.net, generations=2, epochs=[2, 1, 1])


def test_wandb_gets_generation_axes_and_a_summary(tmp_path: Path) -> None:
    import wandb
    from pytorch_lightning.loggers import WandbLogger

    logger = WandbLogger(project="lightning-kd-tests", save_dir=str(tmp_path), offline=True)
    try:
        born_again_fit(tmp_path, generations=1, epochs=1, logger=logger)
        summary = dict(logger.experiment.summary)
        assert {"born_again/generation_0/test/acc", "born_again/generation_1/test/agreement",
                "born_again/generation_1/ensemble/test/acc"} <= set(summary)
        assert "generation_1/val/acc" in summary and "generation/epoch" in summary
        assert summary["born_again/generations"]["_type"] == "table-file"  # the end-of-run table
    finally:
        wandb.finish()


def test_bad_settings_are_refused_with_a_clear_message(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="generations must be an integer >= 1"):
        Generations(generations=0)
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        Generations(epochs=[2, 0])
    with pytest.raises(ValueError, match="epochs lists 2 counts, but 3 generations are trained"):
        born_again_fit(tmp_path, generations=2, epochs=[1, 1])
    with pytest.raises(ValueError, match=r"trainer.max_epochs is 3 but the generations take 6 epochs"):
        born_again_fit(tmp_path, max_epochs=3)
    with pytest.raises(ValueError, match="unknown Born-Again loss 'kl'"):
        BornAgain(SmallCNN(num_classes=10), loss="kl")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="alpha and temperature apply to loss='kd' only; 'ban' uses T = 1"):
        BornAgain(SmallCNN(num_classes=10), loss="ban", temperature=4.0)
    with pytest.raises(ValueError, match="temperature must be finite and > 0"):
        BornAgain(SmallCNN(num_classes=10), loss="kd", temperature=0.0)
    task, _ = born_again_fit(tmp_path, generations=1, epochs=1)
    with pytest.raises(ValueError, match="already trained up to generation 1; a new sequence needs a new task"):
        cpu_trainer(callbacks=[Generations(generations=1, epochs=1)], **FAST).fit(task, DigitsDataModule())
    with pytest.raises(Refusal, match=r"drives a task with generations \(such as BornAgain\), not Classifier"):
        cpu_trainer(callbacks=[Generations(epochs=1)]).fit(Classifier(SmallCNN(num_classes=10)), DigitsDataModule())


class Scaled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(64, 10)
        self.scale = nn.Parameter(torch.ones(1))  # owned by a module without reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1)) * self.scale


class ScaledCNN(SmallCNN):
    def __init__(self) -> None:
        super().__init__((8,), num_classes=10)
        self.temperature = nn.Parameter(torch.ones(1))  # on the network itself, which resets only its layers


def test_a_network_that_cannot_be_reinitialised_is_refused() -> None:
    with pytest.raises(ValueError, match=r"cannot re-initialise Scaled: the modules owning \['scale'\]"):
        reinitialize(Scaled())
    with pytest.raises(ValueError, match=r"cannot re-initialise ScaledCNN: the modules owning \['temperature'\]"):
        reinitialize(ScaledCNN())
    with pytest.raises(ValueError, match="cannot re-initialise Scaled"):
        BornAgain(Scaled()).promote()


def test_python_built_networks_reinitialise_like_their_constructor() -> None:
    seed_everything(0)
    network = SmallCNN((8, 16), num_classes=10)
    fresh = reinitialize(SmallCNN((8, 16), num_classes=10))
    # He-normal convolutions: the same spread as at construction, new values
    conv = network.body[0].weight
    assert not torch.equal(conv, fresh.body[0].weight)
    assert fresh.body[0].weight.std().item() == pytest.approx(conv.std().item(), rel=0.3)


def test_one_callback_serves_several_fits(tmp_path: Path) -> None:
    # LightningCLI builds callbacks once; a second sequence must not inherit the first one's records
    schedule = Generations(generations=1, epochs=1, dirpath=tmp_path, print_table=False)
    results = []
    for seed in (0, 1):
        seed_everything(seed)
        task = BornAgain(SmallCNN((8, 16), num_classes=10))
        cpu_trainer(callbacks=[schedule], **FAST).fit(task, DigitsDataModule())
        results.append(schedule.results)
    assert [row["generation"] for row in results[1]["generations"]] == [0, 1]
    assert results[0]["generations"] != results[1]["generations"]


@pytest.mark.parametrize(("precision", "dtype"), [("bf16-true", torch.bfloat16), ("bf16-mixed", torch.float32)])
def test_generations_under_reduced_precision(tmp_path: Path, precision: str, dtype: torch.dtype) -> None:
    # "true" precision converts the module: networks built at a boundary must follow, and so must the
    # inputs of the callback's own evaluation passes
    seed_everything(0)
    student = [SmallCNN((8, 16), num_classes=10), MLP(hidden_sizes=(16,), num_classes=10)]
    task, schedule = born_again_fit(tmp_path, student=student, generations=2, epochs=1, precision=precision)
    assert next(task.student.parameters()).dtype == next(task.teacher.parameters()).dtype == dtype
    assert [row["generation"] for row in schedule.results["generations"]] == [0, 1, 2]


def test_born_again_generations_of_a_timm_network() -> None:
    from lightning_kd.models import TimmNetwork

    task = BornAgain(TimmNetwork("resnet10t", num_classes=10, in_channels=1), loss="ban")
    trained = state(task.student)
    task.promote()
    assert same(state(task.teacher), trained)  # the teacher is exactly the last student
    assert parameters_differ(state(task.student), trained)  # the next student starts afresh
    x = torch.randn(2, 1, 8, 8)
    (teacher,) = task.teacher_outputs({"input": x}, "stages")
    assert teacher.logits.shape == (2, 10) and len(teacher.features) == len(task.teacher.stage_names)


def test_fast_dev_run_runs_one_batch_of_every_generation_and_writes_nothing(tmp_path: Path) -> None:
    seen: list[int] = []

    class Generation(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            seen.append(pl_module.generation)

    schedule = Generations(generations=2, epochs=[5, 4, 3], dirpath=tmp_path, print_table=False)
    trainer = cpu_trainer(fast_dev_run=True, max_epochs=None, callbacks=[schedule, Generation()])
    trainer.fit(BornAgain(SmallCNN(widths=(8, 16), num_classes=10)), datamodule=DigitsDataModule())
    assert seen == [0, 1, 2]
    assert [row["generation"] for row in schedule.results["generations"]] == [0, 1, 2]
    assert not any(tmp_path.iterdir())
