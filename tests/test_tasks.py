"""The tasks' behaviour: teacher handling, learning on real data, metrics, refused inputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pytorch_lightning import Callback, seed_everything
from pytorch_lightning.loggers import Logger
from torch import nn

from lightning_kd import Classifier, VanillaKD
from lightning_kd.checkpoints import CheckpointError, load_network
from lightning_kd.compat import DDP_IGNORE_ATTRIBUTE
from lightning_kd.data import DigitsDataModule, MNIST5kDataModule
from lightning_kd.models import MLP, SmallCNN
from tests.helpers import cpu_trainer


@pytest.fixture(scope="module")
def digits_teacher(tmp_path_factory: pytest.TempPathFactory) -> tuple[SmallCNN, Path]:
    """A SmallCNN trained on digits for a few epochs, and its lightning-kd checkpoint."""
    seed_everything(0)
    task = Classifier(SmallCNN(widths=(16, 32), num_classes=10))
    trainer = cpu_trainer(max_epochs=4)
    trainer.fit(task, datamodule=DigitsDataModule(batch_size=64))
    path = tmp_path_factory.mktemp("teacher") / "teacher.ckpt"
    trainer.save_checkpoint(path)
    return task.net, path


class TeacherWatch(Callback):
    """Asserts, at every training and validation step, that the teacher is frozen and in eval mode."""

    def __init__(self) -> None:
        self.checked_train = self.checked_val = 0

    def _check(self, pl_module: VanillaKD) -> None:
        assert not pl_module.teacher.training
        assert all(not m.training for m in pl_module.teacher.modules())
        assert all(not p.requires_grad and p.grad is None for p in pl_module.teacher.parameters())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._check(pl_module)
        assert pl_module.student.training
        optimized = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
        assert optimized == {id(p) for p in pl_module.student.parameters()}
        assert all(p.grad is not None for p in pl_module.student.parameters())
        self.checked_train += 1

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self._check(pl_module)
        self.checked_val += 1


def test_teacher_gets_no_gradient_and_stays_in_eval_through_fit(digits_teacher) -> None:
    teacher, _ = digits_teacher
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = MLP(hidden_sizes=(16,), num_classes=10)
    student_before = [p.clone() for p in student.parameters()]
    task = VanillaKD(student, teacher)
    watch = TeacherWatch()
    cpu_trainer(max_epochs=2, callbacks=[watch]).fit(task, datamodule=DigitsDataModule(batch_size=64))
    assert watch.checked_train > 0 and watch.checked_val > 0
    # BatchNorm running statistics (and every other buffer) untouched: the teacher never ran in train mode
    for key, value in task.teacher.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert any(not torch.equal(a, b) for a, b in zip(student_before, student.parameters(), strict=True))
    # DDP leaves every teacher parameter and buffer alone
    assert set(getattr(task, DDP_IGNORE_ATTRIBUTE)) == {f"teachers.teacher.{k}" for k in before}


def test_classifier_learns_real_digits() -> None:
    seed_everything(0)
    task = Classifier(SmallCNN(widths=(16, 32), num_classes=10))
    trainer = cpu_trainer()
    dm = DigitsDataModule(batch_size=64)
    before = trainer.test(task, datamodule=dm, verbose=False)[0]["test/acc"]
    trainer = cpu_trainer(max_epochs=8)
    trainer.fit(task, datamodule=dm)
    after = trainer.test(task, datamodule=dm, verbose=False)[0]["test/acc"]
    assert before < 0.3 and after > 0.9


def test_kd_student_learns_mnist5k_from_teacher() -> None:
    seed_everything(0)
    dm = MNIST5kDataModule(batch_size=64)
    teacher_task = Classifier(SmallCNN(widths=(32, 64, 128), num_classes=10))
    cpu_trainer(max_epochs=3).fit(teacher_task, datamodule=dm)
    task = VanillaKD(MLP(input_shape=(1, 28, 28), hidden_sizes=(64,), num_classes=10), teacher_task.net)
    trainer = cpu_trainer(max_epochs=5)
    trainer.fit(task, datamodule=dm)
    results = trainer.test(task, datamodule=dm, verbose=False)[0]
    assert results["test/acc"] > 0.8
    assert results["test/agreement"] > 0.8


def test_teacher_accuracy_and_agreement_equal_hand_computation(digits_teacher) -> None:
    teacher, _ = digits_teacher
    dm = DigitsDataModule(batch_size=50)
    task = VanillaKD(MLP(hidden_sizes=(8,), num_classes=10), teacher)
    results = cpu_trainer().validate(task, datamodule=dm, verbose=False)[0]
    batches = list(dm.val_dataloader())
    x = torch.cat([b["input"] for b in batches])
    y = torch.cat([b["target"] for b in batches])
    with torch.no_grad():
        teacher_pred = teacher.eval()(x).argmax(1)
        student_pred = task.student.eval()(x).argmax(1)
    assert results["val/teacher/acc"] == pytest.approx((teacher_pred == y).float().mean().item())
    assert results["val/agreement"] == pytest.approx((teacher_pred == student_pred).float().mean().item())
    assert results["val/acc"] == pytest.approx((student_pred == y).float().mean().item())


def test_teacher_accuracy_is_logged_every_validation_epoch(digits_teacher) -> None:
    teacher, _ = digits_teacher
    task = VanillaKD(MLP(hidden_sizes=(8,), num_classes=10), teacher)

    class Record(Callback):
        def __init__(self) -> None:
            self.logged: list[float] = []

        def on_validation_epoch_end(self, trainer, pl_module) -> None:
            if not trainer.sanity_checking:
                self.logged.append(float(trainer.callback_metrics["val/teacher/acc"]))

    record = Record()
    cpu_trainer(max_epochs=3, limit_train_batches=2, callbacks=[record]).fit(
        task, datamodule=DigitsDataModule(batch_size=64))
    # the frozen teacher scores the same every epoch, and the number is logged every epoch
    assert len(record.logged) == 3 and len(set(record.logged)) == 1 and record.logged[0] > 0.5


def test_checkpoint_round_trip(tmp_path: Path, digits_teacher) -> None:
    _, teacher_ckpt = digits_teacher
    task = VanillaKD(MLP(hidden_sizes=(8,), num_classes=10), teacher_ckpt=teacher_ckpt,
                     teacher=SmallCNN(widths=(16, 32), num_classes=10), temperature=2.0)
    trainer = cpu_trainer(limit_train_batches=3, limit_val_batches=1)
    trainer.fit(task, datamodule=DigitsDataModule())
    path = tmp_path / "kd.ckpt"
    trainer.save_checkpoint(path)
    assert all(not isinstance(v, nn.Module) for v in task.hparams.values())
    reloaded = VanillaKD.load_from_checkpoint(path, student=MLP(hidden_sizes=(8,), num_classes=10),
                                              teacher=SmallCNN(widths=(16, 32), num_classes=10))
    assert reloaded.hparams.temperature == 2.0
    x = torch.randn(5, 1, 8, 8)
    task.eval()
    reloaded.eval()
    torch.testing.assert_close(reloaded(x), task(x))
    torch.testing.assert_close(reloaded.teacher(x), task.teacher(x))
    # the student hands on as a teacher
    student = load_network(path, MLP(hidden_sizes=(8,), num_classes=10))
    torch.testing.assert_close(student.eval()(x), task.student(x))


# -- refused inputs -------------------------------------------------------------------------------
def _fit(task) -> None:
    cpu_trainer(fast_dev_run=True).fit(task, datamodule=DigitsDataModule())


def test_teacher_with_another_class_count_is_refused() -> None:
    task = VanillaKD(MLP(num_classes=10), SmallCNN(num_classes=5))
    with pytest.raises(ValueError, match=r"teacher network \(SmallCNN\) predicts \(5,\) outputs.*10 classes"):
        _fit(task)


def test_student_with_another_class_count_is_refused() -> None:
    with pytest.raises(ValueError, match=r"student network \(MLP\) predicts \(3,\).*10 classes"):
        _fit(VanillaKD(MLP(num_classes=3), SmallCNN(num_classes=10)))


def test_network_that_does_not_fit_the_input_shape_is_refused() -> None:
    with pytest.raises(ValueError, match=r"student network \(MLP\) fails on inputs of shape \(1, 8, 8\)"):
        _fit(VanillaKD(MLP(input_shape=(1, 28, 28), num_classes=10), SmallCNN(num_classes=10)))


def test_a_teacher_is_required() -> None:
    with pytest.raises(ValueError, match="needs a teacher"):
        VanillaKD(MLP(num_classes=10))


def test_missing_checkpoint_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        VanillaKD(MLP(num_classes=10), SmallCNN(), teacher_ckpt=tmp_path / "nope.ckpt")


def test_corrupt_checkpoint_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "broken.ckpt"
    path.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt or not a PyTorch checkpoint"):
        VanillaKD(MLP(num_classes=10), SmallCNN(), teacher_ckpt=path)


def test_checkpoint_of_another_architecture_is_refused(digits_teacher) -> None:
    _, path = digits_teacher
    with pytest.raises(CheckpointError, match=r"does not fit MLP: unexpected keys \[body.0.weight.*shape mismatches"):
        VanillaKD(MLP(num_classes=10), MLP(num_classes=10), teacher_ckpt=path)


def test_checkpoint_with_another_class_count_is_refused(digits_teacher) -> None:
    _, path = digits_teacher
    with pytest.raises(CheckpointError, match=r"shape mismatches \[fc.weight: \(10, 32\) in the checkpoint, \(5, 32\)"):
        VanillaKD(MLP(num_classes=5), SmallCNN(widths=(16, 32), num_classes=5), teacher_ckpt=path)


def test_checkpoint_without_network_config_needs_the_network(tmp_path: Path) -> None:
    path = tmp_path / "plain.pt"
    torch.save(SmallCNN().state_dict(), path)
    with pytest.raises(CheckpointError, match="pass the network as well"):
        VanillaKD(MLP(num_classes=10), teacher_ckpt=path)
    # with the network it loads
    assert VanillaKD(MLP(num_classes=10), SmallCNN(), teacher_ckpt=path).teacher is not None


def test_foreign_lightning_checkpoint_is_explained(tmp_path: Path) -> None:
    path = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": SmallCNN().state_dict(), "epoch": 3}, path)
    with pytest.raises(CheckpointError, match="not written by lightning-kd"):
        VanillaKD(MLP(num_classes=10), SmallCNN(), teacher_ckpt=path)


@pytest.mark.parametrize(("kwargs", "match"), [({"temperature": 0.0}, "temperature must be finite and > 0"),
                                                ({"alpha": 1.2}, "alpha must be in")])
def test_bad_kd_hyperparameters_are_refused(kwargs, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        VanillaKD(MLP(num_classes=10), SmallCNN(num_classes=10), **kwargs)


# -- hyperparameters and checkpoints --------------------------------------------------------------
def test_python_built_task_saves_its_plain_arguments_only(tmp_path: Path) -> None:
    path = tmp_path / "teacher.pt"
    torch.save(SmallCNN(widths=(8, 16)).state_dict(), path)
    task = VanillaKD(MLP(num_classes=10), SmallCNN(widths=(8, 16)), path, 0.5, temperature=2.0)
    # positional and keyword arguments alike; networks and callables left out; paths as strings
    assert dict(task.hparams) == {"teacher_ckpt": str(path), "alpha": 0.5, "temperature": 2.0,
                                  "label_smoothing": 0.0, "smoothing_convention": "uniform", "lr_scheduler": "cosine",
                                  "student_ckpt": None, "inherit_layers": None}
    import copy
    import pickle

    for clone in (copy.deepcopy(task), pickle.loads(pickle.dumps(task))):  # copies construct nothing anew
        assert dict(clone.hparams) == dict(task.hparams)
        torch.testing.assert_close(clone.teacher.fc.weight, task.teacher.fc.weight)


def test_a_checkpoint_of_format_1_still_loads(tmp_path: Path, digits_teacher) -> None:
    teacher, _ = digits_teacher
    task = VanillaKD(MLP(hidden_sizes=(8,), num_classes=10), teacher)
    trainer = cpu_trainer(limit_train_batches=2, limit_val_batches=1)
    trainer.fit(task, datamodule=DigitsDataModule())
    path = tmp_path / "new.ckpt"
    trainer.save_checkpoint(path)
    # lightning-kd 0.1 wrote format 1: the teacher under "teacher.", no roles
    checkpoint = torch.load(path, weights_only=False)
    state = checkpoint["state_dict"]
    checkpoint["state_dict"] = {k.replace("teachers.teacher.", "teacher."): v for k, v in state.items()}
    checkpoint["lightning_kd"] = {"format_version": 1, "network": "student", "network_config": None, "num_classes": 10}
    old = tmp_path / "old.ckpt"
    torch.save(checkpoint, old)
    reloaded = VanillaKD.load_from_checkpoint(old, student=MLP(hidden_sizes=(8,), num_classes=10),
                                              teacher=SmallCNN(widths=(16, 32), num_classes=10))
    x = torch.randn(3, 1, 8, 8)
    torch.testing.assert_close(reloaded.teacher.eval()(x), teacher.eval()(x))
    student = load_network(old, MLP(hidden_sizes=(8,), num_classes=10))
    torch.testing.assert_close(student.eval()(x), task.student.eval()(x))


class _Recorder(Logger):
    """Keeps what the trainer writes, step by step."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[int | None, dict[str, float]]] = []

    @property
    def name(self) -> str:
        return "recorder"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.writes.append((step, dict(metrics)))


