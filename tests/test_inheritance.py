"""Layers a student inherits from its teacher (Born-Again across architectures): copied, frozen through training,
each generation from its own teacher, kept by checkpoints and resumes; shapes that differ are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pytorch_lightning import Callback, seed_everything
from pytorch_lightning.callbacks import ModelCheckpoint
from torch import nn

from lightning_kd import BornAgain, DecoupledKD, VanillaKD
from lightning_kd.callbacks import Generations
from lightning_kd.data import DigitsDataModule
from lightning_kd.errors import Refusal
from lightning_kd.models import DenseFollowerResNet, DenseNet, SmallCNN, create_model
from tests.helpers import KillAtEpoch, cpu_trainer


def _teacher() -> DenseNet:
    return DenseNet(depth=10, growth_rate=4, num_classes=10, in_channels=1)


def _follower() -> DenseFollowerResNet:
    return DenseFollowerResNet(10, 4, ratio=0.5, num_classes=10, in_channels=1)


def state(network: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in network.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def part(network: nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    return {k.removeprefix(prefix): v for k, v in state(network).items() if k.startswith(prefix)}


class GradientProbe(Callback):
    """The student's parameters that held a gradient at some optimizer step."""

    def __init__(self) -> None:
        self.with_gradient: set[str] = set()

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.with_gradient |= {n for n, p in pl_module.student.named_parameters() if p.grad is not None}


class ModeProbe(Callback):
    """At every training forward: whether the inherited BatchNorm ran in eval mode; at the end, the optimizers."""

    def __init__(self, path: str) -> None:
        self.path, self.training_modes, self.optimized = path, set(), set()

    def on_train_start(self, trainer, pl_module) -> None:
        module = pl_module.student.get_submodule(self.path)
        module.register_forward_hook(lambda m, i, o: self.training_modes.add(m.training))

    def on_train_end(self, trainer, pl_module) -> None:
        self.optimized = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}


def test_inherited_layers_stay_the_teachers_bit_for_bit_through_training_and_get_no_gradient() -> None:
    seed_everything(0)
    teacher, student = _teacher(), _follower()
    task = VanillaKD(student, teacher, inherit_layers=["stem", "classifier"])
    assert task.inherited_layers == ["stem", "fc"]
    start, probe = state(student), GradientProbe()
    cpu_trainer(max_epochs=2, limit_train_batches=5, limit_val_batches=1, callbacks=[probe]).fit(
        task, DigitsDataModule(batch_size=32))
    assert same(part(student, "stem."), part(teacher, "stem.")) and same(part(student, "fc."), part(teacher, "fc."))
    trained = {n for n, _ in student.named_parameters() if not n.startswith(("stem.", "fc."))}
    assert probe.with_gradient == trained  # every other parameter had gradients; the inherited ones never
    assert not torch.equal(start["stages.0.0.convs.0.weight"], student.stages[0][0].convs[0].weight)


def test_an_inherited_batchnorm_runs_in_eval_mode_keeps_the_teachers_statistics_and_is_in_no_optimizer() -> None:
    seed_everything(0)
    teacher, student = SmallCNN((8, 16), num_classes=10), SmallCNN((8, 32, 16), num_classes=10)
    task = DecoupledKD(student, teacher, inherit_layers=["body.0", "body.1", "classifier"])
    probe = ModeProbe("body.1")
    cpu_trainer(max_epochs=2, limit_train_batches=4, limit_val_batches=1, callbacks=[probe]).fit(
        task, DigitsDataModule(batch_size=32))
    assert probe.training_modes == {False}  # whatever called train() on the task, the student or its layers
    assert same(part(student, "body.1."), part(teacher, "body.1."))  # running mean and variance too
    frozen = {id(p) for name in ("body.0", "body.1", "fc") for p in student.get_submodule(name).parameters()}
    assert probe.optimized and not probe.optimized & frozen
    assert {id(p) for p in student.body[4].parameters()} <= probe.optimized


