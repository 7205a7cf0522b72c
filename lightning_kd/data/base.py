"""Shared pieces of the data modules: indexed datasets, seeded splits, loaders."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from pytorch_lightning import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, TensorDataset

from lightning_kd.data.augmentation import ReplayableCropFlip
from lightning_kd.data.resident import ResidentTrainingSplit, check_fits
from lightning_kd.errors import Refusal

Batch = dict[str, Tensor]
"""A batch: ``{"input": (B, C, H, W), "target": (B,), "index": (B,)}``; ``index`` is the sample's
position in its split, stable across epochs (for per-sample teacher caches); augmented training batches
also carry ``"view"``, the view slot of each sample's augmentation (see :mod:`lightning_kd.data.augmentation`)."""


class IndexedDataset(Dataset):
    """Wrap a ``(input, target)`` dataset so each item also carries its index in the split.

    Args:
        dataset: Any map-style dataset returning ``(input, target)``.
        indices: Which items of ``dataset`` form this split (default: all, in order).
        transform: Applied to each input.
    """

    def __init__(
        self,
        dataset: Any,
        indices: Sequence[int] | Tensor | None = None,
        transform: Callable[[Any], Tensor] | None = None,
    ) -> None:
        self.dataset = dataset
        self.indices = list(range(len(dataset))) if indices is None else [int(i) for i in indices]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def targets(self) -> Tensor:
        """The split's labels by index, read without loading the inputs where the dataset keeps its labels apart
        (``targets`` as torchvision's datasets, or a ``TensorDataset``'s second tensor); else item by item.

        Example:
            >>> from torch.utils.data import TensorDataset
            >>> split = IndexedDataset(TensorDataset(torch.zeros(4, 2), torch.tensor([3, 1, 2, 0])), [2, 0])
            >>> split.targets().tolist()
            [2, 3]
        """
        labels = getattr(self.dataset, "targets", None)
        if labels is None and isinstance(self.dataset, TensorDataset) and len(self.dataset.tensors) > 1:
            labels = self.dataset.tensors[1]
        if labels is not None:
            return torch.as_tensor(labels, dtype=torch.long)[torch.as_tensor(self.indices, dtype=torch.long)]
        return torch.tensor([int(self.dataset[i][1]) for i in self.indices], dtype=torch.long)

    def __getitem__(self, index: int) -> dict[str, Any]:
        x, y = self.dataset[self.indices[index]]
        if self.transform is not None:
            x = self.transform(x)
        return {"input": x, "target": torch.as_tensor(y, dtype=torch.long), "index": torch.tensor(index)}


def split_indices(num_samples: int, fractions: Sequence[float], seed: int,
                  names: Sequence[str] | None = None) -> list[Tensor]:
    """Seeded random partition of ``range(num_samples)``.

    Returns one index tensor per fraction, then one with the remainder. The same ``seed`` gives the
    same split on every machine and every DDP rank. A fraction too small to hold one sample, or one
    that leaves nothing to train on, is refused (``names`` name the splits in that message).

    Example:
        >>> val, test, train = split_indices(10, [0.2, 0.3], seed=0)
        >>> len(val), len(test), len(train)
        (2, 3, 5)
    """
    if any(not f >= 0 for f in fractions) or not sum(fractions) < 1:
        raise Refusal(f"split fractions must be >= 0 and sum to less than 1, got {list(fractions)}")
    permutation = torch.randperm(num_samples, generator=torch.Generator().manual_seed(seed))
    splits, start = [], 0
    for index, fraction in enumerate(fractions):
        size = round(fraction * num_samples)
        if fraction > 0 and size == 0:
            name = names[index] if names is not None else f"split {index}"
            raise Refusal(f"the {name} split is empty: a fraction of {fraction} of {num_samples} samples holds "
                             f"no sample; use at least {1 / num_samples:.2g}")
        splits.append(permutation[start : start + size])
        start += size
    if start >= num_samples:
        raise Refusal(f"the splits take all {num_samples} samples: nothing is left to train on")
    splits.append(permutation[start:])
    return splits


