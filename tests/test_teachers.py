"""Several teachers of different architectures: frozen, out of DDP, checked, refused by name when they misfit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from pytorch_lightning import Callback, seed_everything
from torch import Tensor, nn

from lightning_kd import VanillaKD
from lightning_kd.checkpoints import CheckpointError
from lightning_kd.data import DigitsDataModule
from lightning_kd.losses import hinton_kd_loss
from lightning_kd.models import MLP, CifarResNet, SmallCNN
from lightning_kd.tasks.distillation import DistillationTask
from tests.helpers import cpu_trainer


class MeanOfTeachersKD(DistillationTask):
    """A stand-in multi-teacher method: Hinton KD against each teacher, averaged."""

    max_teachers = None

    def training_losses(self, batch: dict[str, Tensor]) -> tuple[dict[str, Tensor], Tensor]:
        logits = self.student(batch["input"])
        parts = [hinton_kd_loss(logits, t.logits, batch["target"]) for t in self.teacher_outputs(batch)]
        return {"loss": torch.stack([p["loss"] for p in parts]).mean()}, logits


def three_teachers() -> list[nn.Module]:
    return [SmallCNN(widths=(8, 16), num_classes=10), MLP(hidden_sizes=(32,), num_classes=10),
            CifarResNet(depth=8, widths=(8, 8, 16, 32), num_classes=10, in_channels=1)]


def test_three_teachers_are_held_by_role_frozen_and_in_eval() -> None:
    task = MeanOfTeachersKD(MLP(hidden_sizes=(16,), num_classes=10), three_teachers())
    assert list(task.networks()) == ["student", "teacher", "teacher_2", "teacher_3"]
    assert [type(t).__name__ for t in task.teacher_networks().values()] == ["SmallCNN", "MLP", "CifarResNet"]
    task.train()
    for role, teacher in task.teacher_networks().items():
        assert not teacher.training and not any(p.requires_grad for p in teacher.parameters()), role
    outputs = task.teacher_outputs({"input": torch.randn(3, 1, 8, 8)})
    assert [tuple(o.logits.shape) for o in outputs] == [(3, 10)] * 3


class RankReport(Callback):
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.ignored: list[str] = []

    def on_train_start(self, trainer, pl_module) -> None:
        self.ignored = sorted(getattr(trainer.strategy.model, "parameters_to_ignore", []))

    def on_fit_end(self, trainer, pl_module) -> None:
        report = {
            "metrics": {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")},
            "student": [float(p.double().sum()) for p in pl_module.student.parameters()],
            "teachers": {role: [float(t.double().sum()) for t in net.state_dict().values()]
                         for role, net in pl_module.teacher_networks().items()},
            "teachers_training": [net.training for net in pl_module.teacher_networks().values()],
            "ignored": self.ignored,
        }
        (self.folder / f"rank{trainer.global_rank}.json").write_text(json.dumps(report))


def _three_teachers_under_ddp(folder: Path) -> None:
    seed_everything(0)
    teachers = three_teachers()  # first: the test rebuilds them from the same seed
    task = MeanOfTeachersKD(MLP(hidden_sizes=(16,), num_classes=10), teachers)
    trainer = cpu_trainer(devices=2, strategy="ddp", max_epochs=1, limit_train_batches=4,
                          callbacks=[RankReport(folder)])
    trainer.fit(task, datamodule=DigitsDataModule(batch_size=32))


@pytest.mark.ddp(scenario=_three_teachers_under_ddp)
def test_three_teachers_under_two_process_ddp(ddp_run: Path) -> None:
    seed_everything(0)
    teachers = three_teachers()  # as the scenario built them
    before = {role: [float(t.double().sum()) for t in net.state_dict().values()]
              for role, net in zip(["teacher", "teacher_2", "teacher_3"], teachers, strict=True)}
    keys = {f"teachers.{role}.{k}" for role, net in zip(before, teachers, strict=True) for k in net.state_dict()}
    tmp_path = ddp_run
    rank0, rank1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert set(rank0["ignored"]) == set(rank1["ignored"]) == keys  # DDP syncs no teacher parameter or buffer
    assert rank0["teachers"] == rank1["teachers"] == before  # untouched, BatchNorm statistics included
    assert rank0["teachers_training"] == rank1["teachers_training"] == [False] * 3
    assert rank0["student"] == rank1["student"]
    assert rank0["metrics"] == rank1["metrics"]
    assert {"val/teacher/acc", "val/teacher_2/acc", "val/teacher_3/acc", "val/agreement/teacher_3"} <= set(
        rank0["metrics"])


def test_a_misfit_checkpoint_for_the_second_teacher_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "cnn.pt"
    torch.save(SmallCNN(widths=(8, 16), num_classes=10).state_dict(), path)
    with pytest.raises(CheckpointError, match=rf"teacher_2: checkpoint {path} does not fit MLP"):
        MeanOfTeachersKD(MLP(num_classes=10), [SmallCNN(widths=(8, 16), num_classes=10), MLP(num_classes=10)],
                         teacher_ckpt=[None, path])
    # the same file fits the first teacher
    task = MeanOfTeachersKD(MLP(num_classes=10), [SmallCNN(widths=(8, 16), num_classes=10), MLP(num_classes=10)],
                            teacher_ckpt=[path, None])
    torch.testing.assert_close(task.teacher.fc.weight, torch.load(path, weights_only=True)["fc.weight"])


def test_a_teacher_of_another_class_count_is_refused_by_role_before_training() -> None:
    teachers = [SmallCNN(widths=(8, 16), num_classes=10), MLP(num_classes=7)]
    with pytest.raises(ValueError, match=r"the teacher_2 network \(MLP\) predicts \(7,\) outputs"):
        cpu_trainer(fast_dev_run=True).fit(MeanOfTeachersKD(MLP(num_classes=10), teachers),
                                           datamodule=DigitsDataModule())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"teacher": [SmallCNN(), MLP()], "teacher_ckpt": ["a.ckpt"]}, "2 teacher networks but 1 teacher checkpoints"),
        ({"teacher": [SmallCNN(), None]}, "teacher_2 has neither a network"),
    ],
)
def test_inconsistent_teacher_lists_are_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MeanOfTeachersKD(MLP(num_classes=10), **kwargs)


def test_a_one_teacher_method_refuses_several() -> None:
    with pytest.raises(ValueError, match="VanillaKD learns from 1 teacher, got 2"):
        VanillaKD(MLP(num_classes=10), [SmallCNN(), MLP()])


def test_several_teachers_from_a_config_get_the_datas_shape_and_reload(tmp_path: Path, monkeypatch) -> None:
    from lightning_kd.cli import main

    monkeypatch.chdir(tmp_path)
    config = {
        "seed_everything": 0,
        "trainer": {"max_epochs": 1, "limit_train_batches": 2, "limit_val_batches": 1, "logger": False,
                    "enable_progress_bar": False,
                    "callbacks": [{"class_path": "pytorch_lightning.callbacks.ModelCheckpoint",
                                   "init_args": {"dirpath": "ckpts", "filename": "mt"}}]},
        "model": {"class_path": f"{__name__}.MeanOfTeachersKD", "init_args": {
            "student": {"class_path": "lightning_kd.models.MLP", "init_args": {"hidden_sizes": [16]}},
            "teacher": [{"class_path": "lightning_kd.models.SmallCNN", "init_args": {"widths": [8, 16]}},
                        {"class_path": "lightning_kd.models.MLP"}],
            "teacher_ckpt": [None, None]}},
        "data": {"class_path": "lightning_kd.data.DigitsDataModule"},
    }
    (tmp_path / "mt.json").write_text(json.dumps(config))
    main(["fit", "--config", "mt.json"])
    reloaded = MeanOfTeachersKD.load_from_checkpoint(tmp_path / "ckpts/latest/mt.ckpt")  # every network from the config
    assert [type(t).__name__ for t in reloaded.teacher_networks().values()] == ["SmallCNN", "MLP"]
    assert reloaded.hparams.teacher[1]["init_args"]["input_shape"] == [1, 8, 8]
    record = torch.load(tmp_path / "ckpts/latest/mt.ckpt", weights_only=True)["lightning_kd"]
    assert record["roles"]["teacher_2"] == {"class": "MLP", "parameters": 9610}


def test_a_teacher_trained_on_other_data_is_refused_naming_both(tmp_path: Path) -> None:
    from pytorch_lightning.callbacks import ModelCheckpoint

    from lightning_kd import Classifier, MultiTeacherKD
    from lightning_kd.data import MNIST5kDataModule
    from lightning_kd.errors import Refusal

    # issue 23: a digits (8x8) teacher was accepted for an MNIST (28x28) student, its size-agnostic network
    # taking the input, and the student distilled from a teacher at 9% accuracy
    seed_everything(0)
    cpu_trainer(max_epochs=1, limit_train_batches=2, enable_checkpointing=True,
                callbacks=[ModelCheckpoint(tmp_path, "digits")]).fit(
        Classifier(SmallCNN(widths=(8, 16), num_classes=10)), datamodule=DigitsDataModule(batch_size=32))
    path = tmp_path / "digits.ckpt"
    message = (r"teacher(_2)? was trained on other data than this run's \(class DigitsDataModule there, "
               r"MNIST5kDataModule here; input_shape \[1, 8, 8\] there, \[1, 28, 28\] here\)")
    mnist = MNIST5kDataModule(batch_size=32)
    for task in (VanillaKD(MLP(input_shape=(1, 28, 28), num_classes=10), SmallCNN(widths=(8, 16), num_classes=10),
                           teacher_ckpt=path),
                 MultiTeacherKD(MLP(input_shape=(1, 28, 28), num_classes=10),
                                [SmallCNN(widths=(8, 16), num_classes=10), SmallCNN(widths=(8, 16), num_classes=10)],
                                teacher_ckpt=[None, path])):
        with pytest.raises(Refusal, match=message):
            cpu_trainer(max_steps=1).fit(task, datamodule=mnist)
    # the same weights as a plain state dict record no data: accepted, as the message says
    plain = tmp_path / "plain.pt"
    torch.save(torch.load(path, weights_only=True)["state_dict"], plain)
    weights = {k.removeprefix("net."): v for k, v in torch.load(plain, weights_only=True).items()}
    torch.save(weights, plain)
    task = VanillaKD(MLP(input_shape=(1, 28, 28), num_classes=10), SmallCNN(widths=(8, 16), num_classes=10),
                     teacher_ckpt=plain)
    cpu_trainer(max_steps=1, limit_val_batches=1).fit(task, datamodule=mnist)
    # the same data: accepted
    task = VanillaKD(MLP(input_shape=(1, 8, 8), num_classes=10), SmallCNN(widths=(8, 16), num_classes=10),
                     teacher_ckpt=path)
    cpu_trainer(max_steps=1, limit_val_batches=1).fit(task, datamodule=DigitsDataModule(batch_size=32))
