"""Any folder of images in torchvision's ``ImageFolder`` layout: the user's own data."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor
from torchvision import datasets, transforms

from lightning_kd.data.augmentation import ReplayableCropFlip, check_views
from lightning_kd.data.base import ClassificationDataModule, IndexedDataset, split_indices
from lightning_kd.data.resident import normalise_levels
from lightning_kd.errors import MissingFileRefusal, Refusal

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SPLIT_FOLDERS = ("train", "val", "test")


class ImageFolderDataModule(ClassificationDataModule):
    """Images in class folders, ``root/<class>/<image>`` (or ``root/{train,val,test}/<class>/<image>``).

    With ``train``/``val``/``test`` subfolders (each in the ``ImageFolder`` layout, the same classes)
    those are the splits (``val`` may be missing: a seeded ``val_fraction`` of ``train`` is held
    out; ``test`` likewise with ``test_fraction``). Otherwise the one folder is split, seeded, into
    train, val and test. Classes are the folder names, sorted (``class_names``).

    Images are converted to RGB (or grey with ``channels=1``) and normalised with ImageNet's mean and
    std unless ``mean``/``std`` are given. Two transform styles:

    * ``"small"`` (CIFAR-style, for images of a few dozen pixels): resize to ``image_size``; training
      adds a random crop of the image padded by ``image_size // 8`` and a horizontal flip, replayable per
      (sample, view) as CIFAR's (:class:`~lightning_kd.data.augmentation.ReplayableCropFlip`);
    * ``"imagenet"``: training takes a ``RandomResizedCrop(image_size)`` and a horizontal flip (torchvision's:
      not replayable, so a teacher-output cache refuses it unless told to reuse un-augmented targets);
      evaluation resizes the short side to ``image_size * 8 / 7`` (256 for 224) and takes the centre crop.

    Args:
        root: The folder.
        image_size: Side of the square images the networks see.
        transform_style: ``"small"`` or ``"imagenet"``.
        channels: 3 (RGB) or 1 (grey).
        mean: Per-channel normalisation mean (default: ImageNet's; its average for grey).
        std: Per-channel normalisation std (default: ImageNet's; its average for grey).
        batch_size: Training batch size (per process under DDP).
        eval_batch_size: Validation/test batch size (default: ``batch_size``).
        num_workers: DataLoader worker processes.
        val_fraction: Fraction held out for validation when there is no ``val`` folder.
        test_fraction: Fraction held out for testing when there is no ``test`` folder.
        seed: Seed of the splits.
        augmentation_views: ``"small"`` style: views per training sample the augmentation cycles through
            (see :class:`~lightning_kd.data.CIFAR10DataModule`); ``None``: a new view every epoch.
        augmentation_seed: ``"small"`` style: seed of the views (default: torch's seed at setup).
        predict_root: A folder of unlabelled images (any layout, searched recursively) that ``predict`` runs on,
            instead of the test split; the predictions file names each image by its path in that folder.
        device_resident: ``"small"`` style: hold the training split on the training device as 8-bit images,
            decoded and resized once, batches gathered there (:mod:`lightning_kd.data.resident`).

    Example:
        >>> import tempfile
        >>> from PIL import Image
        >>> root = Path(tempfile.mkdtemp())
        >>> for name in ("cat", "dog"):
        ...     (root / name).mkdir()
        ...     for i in range(10):
        ...         Image.new("RGB", (40, 30), (i * 20, 0, 0)).save(root / name / f"{i}.png")
        >>> dm = ImageFolderDataModule(root, image_size=32, val_fraction=0.2, test_fraction=0.2)
        >>> dm.num_classes, dm.input_shape, dm.class_names
        (2, (3, 32, 32), ['cat', 'dog'])
        >>> dm.setup()
        >>> len(dm.train_set), len(dm.val_set), len(dm.test_set), tuple(dm.train_set[0]["input"].shape)
        (12, 4, 4, (3, 32, 32))
    """

    def __init__(
        self,
        root: str | Path,
        image_size: int = 32,
        transform_style: Literal["small", "imagenet"] = "small",
        channels: Literal[1, 3] = 3,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 4,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        seed: int = 0,
        augmentation_views: int | None = None,
        augmentation_seed: int | None = None,
        predict_root: str | Path | None = None,
        device_resident: bool = False,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers, val_fraction, seed)
        self.device_resident = device_resident
        self.predict_root = Path(predict_root) if predict_root is not None else None
        if self.predict_root is not None and not self.predict_root.is_dir():
            raise MissingFileRefusal(f"predict_root: no such folder: {self.predict_root}")
        self.predict_set: IndexedDataset | None = None
        self.transform_style = transform_style
        self.augmentation_views = check_views(augmentation_views)
        self.augmentation_seed = augmentation_seed
        if transform_style == "imagenet":
            self.opaque_augmentation = "torchvision's RandomResizedCrop and RandomHorizontalFlip"
        facts = self.data_facts(root=root, image_size=image_size, channels=channels)
        self.root = Path(root)
        self.num_classes = facts["num_classes"]  # type: ignore[misc]
        self.input_shape = facts["input_shape"]  # type: ignore[misc]
        self.class_names: list[str] = facts["class_names"]
        if not 0 < test_fraction < 1:
            raise Refusal(f"test_fraction must be in (0, 1), got {test_fraction}")
        self.test_fraction = test_fraction
        self.train_transform, self.eval_transform = _transforms(transform_style, image_size, channels, mean, std)

    @classmethod
    def data_facts(cls, **init_args: Any) -> dict[str, Any]:
        """Classes and input shape, read from the folder (the CLI fills the networks from them).

        Raises:
            FileNotFoundError: ``root`` is missing or holds no class folders.
        """
        root = Path(init_args["root"])
        image_size, channels = int(init_args.get("image_size", 32)), int(init_args.get("channels", 3))
        if not root.is_dir():
            raise MissingFileRefusal(f"image folder not found: {root}")
        train = root / "train" if (root / "train").is_dir() else root
        classes = sorted(entry.name for entry in train.iterdir() if entry.is_dir() and entry.name not in SPLIT_FOLDERS)
        if not classes:
            raise MissingFileRefusal(f"{train} holds no class folders (expected {train}/<class>/<image>)")
        return {"num_classes": len(classes), "input_shape": (channels, image_size, image_size),
                "class_names": classes}

    def predict_split(self) -> IndexedDataset | None:
        return self.predict_set if self.predict_root is not None else self.test_set

    def sample_names(self) -> list[str] | None:
        """Each predicted image's path: in ``predict_root``, else in ``root`` (the test split's)."""
        split = self.predict_split()
        if not isinstance(split, IndexedDataset):
            return None
        if isinstance(split.dataset, UnlabelledImages):
            return [str(path.relative_to(self.predict_root)) for path in split.dataset.paths]  # type: ignore[arg-type]
        return [str(Path(split.dataset.samples[i][0]).relative_to(self.root)) for i in split.indices]

    def _folder(self, path: Path) -> datasets.ImageFolder:
        folder = datasets.ImageFolder(str(path))
        if folder.classes != self.class_names:
            raise Refusal(f"{path} has classes {folder.classes}, the training folder {self.class_names}")
        return folder

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        split_root = (self.root / "train").is_dir()
        train = self._folder(self.root / "train" if split_root else self.root)
        val = self._folder(self.root / "val") if split_root and (self.root / "val").is_dir() else None
        test = self._folder(self.root / "test") if split_root and (self.root / "test").is_dir() else None
        fractions = [self.val_fraction if val is None else 0.0, self.test_fraction if test is None else 0.0]
        val_idx, test_idx, train_idx = split_indices(len(train), fractions, self.seed, names=("val", "test"))
        for name, size in (("train", len(train_idx)), ("val", len(val_idx) if val is None else len(val)),
                           ("test", len(test_idx) if test is None else len(test))):
            if size == 0:
                raise Refusal(f"the {name} split of {self.root} is empty ({len(train)} training images); "
                                 "add images or change val_fraction/test_fraction")
        self.train_set = IndexedDataset(train, train_idx, self.train_transform)
        self.val_set = IndexedDataset(train, val_idx, self.eval_transform) if val is None else IndexedDataset(
            val, transform=self.eval_transform)
        self.test_set = IndexedDataset(train, test_idx, self.eval_transform) if test is None else IndexedDataset(
            test, transform=self.eval_transform)
        if self.predict_root is not None:
            self.predict_set = IndexedDataset(UnlabelledImages(self.predict_root), transform=self.eval_transform)
        if self.transform_style == "small":
            normalize = self.train_transform.transforms[-1]
            self.augmentation = ReplayableCropFlip.black_padded(self.input_shape[1] // 8, normalize.mean,
                                                                normalize.std, self.augmentation_seed)


    def resident_images(self) -> tuple[Tensor, Tensor, Callable[[Tensor], Tensor]]:
        assert isinstance(self.train_set, IndexedDataset) and self.train_transform is not None
        *prepare, _, normalize = self.train_transform.transforms  # decoded, resized: then ToTensor, Normalize
        to_pixels = transforms.Compose([*prepare, transforms.PILToTensor()])
        images = torch.stack([to_pixels(self.train_set.dataset[i][0]) for i in self.train_set.indices])
        return images, self.train_set.targets(), functools.partial(normalise_levels, mean=tuple(normalize.mean),
                                                                    std=tuple(normalize.std))


class UnlabelledImages:
    """Every image file under ``root`` (recursively, sorted by path), as ``(image, -1)``: no label."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.paths = sorted(path for path in root.rglob("*") if path.is_file()
                            and path.suffix.lower() in datasets.folder.IMG_EXTENSIONS)
        if not self.paths:
            raise MissingFileRefusal(f"predict_root {root} holds no image files "
                                     f"({', '.join(datasets.folder.IMG_EXTENSIONS)})")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        return datasets.folder.default_loader(str(self.paths[index])), -1


def _transforms(style: str, size: int, channels: int, mean: tuple[float, ...] | None,
                std: tuple[float, ...] | None) -> tuple[transforms.Compose, transforms.Compose]:
    if style not in ("small", "imagenet"):
        raise Refusal(f"transform_style must be 'small' or 'imagenet', got {style!r}")
    if channels not in (1, 3):
        raise Refusal(f"channels must be 1 or 3, got {channels}")
    mean = mean or (IMAGENET_MEAN if channels == 3 else (sum(IMAGENET_MEAN) / 3,))
    std = std or (IMAGENET_STD if channels == 3 else (sum(IMAGENET_STD) / 3,))
    if len(mean) != channels or len(std) != channels:
        raise Refusal(f"mean and std need {channels} values, got {list(mean)} and {list(std)}")
    if not all(math.isfinite(value) and value > 0 for value in std) or not all(math.isfinite(m) for m in mean):
        raise Refusal(f"std must be finite and > 0 for every channel (normalisation divides by it), and mean finite; "
                      f"got std {list(std)}, mean {list(mean)}")
    colour = [transforms.Grayscale()] if channels == 1 else []
    finish = [transforms.ToTensor(), transforms.Normalize(mean, std)]
    if style == "small":  # the crop and flip run on batches, replayable (ReplayableCropFlip)
        resize = [transforms.Resize((size, size))]
        train = evaluation = resize
    else:
        train = [transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip()]
        evaluation = [transforms.Resize(round(size * 8 / 7)), transforms.CenterCrop(size)]
    return (transforms.Compose(colour + train + finish), transforms.Compose(colour + evaluation + finish))