class ClassificationDataModule(LightningDataModule):
    """Base for the image-classification data modules.

    Subclasses set ``num_classes`` and ``input_shape`` (class attributes, or per instance with
    :meth:`data_facts` saying what they will be; the CLI reads them to fill in the networks'
    ``num_classes`` / ``in_channels`` / ``input_shape``) and implement :meth:`setup` to fill
    ``train_set``, ``val_set`` and ``test_set``.

    Args:
        batch_size: Training batch size (per process under DDP).
        eval_batch_size: Validation/test batch size (default: ``batch_size``).
        num_workers: DataLoader worker processes.
        val_fraction: Fraction of the training data held out for validation.
        seed: Seed of the train/val(/test) split; independent of the training seed.
    """

    num_classes: ClassVar[int]
    input_shape: ClassVar[tuple[int, int, int]]
    augmentation: ReplayableCropFlip | None = None
    """The training batches' random augmentation, replayable per (sample, view); applied on the device."""
    opaque_augmentation: str | None = None
    """Random training transforms that cannot be replayed (named), if the module has any."""
    augmentation_views: int | None = None
    """How many views of each training sample the augmentation cycles through (``None``: a new one each epoch)."""
    class_names: list[str] | None = None
    """Each class's name, by class index, where the data has them (an image folder's folder names)."""
    device_resident: bool = False
    """Hold the training split on the training device as 8-bit images (see :mod:`lightning_kd.data.resident`)."""
    drop_last_train: bool = False
    """Drop each epoch's last partial training batch, so every step has the same shapes (what a compiled,
    graph-captured step needs: :class:`~lightning_kd.callbacks.CompiledStep` sets it)."""

    def __init__(
        self,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        val_fraction: float = 0.1,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise Refusal(f"batch_size must be >= 1, got {batch_size}")
        if not 0 < val_fraction < 1:
            raise Refusal(f"val_fraction must be in (0, 1), got {val_fraction}")
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.val_fraction = val_fraction
        self.seed = seed
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    @classmethod
    def data_facts(cls, **init_args: Any) -> dict[str, Any]:
        """``num_classes`` and ``input_shape`` of the data these arguments describe, before any loading.

        The CLI fills the networks' ``num_classes``/``in_channels``/``input_shape`` from them. Fixed
        data sets state them as class attributes; a module over the user's files reads them there.
        """
        return {"num_classes": cls.num_classes, "input_shape": tuple(cls.input_shape)}

    def view_of_epoch(self, epoch: int) -> int:
        """The view slot the training batches of ``epoch`` use: ``epoch % augmentation_views`` (or ``epoch``).

        Example:
            >>> module = ClassificationDataModule()
            >>> module.augmentation_views = 4
            >>> [module.view_of_epoch(epoch) for epoch in range(6)]
            [0, 1, 2, 3, 0, 1]
        """
        return epoch if self.augmentation_views is None else epoch % self.augmentation_views

    def augment(self, inputs: Tensor, index: Tensor, view: int) -> Tensor:
        """Training inputs (un-augmented, on any device) of the samples ``index`` as their view ``view``."""
        return inputs if self.augmentation is None else self.augmentation(inputs, index, view)

    def on_after_batch_transfer(self, batch: Batch, dataloader_idx: int) -> Batch:
        # the replayable augmentation of training batches, on the device; batch["view"] names the view
        trainer = self.trainer
        is_training_batch = isinstance(batch, dict) and "index" in batch  # not the model summary's example input
        if self.augmentation is not None and trainer is not None and trainer.training and is_training_batch:
            view = self.view_of_epoch(trainer.current_epoch)
            batch["input"] = self.augment(batch["input"], batch["index"], view)
            batch["view"] = torch.full_like(batch["index"], view)
        return batch

    def _loader(self, dataset: Dataset | None, train: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}.setup() has not been called")
        return DataLoader(
            dataset,
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            drop_last=train and self.drop_last_train,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader | ResidentTrainingSplit:
        if self.device_resident:
            return self._resident_loader()
        return self._loader(self.train_set, train=True)

    def resident_images(self) -> tuple[Tensor, Tensor, Callable[[Tensor], Tensor]]:
        """The training split as 8-bit images ``(N, C, H, W)``, their labels, and the function that turns a batch of
        them into the inputs the host loader gives (what ``device_resident`` holds on the device).

        Raises:
            Refusal: The data module's training inputs are not 8-bit images.
        """
        raise self._not_resident()

    def _not_resident(self) -> Refusal:
        return Refusal(f"device_resident holds 8-bit images on the device, and {type(self).__name__} does not say how "
                       "its training inputs are made from them: it is offered by the CIFAR, Fashion-MNIST, "
                       "image-folder, digits and MNIST-5k data modules (a module of your own implements "
                       "resident_images)")

    def _resident_loader(self) -> ResidentTrainingSplit:
        trainer = self.trainer
        if trainer is None or self.train_set is None:
            raise RuntimeError(f"{type(self).__name__}: device_resident needs the data set up by a trainer")
        if type(self).resident_images is ClassificationDataModule.resident_images:  # refused before any estimate
            raise self._not_resident()
        if self.opaque_augmentation is not None:
            raise Refusal(f"device_resident applies a replayable crop and flip on the device, and this data's training "
                          f"transforms are {self.opaque_augmentation}: use the 'small' transforms, or leave it off")
        device = trainer.strategy.root_device
        held = self.__dict__.get("_resident")
        if held is None or held[0].device != device:
            check_fits(len(self.train_set), tuple(self.input_shape), device)  # before anything is loaded
            images, targets, decode = self.resident_images()
            seed = trainer.strategy.broadcast(torch.initial_seed(), src=0)  # every process shares one permutation
            held = self.__dict__["_resident"] = (images.to(device), targets.to(device), decode, seed)
        images, targets, decode, seed = held
        return ResidentTrainingSplit(images, targets, decode, self.batch_size, self.drop_last_train, seed,
                                     lambda: trainer.current_epoch, trainer.global_rank, trainer.world_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, train=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.predict_split(), train=False)

    def predict_split(self) -> Dataset | None:
        """The samples ``predict`` runs on: the test split here (an image folder may name a folder of its own)."""
        return self.test_set

    def sample_names(self) -> list[str] | None:
        """A name per sample of :meth:`predict_split`, by its index (an image's file); ``None`` where samples have
        none. Predictions files carry it."""
        return None


def data_sizes(trainer: Any, network: Any) -> tuple[int, tuple[int, ...] | None]:
    """The class count and input shape a task sets itself up for: its trainer's data module's, else the class
    count its network states (``num_classes``) and no input shape.

    Raises:
        Refusal: Neither the data module nor the network tells the number of classes.
    """
    datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
    num_classes = getattr(datamodule, "num_classes", None) or getattr(network, "num_classes", None)
    if num_classes is None:
        raise Refusal("cannot tell the number of classes: use a ClassificationDataModule (or any data module with "
                      "`num_classes`) or a network with a `num_classes` attribute")
    if num_classes < 2:
        source = type(datamodule).__name__ if datamodule is not None else "the network"
        raise Refusal(f"{source} has {num_classes} class: classification needs at least 2 (an image folder needs a "
                      "sub-folder per class)")
    input_shape = getattr(datamodule, "input_shape", None)
    return num_classes, None if input_shape is None else tuple(input_shape)