def test_training_parts_reach_the_logger_on_its_steps_and_their_epoch_means_are_weighted_by_batch() -> None:
    seed_everything(0)
    task = VanillaKD(MLP(hidden_sizes=(16,), num_classes=10), SmallCNN(widths=(8, 16), num_classes=10))
    recorded: list[tuple[int, dict[str, float], int]] = []
    original = task.log_training

    def spy(batch, losses, logits) -> None:  # what the step computed, before the task logs it
        correct = int((logits.argmax(1) == batch["target"]).sum())
        recorded.append((len(batch["target"]), {k: float(v) for k, v in losses.items()}, correct))
        original(batch, losses, logits)

    task.log_training = spy
    recorder = _Recorder()
    trainer = cpu_trainer(max_epochs=2, limit_train_batches=7, limit_val_batches=0, logger=recorder,
                          log_every_n_steps=3)
    trainer.fit(task, datamodule=DigitsDataModule(batch_size=100))
    step_writes = {step: m for step, m in recorder.writes if "train/loss_step" in m}
    assert sorted(step_writes) == [2, 5, 8, 11]  # every third step (0-based), across the epochs
    for step, metrics in step_writes.items():
        _, losses, _ = recorded[step]
        assert metrics["train/ce_loss_step"] == pytest.approx(losses["ce"])
        assert metrics["train/kd_loss_step"] == pytest.approx(losses["kd"])
    epoch_writes = [m for _, m in recorder.writes if "train/kd_loss_epoch" in m]
    assert len(epoch_writes) == 2
    for epoch, metrics in enumerate(epoch_writes):
        batches = recorded[7 * epoch:7 * (epoch + 1)]
        samples = sum(size for size, _, _ in batches)
        for part in ("ce", "kd", "loss"):
            mean = sum(size * losses[part] for size, losses, _ in batches) / samples
            key = "train/loss_epoch" if part == "loss" else f"train/{part}_loss_epoch"
            assert metrics[key] == pytest.approx(mean, rel=1e-5)
        assert metrics["train/acc"] == pytest.approx(sum(c for _, _, c in batches) / samples)
    assert trainer.callback_metrics["train/kd_loss"] == pytest.approx(epoch_writes[-1]["train/kd_loss_epoch"])


