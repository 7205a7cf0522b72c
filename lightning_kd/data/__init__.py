"""Lightning data modules; every batch is ``{"input", "target", "index"}`` (images, or token streams)."""

from lightning_kd.data.base import Batch, ClassificationDataModule, IndexedDataset, split_indices
from lightning_kd.data.cifar import CIFAR10DataModule, CIFAR100DataModule
from lightning_kd.data.embedded import DigitsDataModule, MNIST5kDataModule
from lightning_kd.data.fashion_mnist import FashionMNISTDataModule
from lightning_kd.data.folder import ImageFolderDataModule
from lightning_kd.data.text import JaneAustenDataModule, TextDataModule

__all__ = [
    "Batch",
    "CIFAR10DataModule",
    "CIFAR100DataModule",
    "ClassificationDataModule",
    "DigitsDataModule",
    "FashionMNISTDataModule",
    "ImageFolderDataModule",
    "IndexedDataset",
    "JaneAustenDataModule",
    "MNIST5kDataModule",
    "TextDataModule",
    "split_indices",
]
