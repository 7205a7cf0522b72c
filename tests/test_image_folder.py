"""The image-folder data module on tiny folders of real image files (PNG and JPEG), in both layouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lightning_kd.cli import main
from lightning_kd.data import ImageFolderDataModule

CLASSES = ("ant", "bee", "cow")


def write_folder(root: Path, per_class: int = 8, size: tuple[int, int] = (48, 40), suffix: str = ".png",
                 seed: int = 0) -> Path:
    """root/<class>/<n>.<suffix>: images whose mean colour says their class, so a network can learn them."""
    rng = np.random.default_rng(seed)
    for label, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for n in range(per_class):
            pixels = rng.integers(0, 60, size=(size[1], size[0], 3)) + np.array([80 * label, 40, 200 - 80 * label])
            Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(root / name / f"{n}{suffix}")
    return root


def test_one_folder_is_split_seeded_into_train_val_test(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "images", per_class=10)
    dm = ImageFolderDataModule(root, image_size=32, val_fraction=0.2, test_fraction=0.1, seed=3, batch_size=4)
    assert (dm.num_classes, dm.input_shape, dm.class_names) == (3, (3, 32, 32), list(CLASSES))
    dm.setup()
    sizes = len(dm.train_set), len(dm.val_set), len(dm.test_set)
    assert sizes == (21, 6, 3)
    seen = [dm.train_set.indices, dm.val_set.indices, dm.test_set.indices]
    assert sorted(i for part in seen for i in part) == list(range(30))  # a partition of the folder
    again = ImageFolderDataModule(root, image_size=32, val_fraction=0.2, test_fraction=0.1, seed=3)
    again.setup()
    assert again.val_set.indices == dm.val_set.indices  # the same seed, the same split
    batch = next(iter(dm.train_dataloader()))
    assert batch["input"].shape == (4, 3, 32, 32) and batch["target"].dtype == torch.long
    # evaluation images are deterministic; training ones augmented
    assert torch.equal(dm.val_set[0]["input"], dm.val_set[0]["input"])


def test_split_folders_imagenet_transforms_and_grey(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_folder(root / "train", per_class=6, suffix=".jpg")
    write_folder(root / "val", per_class=2, suffix=".jpg", seed=1)
    dm = ImageFolderDataModule(root, image_size=24, transform_style="imagenet", channels=1, test_fraction=0.25)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (14, 6, 4)  # val from its folder
    assert dm.input_shape == (1, 24, 24)
    assert dm.val_set[0]["input"].shape == dm.train_set[0]["input"].shape == (1, 24, 24)


@pytest.mark.parametrize(
    ("make", "kwargs", "error", "match"),
    [
        (lambda root: None, {}, FileNotFoundError, "image folder not found"),
        (lambda root: root.mkdir(), {}, FileNotFoundError, "holds no class folders"),
        (lambda root: write_folder(root, per_class=1), {"val_fraction": 0.1}, ValueError, "the val split is empty"),
        (lambda root: write_folder(root), {"transform_style": "huge"}, ValueError, "transform_style must be"),
        (lambda root: write_folder(root), {"mean": (0.5,)}, ValueError, "mean and std need 3 values"),
        # issue 23: "float division by zero", not naming std
        (lambda root: write_folder(root), {"std": (0.0, 0.0, 0.0)}, ValueError,
         r"std must be finite and > 0 for every channel \(normalisation divides by it\)"),
    ],
)
def test_bad_folders_and_arguments_are_refused(tmp_path: Path, make, kwargs, error, match) -> None:
    root = tmp_path / "images"
    make(root)
    with pytest.raises(error, match=match):
        ImageFolderDataModule(root, **kwargs).setup()


def test_the_cli_trains_on_a_folder_with_networks_sized_from_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_folder(tmp_path / "images", per_class=12)
    main(["fit", "--config", "digits_teacher", "--data", "lightning_kd.data.ImageFolderDataModule",
          "--data.root", "images", "--data.image_size", "16", "--data.num_workers", "0", "--data.batch_size", "8",
          "--data.val_fraction", "0.25", "--trainer.max_epochs", "3", "--trainer.logger", "false",
          "--trainer.enable_progress_bar", "false"])
    from lightning_kd import Classifier

    task = Classifier.load_from_checkpoint("checkpoints/digits_teacher/latest/teacher.ckpt")
    assert task.hparams.net["init_args"]["num_classes"] == 3 and task.hparams.net["init_args"]["in_channels"] == 3
    dm = ImageFolderDataModule("images", image_size=16, val_fraction=0.25)
    dm.setup()
    batch = next(iter(dm.val_dataloader()))
    accuracy = (task.eval()(batch["input"]).argmax(1) == batch["target"]).float().mean()
    assert accuracy > 0.6  # colours this distinct are learnt in three epochs


def test_a_folder_of_one_class_is_refused_before_training(tmp_path: Path) -> None:
    from lightning_kd import Classifier
    from lightning_kd.errors import Refusal
    from lightning_kd.models import SmallCNN
    from tests.helpers import cpu_trainer

    write_folder(tmp_path / "images")
    for extra in CLASSES[1:]:  # one class folder left
        for file in (tmp_path / "images" / extra).iterdir():
            file.unlink()
        (tmp_path / "images" / extra).rmdir()
    data = ImageFolderDataModule(tmp_path / "images", image_size=16, batch_size=4, num_workers=0, val_fraction=0.25,
                                 test_fraction=0.25)
    with pytest.raises(Refusal, match="ImageFolderDataModule has 1 class: classification needs at least 2"):
        cpu_trainer(max_steps=1).fit(Classifier(SmallCNN(widths=(4,), num_classes=1, in_channels=3)), datamodule=data)
