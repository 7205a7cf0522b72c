"""Fashion-MNIST from IDX files: the format read and checked, the splits, the refusals (tiny files written here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_kd.data import FashionMNISTDataModule
from lightning_kd.data.fashion_mnist import DEBIAN_ROOT, read_idx
from lightning_kd.errors import MissingFileRefusal, Refusal
from tests.conftest import idx_bytes, write_fashion


@pytest.mark.parametrize("compressed", [True, False])
def test_idx_files_read_back_exactly(tmp_path: Path, compressed: bool) -> None:
    arrays = write_fashion(tmp_path, compressed=compressed)
    suffix = ".gz" if compressed else ""
    np.testing.assert_array_equal(read_idx(tmp_path / f"train-images-idx3-ubyte{suffix}"), arrays["train"][0])
    np.testing.assert_array_equal(read_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}"), arrays["test"][1])


def test_a_file_that_is_not_idx_or_is_cut_short_is_refused(tmp_path: Path) -> None:
    (tmp_path / "png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(20))
    with pytest.raises(Refusal, match=r"is not an IDX file .*89504e47"):
        read_idx(tmp_path / "png")
    whole = idx_bytes(np.zeros((3, 28, 28), dtype=np.uint8))
    (tmp_path / "cut").write_bytes(whole[:-5])
    with pytest.raises(Refusal, match=r"truncated or too long: its header gives shape \(3, 28, 28\)"):
        read_idx(tmp_path / "cut")


def test_the_splits_subset_and_normalisation(tmp_path: Path) -> None:
    arrays = write_fashion(tmp_path, train=100, test=30)
    data = FashionMNISTDataModule(root=tmp_path, batch_size=8, val_fraction=0.2, train_samples=50, seed=3)
    data.prepare_data()
    data.setup()
    assert (len(data.train_set), len(data.val_set), len(data.test_set)) == (50, 20, 30)
    assert not set(data.train_set.indices) & set(data.val_set.indices)
    again = FashionMNISTDataModule(root=tmp_path, val_fraction=0.2, train_samples=50, seed=3)
    again.setup()
    assert again.train_set.indices == data.train_set.indices  # the subset is the seed's, run after run
    pixels = torch.from_numpy(arrays["train"][0][data.train_set.indices]).float() / 255
    train_inputs = torch.stack([data.train_set[i]["input"] for i in range(len(data.train_set))])
    torch.testing.assert_close(train_inputs.mean(), torch.tensor(0.0), atol=1e-5, rtol=0)  # the subset's own stats
    expected = (torch.from_numpy(arrays["test"][0][4]).float() / 255 - pixels.mean()) / pixels.std()
    torch.testing.assert_close(data.test_set[4]["input"][0], expected)
    assert int(data.test_set[4]["target"]) == 4 and data.class_names[4] == "Coat"
    batch = next(iter(data.train_dataloader()))
    assert batch["input"].shape == (8, 1, 28, 28) and batch["input"].dtype == torch.float32


def test_missing_files_are_refused_with_the_install_command(tmp_path: Path) -> None:
    with pytest.raises(MissingFileRefusal, match=r"train-images-idx3-ubyte\(\.gz\) is not in .*apt-get install -y "
                                                 "dataset-fashion-mnist"):
        FashionMNISTDataModule(root=tmp_path).prepare_data()
    write_fashion(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(MissingFileRefusal, match="t10k-labels-idx1-ubyte"):
        FashionMNISTDataModule(root=tmp_path).prepare_data()
    assert str(DEBIAN_ROOT) == "/usr/share/datasets/fashion-mnist"


def test_bad_settings_are_refused(tmp_path: Path) -> None:
    write_fashion(tmp_path, train=40)
    with pytest.raises(Refusal, match="train_samples must be >= 1"):
        FashionMNISTDataModule(root=tmp_path, train_samples=0)
    with pytest.raises(Refusal, match="train_samples is 100 but the training split holds 36 images"):
        FashionMNISTDataModule(root=tmp_path, train_samples=100).setup()


def test_the_augmentation_is_replayable(tmp_path: Path) -> None:
    write_fashion(tmp_path)
    data = FashionMNISTDataModule(root=tmp_path, augment=True, augmentation_seed=1)
    data.setup()
    images = torch.stack([data.train_set[i]["input"] for i in range(4)])
    index = torch.arange(4)
    first, again = data.augment(images, index, view=2), data.augment(images, index, view=2)
    torch.testing.assert_close(first, again)
    assert not torch.equal(data.augment(images, index, view=3), first)