def test_layers_of_other_shapes_are_refused_naming_both_layers_and_shapes() -> None:
    teacher, student = SmallCNN((8, 16), num_classes=10), SmallCNN((8, 32), num_classes=10)
    with pytest.raises(Refusal, match=r"teacher's 'fc' \(Linear: weight 10x16, bias 10\) as its 'fc' \(Linear: "
                                      r"weight 10x32, bias 10\)"):
        VanillaKD(student, teacher, inherit_layers=["body.0", "classifier"])
    with pytest.raises(Refusal, match="has no layer 'stemm'"):
        VanillaKD(_follower(), _teacher(), inherit_layers={"stemm": "stem"})
    with pytest.raises(Refusal, match="'stages' is not one layer"):
        VanillaKD(_follower(), _teacher(), inherit_layers="stages")


def test_a_mapping_names_the_students_layer_and_the_teachers() -> None:
    teacher, student = _teacher(), SmallCNN((8, 32, 24), num_classes=10)
    student.body[0] = nn.Conv2d(1, 8, 3, padding=1, bias=False)  # the teacher's stem: 1 -> 8 channels, no bias
    task = VanillaKD(student, teacher, inherit_layers={"body.0": "stem"})
    assert task.inherited_layers == ["body.0"] and torch.equal(student.body[0].weight, teacher.stem.weight)


class GenerationStarts(Callback):
    """The student's and teacher's weights as each generation starts."""

    def __init__(self) -> None:
        self.starts: dict[int, dict[str, dict[str, torch.Tensor]]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if pl_module.generation not in self.starts:
            self.starts[pl_module.generation] = {
                "student": state(pl_module.student),
                "teacher": state(pl_module.teacher) if pl_module.teacher is not None else {},
                "trainable": {n for n, p in pl_module.student.named_parameters() if p.requires_grad}}


def _born_again(folder: Path, callbacks: tuple = (), ckpt_path: str | None = None) -> tuple[BornAgain, Generations]:
    seed_everything(0)
    task = BornAgain([_teacher(), _follower()], loss="ban+l", inherit_layers=["stem", "classifier"])
    schedule = Generations(generations=2, epochs=1, dirpath=folder, print_table=False)
    cpu_trainer(max_epochs=None, limit_train_batches=4, limit_val_batches=1, callbacks=[schedule, *callbacks],
                enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
                deterministic=True).fit(task, DigitsDataModule(batch_size=32), ckpt_path=ckpt_path)
    return task, schedule


def test_each_born_again_generation_inherits_from_its_own_teacher(tmp_path: Path) -> None:
    spy = GenerationStarts()
    task, _ = _born_again(tmp_path, (spy,))
    # generation 0 (the DenseNet, no teacher) trains its stem and classifier; 1 and 2 (the residual students) take
    # them from their teachers, generation 0 and generation 1, and keep them
    assert {"stem.weight", "fc.weight"} <= spy.starts[0]["trainable"]
    for generation in (1, 2):
        start = spy.starts[generation]
        assert not {"stem.weight", "fc.weight", "fc.bias"} & start["trainable"]
        assert same(part_of(start["student"], "stem."), part_of(start["teacher"], "stem."))
        assert same(part_of(start["student"], "fc."), part_of(start["teacher"], "fc."))
    assert same(part_of(spy.starts[2]["teacher"], "stem."), part_of(spy.starts[1]["teacher"], "stem."))
    assert not same(part_of(spy.starts[1]["teacher"], "stem."), part_of(spy.starts[0]["student"], "stem."))
    assert same(part(task.student, "fc."), part(task.teacher, "fc."))  # after training too
    assert isinstance(task.student, DenseFollowerResNet) and task.inherited_layers == ["stem", "fc"]


def part_of(weights: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k.removeprefix(prefix): v for k, v in weights.items() if k.startswith(prefix)}


def test_a_run_killed_in_a_generation_that_inherits_resumes_to_the_same_end(tmp_path: Path) -> None:
    # generations 0, 1, 2 train in epochs 0, 1, 2: a kill at the start of epoch 2 resumes from generation 1's end
    uninterrupted, reference = _born_again(tmp_path / "a", (ModelCheckpoint(tmp_path / "a", save_last=True),))
    with pytest.raises(RuntimeError, match="simulated kill"):
        _born_again(tmp_path / "b", (ModelCheckpoint(tmp_path / "b", save_last=True), KillAtEpoch(2)))
    resumed, schedule = _born_again(tmp_path / "b", (ModelCheckpoint(tmp_path / "b", save_last=True),),
                                    ckpt_path=str(tmp_path / "b/last.ckpt"))
    assert resumed.generation == 2 and resumed.inherited_layers == ["stem", "fc"]
    assert not resumed.student.stem.weight.requires_grad
    assert same(state(resumed.student), state(uninterrupted.student))
    assert schedule.results["generations"] == reference.results["generations"]


def test_a_checkpoint_reloads_with_its_inherited_layers_frozen(tmp_path: Path) -> None:
    seed_everything(0)
    task = VanillaKD(_follower(), _teacher(), inherit_layers=["stem", "classifier"])
    trainer = cpu_trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1)
    trainer.fit(task, DigitsDataModule(batch_size=32))
    trainer.save_checkpoint(tmp_path / "kd.ckpt")
    loaded = VanillaKD.load_from_checkpoint(tmp_path / "kd.ckpt", student=_follower(), teacher=_teacher())
    assert loaded.hparams["inherit_layers"] == ["stem", "classifier"] and loaded.inherited_layers == ["stem", "fc"]
    assert same(state(loaded.student), state(task.student)) and not loaded.student.fc.weight.requires_grad


