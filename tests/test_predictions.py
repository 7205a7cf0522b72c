"""``predict`` writes its predictions: index, class, probabilities; one file, merged across DDP ranks."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from pytorch_lightning import seed_everything

from lightning_kd import Classifier
from lightning_kd.callbacks import PredictionWriter
from lightning_kd.cli import main
from lightning_kd.data import DigitsDataModule
from lightning_kd.models import SmallCNN
from tests.conftest import CONFIGS
from tests.helpers import cpu_trainer


def read(path: Path) -> tuple[list[str], torch.Tensor, torch.Tensor, torch.Tensor]:
    """Header, index, prediction and probabilities of a numeric predictions file (the target checked apart)."""
    with path.open() as handle:
        rows = list(csv.reader(handle))
    values = torch.tensor([[float(v) for v in row] for row in rows[1:]], dtype=torch.float64)
    at = rows[0].index("prediction")
    return rows[0], values[:, 0].long(), values[:, at].long(), values[:, at + 1:]


def test_cli_predict_writes_the_models_softmax_for_every_test_sample(in_tmp: Path) -> None:
    quiet = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false"]
    main(["fit", "--config", str(CONFIGS / "digits_teacher.yaml"), "--trainer.max_epochs", "2", *quiet])
    checkpoint = in_tmp / "checkpoints/digits_teacher/latest/teacher.ckpt"
    main(["predict", "--config", str(CONFIGS / "digits_teacher.yaml"), "--ckpt_path", str(checkpoint), *quiet])
    written = in_tmp / "checkpoints/digits_teacher/latest/teacher-predictions.csv"
    header, index, prediction, probabilities = read(written)
    assert header == ["index", "target", "prediction", *(f"prob_{c}" for c in range(10))]
    data = DigitsDataModule()
    data.setup()
    assert index.tolist() == list(range(len(data.test_set)))
    with written.open() as handle:  # issue 24: the file had no target column
        targets = [int(row["target"]) for row in csv.DictReader(handle)]
    assert targets == [int(data.test_set[i]["target"]) for i in range(len(data.test_set))]
    inputs = torch.stack([data.test_set[i]["input"] for i in range(len(data.test_set))])
    model = Classifier.load_from_checkpoint(checkpoint).eval()
    with torch.no_grad():
        expected = model(inputs).softmax(dim=1).double()
    torch.testing.assert_close(probabilities, expected, atol=1e-6, rtol=1e-5)
    assert torch.equal(prediction, expected.argmax(dim=1))


def _predict_under_ddp(folder: Path) -> None:
    seed_everything(0)
    task = Classifier(SmallCNN(widths=(8, 16), num_classes=10))
    cpu_trainer(devices=2, strategy="ddp", callbacks=[PredictionWriter(folder / "merged.csv")]).predict(
        task, datamodule=DigitsDataModule(batch_size=50))


@pytest.mark.ddp(scenario=_predict_under_ddp)
def test_ddp_ranks_shares_are_merged_into_one_file(tmp_path: Path, ddp_run: Path) -> None:
    seed_everything(0)
    task = Classifier(SmallCNN(widths=(8, 16), num_classes=10))  # the scenario's weights
    single, merged = tmp_path / "single.csv", ddp_run / "merged.csv"
    cpu_trainer(callbacks=[PredictionWriter(single)]).predict(task, datamodule=DigitsDataModule(batch_size=50))
    _, single_index, single_prediction, single_probabilities = read(single)
    _, merged_index, merged_prediction, merged_probabilities = read(merged)
    assert merged_index.tolist() == single_index.tolist() == list(range(len(single_index)))  # each sample once
    assert torch.equal(merged_prediction, single_prediction)
    torch.testing.assert_close(merged_probabilities, single_probabilities)


def test_an_image_folders_predictions_name_files_and_classes_and_unlabelled_images_can_be_predicted(
        in_tmp: Path) -> None:
    from PIL import Image

    from tests.test_image_folder import CLASSES, write_folder

    write_folder(in_tmp / "pets", per_class=6)
    unlabelled = in_tmp / "new"
    (unlabelled / "batch").mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (40, 30), (i * 50, 90, 10)).save(unlabelled / "batch" / f"photo{i}.jpg")
    data = ["--data", "lightning_kd.data.ImageFolderDataModule", "--data.init_args.root", "pets",
            "--data.init_args.num_workers", "0", "--data.init_args.val_fraction", "0.2",
            "--data.init_args.test_fraction", "0.2"]
    quiet = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false"]
    main(["fit", "--config", "digits_teacher", *data, *quiet, "--trainer.max_epochs", "1"])
    checkpoint = in_tmp / "checkpoints/digits_teacher/latest/teacher.ckpt"
    main(["predict", "--config", "digits_teacher", *data, *quiet, "--ckpt_path", str(checkpoint)])
    with (checkpoint.parent / "teacher-predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["index", "sample", "target", "prediction", *(f"prob_{name}" for name in CLASSES)]
    assert all(row["sample"].split("/")[0] == row["target"] and row["target"] in CLASSES for row in rows)
    assert all(row["prediction"] in CLASSES for row in rows)
    output = in_tmp / "new-predictions.csv"
    main(["predict", "--config", "digits_teacher", *data, *quiet, "--ckpt_path", str(checkpoint),
          "--data.init_args.predict_root", "new", "--trainer.callbacks+=lightning_kd.callbacks.PredictionWriter",
          "--trainer.callbacks.path", str(output)])
    with output.open() as handle:
        rows = list(csv.DictReader(handle))
    # no labels: no target column
    assert list(rows[0]) == ["index", "sample", "prediction", *(f"prob_{name}" for name in CLASSES)]
    assert [row["sample"] for row in rows] == [f"batch/photo{i}.jpg" for i in range(3)]
    assert all(abs(sum(float(row[f"prob_{name}"]) for name in CLASSES) - 1) < 1e-5 for row in rows)

