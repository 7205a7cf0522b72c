"""Fashion-MNIST from its four IDX files (Debian's ``dataset-fashion-mnist`` installs them; nothing is downloaded)."""

from __future__ import annotations

import functools
import gzip
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import TensorDataset

from lightning_kd.data.augmentation import ReplayableCropFlip, check_views
from lightning_kd.data.base import ClassificationDataModule, IndexedDataset, split_indices
from lightning_kd.data.resident import normalise_levels
from lightning_kd.errors import MissingFileRefusal, Refusal

DEBIAN_ROOT = Path("/usr/share/datasets/fashion-mnist")
"""Where ``apt-get install -y dataset-fashion-mnist`` puts the files."""

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
"""Each split's images and labels, by the names the data set's authors gave them (``.gz`` or not)."""

CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
"""The labels 0..9, as the data set's authors name them."""

IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"),
             0x0E: np.dtype(">f8")}
"""The IDX format's element types, by the third byte of the magic number (multi-byte values are big-endian)."""


def read_idx(path: Path | str) -> np.ndarray:
    """An IDX file (LeCun's MNIST format, gzip-compressed or not) as an array, its header checked.

    The magic number is two zero bytes, a type byte and the number of dimensions; then each dimension as a
    big-endian int32; then the values. A file whose header or length does not fit is refused, named.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "labels-idx1-ubyte"
        >>> _ = path.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 0, 9]))
        >>> read_idx(path)
        array([7, 0, 9], dtype=uint8)
    """
    path = Path(path)
    raw = path.read_bytes()
    data = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] not in IDX_TYPES or data[3] == 0:
        raise Refusal(f"{path} is not an IDX file (its magic number is {data[:4].hex() or 'missing'}, expected "
                      "0000 then a type byte and a dimension count, as 00000803 for images)")
    dtype, ndim = np.dtype(IDX_TYPES[data[2]]), data[3]
    header = 4 + 4 * ndim
    shape = tuple(int(v) for v in np.frombuffer(data[4:header], dtype=">i4")) if len(data) >= header else ()
    if len(shape) != ndim or len(data) - header != math.prod(shape) * dtype.itemsize:
        raise Refusal(f"{path} is truncated or too long: its header gives shape {shape} ({ndim} dimensions), "
                      f"which does not match its {len(data) - min(header, len(data))} bytes of values")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def find_idx(root: Path, name: str) -> Path:
    """``root/name`` or ``root/name.gz``, whichever exists; refused with how to get the files when neither does."""
    for candidate in (root / f"{name}.gz", root / name):
        if candidate.is_file():
            return candidate
    how = ("apt-get install -y dataset-fashion-mnist" if root == DEBIAN_ROOT else
           f"put the four Fashion-MNIST IDX files there or set root to {DEBIAN_ROOT} after "
           "apt-get install -y dataset-fashion-mnist")
    raise MissingFileRefusal(f"Fashion-MNIST's {name}(.gz) is not in {root}: {how}")


def read_split(root: Path, split: str) -> tuple[Tensor, Tensor]:
    """``(images (N, 1, 28, 28) uint8, labels (N,) long)`` of the ``train`` or ``test`` split, checked together."""
    images_file, labels_file = (find_idx(root, name) for name in FILES[split])
    images, labels = read_idx(images_file), read_idx(labels_file)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise Refusal(f"{images_file} and {labels_file} do not pair up: images {images.shape} (expected N x H x W) "
                      f"and labels {labels.shape} (expected N)")
    if labels.size and not 0 <= labels.min() <= labels.max() < FashionMNISTDataModule.num_classes:
        raise Refusal(f"{labels_file} holds labels outside 0..9 ({labels.min()}..{labels.max()})")
    return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


