"""Every run keeps its outputs: a folder per run, ``latest`` for the last finished one, one option to move them."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from lightning_kd import Classifier
from lightning_kd.callbacks import RunFolder
from lightning_kd.cli import main
from lightning_kd.data import DigitsDataModule
from lightning_kd.errors import Refusal
from lightning_kd.models import MLP
from tests.conftest import CONFIGS
from tests.helpers import cpu_trainer

QUICK = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false", "--trainer.max_epochs", "1",
         "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1"]


def _fingerprints(folder: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir())}


def _runs(root: Path) -> list[str]:
    return sorted(path.name for path in root.iterdir() if not path.is_symlink())


def test_runs_of_one_config_keep_their_files_and_a_student_finds_the_last_finished_teacher(in_tmp: Path) -> None:
    # issue 24: a second run replaced the first one's checkpoints and config
    teacher = ["fit", "--config", str(CONFIGS / "digits_teacher.yaml"), *QUICK]
    student = ["fit", "--config", str(CONFIGS / "digits_kd.yaml"), *QUICK]
    teachers, students = in_tmp / "checkpoints/digits_teacher", in_tmp / "checkpoints/digits_kd"
    main(teacher)
    first = (teachers / "latest").resolve()
    kept = _fingerprints(first)
    assert {"teacher.ckpt", "config.yaml"} <= set(kept)
    main(student)  # reads checkpoints/digits_teacher/latest/teacher.ckpt
    main([*teacher, "--model.init_args.net.init_args.widths", "[8, 16]"])
    second = (teachers / "latest").resolve()
    assert second != first and _runs(teachers) == ["classifier-smallcnn-seed0", "classifier-smallcnn-seed0-2"]
    assert _fingerprints(first) == kept  # the first run's files, untouched
    main(student)  # the latest teacher now
    assert len(_runs(students)) == 2
    second_teacher = torch.load(second / "teacher.ckpt", weights_only=True)["state_dict"]
    distilled = torch.load((students / "latest") / "kd-student.ckpt", weights_only=True)["state_dict"]
    taught_by = {key.removeprefix("teachers.teacher."): value for key, value in distilled.items()
                 if key.startswith("teachers.teacher.")}
    assert taught_by.keys() == {key.removeprefix("net.") for key in second_teacher}
    assert all(torch.equal(taught_by[key.removeprefix("net.")], value) for key, value in second_teacher.items())
    # a run that fails leaves latest on the last finished one
    with pytest.raises(FloatingPointError):
        main([*teacher, "--model.init_args.optimizer.init_args.lr", "1e38"])
    assert (teachers / "latest").resolve() == second and len(_runs(teachers)) == 3


def test_default_root_dir_moves_everything_a_run_writes(in_tmp: Path) -> None:
    main(["fit", "--config", str(CONFIGS / "digits_teacher.yaml"), *QUICK[2:], "--trainer.default_root_dir", "out"])
    assert sorted(path.name for path in in_tmp.iterdir()) == ["out"]
    assert (in_tmp / "out/checkpoints/digits_teacher/latest/teacher.ckpt").is_file()
    assert any((in_tmp / "out/runs/wandb").glob("offline-run-*"))


def test_resuming_last_continues_the_newest_run_in_its_folder(in_tmp: Path) -> None:
    settings = ["fit", "--config", str(CONFIGS / "digits_teacher.yaml"), *QUICK, "--trainer.callbacks.save_last",
                "true", "--model.init_args.lr_scheduler", "none"]
    main(settings)
    main([*settings[:-2], "--model.init_args.lr_scheduler", "none", "--trainer.max_epochs", "2", "--ckpt_path",
          "last"])
    run = in_tmp / "checkpoints/digits_teacher/latest"
    assert _runs(in_tmp / "checkpoints/digits_teacher") == [run.resolve().name]  # no new folder
    assert torch.load(run / "last.ckpt", weights_only=False)["global_step"] == 4  # 2 epochs of 2 batches


def _fit(callbacks: list, ckpt_path: Path | None = None) -> None:
    cpu_trainer(enable_checkpointing=True, limit_train_batches=2, limit_val_batches=1, callbacks=callbacks,
                max_epochs=2 if ckpt_path else 1).fit(
        Classifier(MLP(hidden_sizes=(8,), num_classes=10), lr_scheduler="none"), DigitsDataModule(batch_size=64),
        ckpt_path=ckpt_path)


def test_from_python_a_new_fit_over_another_runs_checkpoints_is_refused(tmp_path: Path) -> None:
    _fit([ModelCheckpoint(tmp_path, "model")])
    kept = _fingerprints(tmp_path)
    with pytest.raises(Refusal, match=r"holds another run's checkpoints \(model.ckpt\), which this new run would "
                                      r"replace"):
        _fit([ModelCheckpoint(tmp_path, "model")])
    assert _fingerprints(tmp_path) == kept
    _fit([ModelCheckpoint(tmp_path, "model")], ckpt_path=tmp_path / "model.ckpt")  # a resume continues it


def test_from_python_run_folder_gives_each_fit_its_own_folder(tmp_path: Path) -> None:
    for _ in range(2):
        _fit([RunFolder("mlp"), ModelCheckpoint(tmp_path, "model")])
    assert _runs(tmp_path) == ["mlp", "mlp-2"]
    assert (tmp_path / "latest").resolve() == (tmp_path / "mlp-2").resolve()
    assert all((tmp_path / run / "model.ckpt").is_file() for run in ("mlp", "mlp-2"))
