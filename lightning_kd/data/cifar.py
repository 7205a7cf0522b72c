"""CIFAR-10 / CIFAR-100 through torchvision, with the standard augmentation."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import torch
from torch import Tensor
from torchvision import datasets, transforms

from lightning_kd.data.augmentation import ReplayableCropFlip, check_views
from lightning_kd.data.base import ClassificationDataModule, IndexedDataset, split_indices
from lightning_kd.data.resident import normalise_levels
from lightning_kd.errors import MissingFileRefusal


class CIFAR10DataModule(ClassificationDataModule):
    """CIFAR-10: 50,000 training and 10,000 test 32x32 RGB images.

    Training images get the standard augmentation (random 32x32 crop of the 4-pixel zero-padded
    image, horizontal flip), replayable: each sample's crop and flip follow from ``(augmentation_seed,
    sample, view)`` (:class:`~lightning_kd.data.augmentation.ReplayableCropFlip`, applied to whole batches
    on the device), so a teacher-output cache can hold the teacher's answer for every view. All images are
    normalised with the training set's per-channel mean/std.
    A seeded ``val_fraction`` of the official training set is held out for validation; the official
    test set is the test split.

    Args:
        root: Folder holding (or receiving) ``cifar-10-batches-py``.
        download: Download the archive into ``root`` if it is missing.
        batch_size: Training batch size (per process under DDP).
        eval_batch_size: Validation/test batch size (default: ``batch_size``).
        num_workers: DataLoader worker processes.
        val_fraction: Fraction of the official training set held out for validation.
        seed: Seed of the train/val split.
        augment: Apply the random crop and flip to training images.
        augmentation_views: Views per training sample the augmentation cycles through (epoch ``e`` shows
            view ``e % augmentation_views``); ``None`` (default): a new view every epoch.
        augmentation_seed: Seed of the views (default: torch's seed when the data is set up, which
            ``seed_everything`` sets).
        device_resident: Hold the training split on the training device as 8-bit images (45,000 images: 138 MB),
            batches gathered there (:mod:`lightning_kd.data.resident`).
    """

    num_classes = 10
    input_shape = (3, 32, 32)
    dataset_class: ClassVar[type[datasets.CIFAR10]] = datasets.CIFAR10
    mean: ClassVar[tuple[float, float, float]] = (0.4914, 0.4822, 0.4465)
    std: ClassVar[tuple[float, float, float]] = (0.2470, 0.2435, 0.2616)

    def __init__(
        self,
        root: str | Path = "data",
        download: bool = False,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 4,
        val_fraction: float = 0.1,
        seed: int = 0,
        augment: bool = True,
        augmentation_views: int | None = None,
        augmentation_seed: int | None = None,
        device_resident: bool = False,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers, val_fraction, seed)
        self.device_resident = device_resident
        self.root = Path(root)
        self.download = download
        self.use_augmentation = augment
        self.augmentation_views = check_views(augmentation_views)
        self.augmentation_seed = augmentation_seed
        normalize = [transforms.ToTensor(), transforms.Normalize(self.mean, self.std)]
        self.train_transform = transforms.Compose(normalize)  # the crop and flip run on batches (replayable)
        self.eval_transform = transforms.Compose(normalize)

    def _dataset(self, train: bool) -> datasets.CIFAR10:
        try:
            return self.dataset_class(str(self.root), train=train, download=self.download)
        except RuntimeError as error:  # torchvision: "Dataset not found or corrupted."
            name = self.dataset_class.__name__
            raise MissingFileRefusal(
                f"{name} was not found (or failed its checksum) under {self.root.resolve()}; "
                f"pass download=True (--data.download true) or point root at the extracted "
                f"'{self.dataset_class.base_folder}' folder's parent"
            ) from error

    def prepare_data(self) -> None:
        # runs on one process per node: the only place a download may happen
        if self.download:
            self._dataset(train=True)
            self._dataset(train=False)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train_full = self._dataset(train=True)
        val_idx, train_idx = split_indices(len(train_full), [self.val_fraction], self.seed, names=("val",))
        self.train_set = IndexedDataset(train_full, train_idx, self.train_transform)
        self.val_set = IndexedDataset(train_full, val_idx, self.eval_transform)
        self.test_set = IndexedDataset(self._dataset(train=False), transform=self.eval_transform)
        if self.use_augmentation:
            self.augmentation = ReplayableCropFlip.black_padded(4, self.mean, self.std, self.augmentation_seed)

    def resident_images(self) -> tuple[Tensor, Tensor, Callable[[Tensor], Tensor]]:
        assert isinstance(self.train_set, IndexedDataset)
        dataset, index = self.train_set.dataset, self.train_set.indices
        images = torch.from_numpy(dataset.data[index]).permute(0, 3, 1, 2).contiguous()  # HWC as stored
        return images, self.train_set.targets(), functools.partial(normalise_levels, mean=self.mean, std=self.std)


class CIFAR100DataModule(CIFAR10DataModule):
    """CIFAR-100: as :class:`CIFAR10DataModule` with 100 classes (the fine labels)."""

    num_classes = 100
    dataset_class = datasets.CIFAR100
    mean = (0.5071, 0.4865, 0.4409)
    std = (0.2673, 0.2564, 0.2762)