class FashionMNISTDataModule(ClassificationDataModule):
    """Fashion-MNIST (Xiao et al. 2017): 60,000 training and 10,000 test grey 28x28 images of 10 kinds of clothing.

    Read from the four IDX files where Debian's ``dataset-fashion-mnist`` installs them (``apt-get install -y
    dataset-fashion-mnist``), or from any folder holding them (``.gz`` or not); missing files are refused with
    that command. A seeded ``val_fraction`` of the training files is held out for validation, and the official test
    files are the test split. ``train_samples`` trains on a seeded subset of the rest, the same for every run of the
    same seed (for budgets a CPU affords). Images are normalised with the training subset's mean and std.

    Args:
        root: Folder holding the IDX files.
        batch_size: Training batch size (per process under DDP).
        eval_batch_size: Validation/test batch size (default: ``batch_size``).
        num_workers: DataLoader worker processes (the data is in memory: 0 is fastest).
        val_fraction: Fraction of the training files held out for validation.
        train_samples: Train on this many of the remaining training images (default: all).
        seed: Seed of the validation split and the training subset.
        augment: Random crop of the 2-pixel zero-padded image and horizontal flip, replayable per sample and view.
        augmentation_views: Views per training sample the augmentation cycles through (``None``: a new one each
            epoch).
        augmentation_seed: Seed of the views (default: torch's seed when the data is set up).
        device_resident: Hold the training split on the training device as 8-bit images (54,000 images: 42 MB),
            batches gathered there (:mod:`lightning_kd.data.resident`).
    """

    num_classes = 10
    input_shape = (1, 28, 28)

    def __init__(
        self,
        root: str | Path = DEBIAN_ROOT,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        val_fraction: float = 0.1,
        train_samples: int | None = None,
        seed: int = 0,
        augment: bool = False,
        augmentation_views: int | None = None,
        augmentation_seed: int | None = None,
        device_resident: bool = False,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers, val_fraction, seed)
        self.device_resident = device_resident
        if train_samples is not None and train_samples < 1:
            raise Refusal(f"train_samples must be >= 1 (or unset for all), got {train_samples}")
        self.root = Path(root)
        self.class_names = list(CLASS_NAMES)
        self.train_samples = train_samples
        self.use_augmentation = augment
        self.augmentation_views = check_views(augmentation_views)
        self.augmentation_seed = augmentation_seed

    def prepare_data(self) -> None:
        for split in FILES:  # missing files refused before anything is built, with how to get them
            for name in FILES[split]:
                find_idx(self.root, name)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        images, labels = read_split(self.root, "train")
        val_idx, train_idx = split_indices(len(labels), [self.val_fraction], self.seed, names=("val",))
        if self.train_samples is not None:
            if self.train_samples > len(train_idx):
                raise Refusal(f"train_samples is {self.train_samples} but the training split holds {len(train_idx)} "
                              f"images (after val_fraction {self.val_fraction}); use at most {len(train_idx)}")
            train_idx = train_idx[: self.train_samples]  # a prefix of a seeded permutation: a seeded subset
        pixels = images[train_idx].float() / 255
        mean, std = float(pixels.mean()), float(pixels.std())  # the training images' own: nothing leaks
        test_images, test_labels = read_split(self.root, "test")

        normalised = functools.partial(normalise_levels, mean=(mean,), std=(std,))
        self._pixels = (images, labels, normalised)  # what device_resident holds, as 8 bits
        train = TensorDataset(normalised(images), labels)
        self.train_set = IndexedDataset(train, train_idx)
        self.val_set = IndexedDataset(train, val_idx)
        self.test_set = IndexedDataset(TensorDataset(normalised(test_images), test_labels))
        if self.use_augmentation:
            self.augmentation = ReplayableCropFlip.black_padded(2, (mean,), (std,), self.augmentation_seed)

    def resident_images(self) -> tuple[Tensor, Tensor, Callable[[Tensor], Tensor]]:
        assert isinstance(self.train_set, IndexedDataset)
        images, labels, normalised = self._pixels
        index = torch.as_tensor(self.train_set.indices, dtype=torch.long)
        return images[index], labels[index], normalised
