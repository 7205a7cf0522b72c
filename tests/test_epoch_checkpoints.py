"""EpochCheckpoints: the weights after a chosen epoch, kept as a ready teacher (De-KD's poorly trained teacher)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pytorch_lightning import seed_everything

from lightning_kd import Classifier, VanillaKD
from lightning_kd.callbacks import EpochCheckpoints
from lightning_kd.data import DigitsDataModule
from lightning_kd.models import MLP, SmallCNN
from tests.helpers import cpu_trainer


def _fit(max_epochs: int, callbacks: list, root: Path) -> Classifier:
    seed_everything(0)
    # a constant learning rate: a schedule over max_epochs would make epoch 1 differ between the two runs
    task = Classifier(SmallCNN(widths=(8, 16), num_classes=10), lr_scheduler="none")
    checkpointing = any(type(c).__name__ == "ModelCheckpoint" for c in callbacks)
    trainer = cpu_trainer(max_epochs=max_epochs, callbacks=callbacks, default_root_dir=root,
                          enable_checkpointing=checkpointing)
    trainer.fit(task, DigitsDataModule(batch_size=64))
    return task


def test_the_checkpoint_holds_the_weights_after_the_chosen_epoch(tmp_path: Path) -> None:
    keeper = EpochCheckpoints(epochs=[1, 2], dirpath=tmp_path / "kept")
    full = _fit(4, [keeper], tmp_path)
    after_one = _fit(1, [], tmp_path)  # the same run stopped after one epoch
    kept = torch.load(tmp_path / "kept/after_epoch_1.ckpt", weights_only=True)
    state = kept["state_dict"]
    assert all(torch.equal(state[key], value) for key, value in after_one.state_dict().items())
    final = full.state_dict()
    assert any(not torch.equal(state[key], final[key]) for key in final if key.endswith("weight"))
    assert kept["epoch"] == 0 and kept[EpochCheckpoints.RECORD_KEY]["epoch"] == 1
    assert 0 <= kept[EpochCheckpoints.RECORD_KEY]["val"]["val/acc"] <= 1
    assert keeper.written == {e: str(tmp_path / f"kept/after_epoch_{e}.ckpt") for e in (1, 2)}
    assert not (tmp_path / "kept/after_epoch_3.ckpt").exists()


def test_a_kept_checkpoint_is_a_ready_teacher(tmp_path: Path) -> None:
    _fit(2, [EpochCheckpoints(epochs=1, dirpath=tmp_path, filename="poor")], tmp_path)
    poor = _fit(1, [], tmp_path)
    # built in Python, the teacher's network comes with its checkpoint (CLI checkpoints record their configs)
    student = VanillaKD(MLP(hidden_sizes=(8,), num_classes=10), SmallCNN(widths=(8, 16), num_classes=10),
                        teacher_ckpt=tmp_path / "poor.ckpt")
    assert all(torch.equal(a, b) for a, b in zip(student.teacher.state_dict().values(),
                                                 poor.net.state_dict().values(), strict=True))
    trainer = cpu_trainer(max_epochs=1, limit_train_batches=2)
    trainer.fit(student, DigitsDataModule(batch_size=64))
    assert "val/teacher/acc" in trainer.callback_metrics  # the poor teacher's accuracy is shown in the run


def test_an_epoch_past_the_budget_is_refused_before_training(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"epoch\(s\) \[5\] lie past trainer.max_epochs=2"):
        _fit(2, [EpochCheckpoints(epochs=[1, 5], dirpath=tmp_path)], tmp_path)
    assert not list(tmp_path.glob("*.ckpt"))


def test_a_filename_the_checkpoint_callback_rewrites_is_refused_before_training(tmp_path: Path) -> None:
    from pytorch_lightning.callbacks import ModelCheckpoint

    # issue 23: "kept the weights after epoch 1" was printed while the file went on to hold epoch 2
    for clash, checkpoint in (("kd", ModelCheckpoint(tmp_path, "kd")),
                              ("last", ModelCheckpoint(tmp_path, "best-{epoch}", save_last=True))):
        with pytest.raises(ValueError, match=rf"the weights after epoch 1 would go to .*{clash}\.ckpt, the file "
                                             r"ModelCheckpoint rewrites as the run goes on"):
            _fit(2, [checkpoint, EpochCheckpoints(epochs=1, dirpath=tmp_path, filename=clash)], tmp_path)
        assert not list(tmp_path.glob("*.ckpt"))


@pytest.mark.parametrize(("arguments", "message"), [
    ({"epochs": 0}, "epochs are counted from 1"),
    ({"epochs": []}, "epochs are counted from 1"),
    ({"epochs": [1, 2], "filename": "poor"}, "needs '{epoch}'"),
])
def test_bad_arguments_are_refused(arguments: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EpochCheckpoints(**arguments)