def test_the_paper_table_5_students_share_the_densenet_teachers_stem_and_classifier() -> None:
    teacher = create_model("densenet_90_60", num_classes=100)
    for name in ("ban_preresnet_14_0_5", "ban_wrn_4_0_5"):
        student = create_model(name, num_classes=100)
        task = VanillaKD(student, teacher, inherit_layers=["stem", "classifier"])
        assert task.inherited_layers == ["stem", "fc"], name


@pytest.mark.parametrize("config", ["cifar100_densenet_90_60_preresnet_14_0_5_ban",
                                    "cifar100_densenet_90_60_wrn_4_0_5_ban"])
def test_the_table_5_configs_students_inherit_the_full_size_teachers_stem_and_classifier(config: str) -> None:
    import yaml
    from jsonargparse import ArgumentParser

    from lightning_kd.tasks.base import BaseTask
    from tests.conftest import CONFIGS

    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(BaseTask, "model", required=True)
    settings = yaml.safe_load((CONFIGS / f"{config}.yaml").read_text())
    task = parser.instantiate(parser.parse_object({"model": settings["model"]})).model
    assert isinstance(task.student, DenseNet) and task.inherited_layers == []  # generation 0: from labels
    assert task.promote()  # generation 1: the residual student, with the teacher's stem and classifier frozen
    assert isinstance(task.student, DenseFollowerResNet) and task.inherited_layers == ["stem", "fc"]
    assert same(part(task.student, "fc."), part(task.teacher, "fc.")) and task.student.fc.in_features == 1500


def test_the_born_again_networks_have_the_parameter_counts_the_docs_give() -> None:
    from lightning_kd.models import count_parameters

    millions = {name: round(count_parameters(create_model(name, num_classes=100)) / 1e6, 1)
                for name in ("wrn_28_10", "densenet_90_60", "ban_preresnet_14_0_5", "ban_wrn_4_0_5")}
    assert millions == {"wrn_28_10": 36.5, "densenet_90_60": 15.2, "ban_preresnet_14_0_5": 6.6, "ban_wrn_4_0_5": 17.4}
    assert round(count_parameters(create_model("wrn_28_1", num_classes=100)) / 1e6, 2) == 0.38


def test_a_run_that_inherits_is_named_apart_from_one_that_does_not() -> None:
    assert BornAgain.run_variant({"loss": "ban", "inherit_layers": ["stem", "classifier"]}) == \
        "ban-inherit-stem-classifier"
    assert BornAgain.run_variant({"loss": "ban", "inherit_layers": None}) == "ban"


def test_a_born_again_run_without_a_teacher_is_refused_before_generation_0_trains() -> None:
    # generation 0 learns from labels: its successors' layers and shapes are checked when the task is built
    with pytest.raises(Refusal, match="has no layer 'stemm'"):
        BornAgain([_teacher(), _follower()], inherit_layers=["stemm", "classifier"])
    with pytest.raises(Refusal, match=r"teacher's 'fc' \(Linear: weight 10x16, bias 10\) as its 'fc'"):
        BornAgain([SmallCNN((8, 16), num_classes=10), SmallCNN((8, 32), num_classes=10)], inherit_layers="classifier")
    task = BornAgain([_teacher(), _follower()], inherit_layers=["stem", "classifier"])
    assert task.inherited_layers == [] and task.student.stem.weight.requires_grad  # generation 0 still trains them
