"""A training split held on the device as one 8-bit tensor, so a step never waits for a host loader.

Small images are cheap to keep: CIFAR's 45,000 training images take 138 MB as uint8. Held in the training
device's memory, a batch is a gather there, converted and normalised there with the same arithmetic as the host
pipeline (so its inputs are the same numbers), then cropped and flipped by the data module's replayable
augmentation, which already runs on the device. A data module offers it with ``device_resident: true`` where its
training images are 8 bits per pixel (CIFAR, Fashion-MNIST, image folders resized to a fixed size, the embedded
digits and MNIST-5k).

The batches are shuffled by a permutation seeded per epoch (from the first process's torch seed when the training
loader is made, which ``seed_everything`` sets) and, under DDP, shared out as Lightning's ``DistributedSampler``
would (padded to equal shares). The order differs from a host loader's, which draws from torch's global generator.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from lightning_kd.errors import Refusal

RESIDENT_SHARE = 0.5
"""The largest share of a device's free memory a resident training split may take (the rest is for training)."""


def free_memory(device: torch.device) -> int | None:
    """Bytes of ``device``'s memory free now (a CPU: the host's available memory); ``None`` where unknown."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type == "cpu":
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            return None
    return None


def check_fits(samples: int, shape: tuple[int, ...], device: torch.device, free: int | None = None) -> int:
    """The bytes ``samples`` 8-bit images of ``shape`` (and their labels) take; refused where they would take more
    than :data:`RESIDENT_SHARE` of ``device``'s free memory (``free``: measured now if not given).

    Example:
        >>> check_fits(45000, (3, 32, 32), torch.device("cpu"), free=10**9)
        138600000
        >>> check_fits(45000, (3, 32, 32), torch.device("cpu"), free=10**8)
        Traceback (most recent call last):
        ...
        lightning_kd.errors.Refusal: device_resident: the training split needs 138.6 MB on cpu as 8-bit images \
(45,000 of 3x32x32, with their labels), and 100.0 MB of its memory is free, of which it may take half (the rest is \
for training): leave device_resident off, or train on fewer samples
    """
    needed = samples * (int(torch.Size(shape).numel()) + 8)
    free = free_memory(device) if free is None else free
    if free is not None and needed > RESIDENT_SHARE * free:
        raise Refusal(f"device_resident: the training split needs {needed / 1e6:.1f} MB on {device} as 8-bit images "
                      f"({samples:,} of {'x'.join(map(str, shape))}, with their labels), and {free / 1e6:.1f} MB of "
                      "its memory is free, of which it may take half (the rest is for training): leave "
                      "device_resident off, or train on fewer samples")
    return needed


def normalise_levels(pixels: Tensor, mean: tuple[float, ...], std: tuple[float, ...], levels: int = 255) -> Tensor:
    """``(pixels / levels - mean) / std`` per channel, in float32: torchvision's ``ToTensor`` and ``Normalize`` (levels
    255), the same operations in the same order, so a batch normalised here equals the host pipeline's to the bit.
    The one normalisation of every resident split (and of Fashion-MNIST's host pipeline).

    Example:
        >>> from torchvision import transforms
        >>> pixels = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
        >>> host = transforms.Normalize((0.5, 0.4, 0.3), (0.2, 0.3, 0.25))(pixels.float().div(255))
        >>> bool((normalise_levels(pixels, (0.5, 0.4, 0.3), (0.2, 0.3, 0.25)) == host).all())
        True
        >>> normalise_levels(torch.tensor([[[0]], [[16]]], dtype=torch.uint8), (0.5,), (0.5,), levels=16).flatten()
        tensor([-1.,  1.])
    """
    shape = (-1, 1, 1)
    mean_ = torch.as_tensor(mean, dtype=torch.float32, device=pixels.device).view(shape)
    std_ = torch.as_tensor(std, dtype=torch.float32, device=pixels.device).view(shape)
    return pixels.float().div(levels).sub(mean_).div(std_)


class ResidentTrainingSplit:
    """The training batches of a split held on the device: an iterable a trainer takes as its training loader.

    Args:
        images: The split's images, ``(N, C, H, W)`` uint8, on the device (sample ``i`` is the split's index ``i``).
        targets: Their labels, ``(N,)``, on the device.
        decode: Turns a batch of ``images`` into the inputs the host loader gives (float, normalised).
        batch_size: Samples per batch (per process under DDP).
        drop_last: Drop each epoch's last partial batch.
        seed: Seed of the epochs' permutations.
        epoch: Gives the epoch a new iteration starts (the trainer's ``current_epoch``).
        rank: This process's rank under DDP.
        world_size: How many processes share the split.

    Example:
        >>> images, targets = torch.arange(5, dtype=torch.uint8).view(5, 1, 1, 1), torch.arange(5)
        >>> split = ResidentTrainingSplit(images, targets, lambda x: x.float(), 2, False, 0, lambda: 0)
        >>> [batch["index"].tolist() for batch in split] == [batch["target"].tolist() for batch in split]
        True
        >>> len(split), sorted(i for batch in split for i in batch["index"].tolist())
        (3, [0, 1, 2, 3, 4])
    """

    def __init__(self, images: Tensor, targets: Tensor, decode: Callable[[Tensor], Tensor], batch_size: int,
                 drop_last: bool, seed: int, epoch: Callable[[], int], rank: int = 0, world_size: int = 1) -> None:
        if images.dtype != torch.uint8:
            raise Refusal(f"device_resident holds 8-bit images, and these are {images.dtype}")
        self.images, self.targets, self.decode = images, targets, decode
        self.batch_size, self.drop_last, self.seed, self.epoch = batch_size, drop_last, seed, epoch
        self.rank, self.world_size = rank, world_size

    @property
    def share(self) -> int:
        """Samples per process and epoch (the split padded to equal shares, as ``DistributedSampler`` does)."""
        return -(-len(self.images) // self.world_size)

    def __len__(self) -> int:
        return self.share // self.batch_size if self.drop_last else -(-self.share // self.batch_size)

    def order(self, epoch: int) -> Tensor:
        """This process's samples of ``epoch``, in their order (on the host)."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(len(self.images), generator=generator)
        padding = self.share * self.world_size - len(order)
        order = torch.cat([order, order[:padding]]) if padding else order
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        order = self.order(self.epoch()).to(self.images.device)  # one copy an epoch, then gathers on the device
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            index = order[start : start + self.batch_size]
            yield {"input": self.decode(self.images[index]), "target": self.targets[index], "index": index}