def test_an_epoch_cut_short_by_max_steps_still_logs_its_means() -> None:
    seed_everything(0)
    task = VanillaKD(MLP(hidden_sizes=(16,), num_classes=10), SmallCNN(widths=(8, 16), num_classes=10))
    recorded: list[tuple[int, float]] = []
    original = task.log_training

    def spy(batch, losses, logits) -> None:
        recorded.append((len(batch["target"]), float(losses["kd"])))
        original(batch, losses, logits)

    task.log_training = spy
    recorder = _Recorder()
    trainer = cpu_trainer(max_steps=3, limit_train_batches=7, limit_val_batches=0, logger=recorder)
    trainer.fit(task, datamodule=DigitsDataModule(batch_size=100))
    assert len(recorded) == 3
    (epoch_write,) = [m for _, m in recorder.writes if "train/kd_loss_epoch" in m]
    mean = sum(size * kd for size, kd in recorded) / sum(size for size, _ in recorded)
    assert epoch_write["train/kd_loss_epoch"] == pytest.approx(mean, rel=1e-5) and "train/acc" in epoch_write


def test_student_ckpt_starts_the_student_from_a_checkpoint_read_once(tmp_path) -> None:
    import torch

    from lightning_kd import VanillaKD
    from lightning_kd.checkpoints import CHECKPOINT_KEY
    from lightning_kd.data import DigitsDataModule
    from lightning_kd.models import MLP, SmallCNN
    from tests.helpers import cpu_trainer

    first_stage = MLP(hidden_sizes=(16,), num_classes=10)
    torch.save(first_stage.state_dict(), tmp_path / "stage1.pt")
    task = VanillaKD(MLP(hidden_sizes=(16,), num_classes=10), SmallCNN(widths=(8, 16), num_classes=10),
                     student_ckpt=tmp_path / "stage1.pt")
    assert all(torch.equal(a, b) for a, b in zip(task.student.state_dict().values(),
                                                 first_stage.state_dict().values(), strict=True))
    trainer = cpu_trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1)
    trainer.fit(task, datamodule=DigitsDataModule(batch_size=32))
    trainer.save_checkpoint(tmp_path / "stage2.ckpt")
    (tmp_path / "stage1.pt").unlink()  # the second stage's checkpoint holds the weights: no need of the first
    saved = torch.load(tmp_path / "stage2.ckpt", weights_only=True)
    assert saved["hyper_parameters"]["student_ckpt"] is None
    assert saved[CHECKPOINT_KEY]["student_ckpt"] == str(tmp_path / "stage1.pt")
    VanillaKD.load_from_checkpoint(tmp_path / "stage2.ckpt", student=MLP(hidden_sizes=(16,), num_classes=10),
                                   teacher=SmallCNN(widths=(8, 16), num_classes=10))


def test_a_student_ckpt_that_does_not_fit_is_refused_naming_the_file(tmp_path) -> None:
    import pytest
    import torch

    from lightning_kd import VanillaKD
    from lightning_kd.errors import Refusal
    from lightning_kd.models import MLP

    torch.save(MLP(hidden_sizes=(32,), num_classes=10).state_dict(), tmp_path / "other.pt")
    with pytest.raises(Refusal, match=r"other\.pt"):
        VanillaKD(MLP(hidden_sizes=(16,), num_classes=10), MLP(num_classes=10), student_ckpt=tmp_path / "other.pt")
