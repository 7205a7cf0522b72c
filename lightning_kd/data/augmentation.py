"""Replayable augmentation: each training sample's random view is a function of (seed, sample, view slot).

A cached teacher output is only valid for the input the teacher saw. With ordinary random augmentation
that input is never seen again; here every random parameter of a sample's augmentation is drawn from a
counter-based hash of ``(seed, sample index, view slot)``, so view ``v`` of sample ``i`` is the same image
whenever it is asked for: in the training batch, and in the teacher-output cache's pre-pass. Epoch ``e``
uses view slot ``e % views`` (``views=None``: slot ``e``, a fresh view every epoch, still replayable).

The data modules apply it to whole training batches after they reach the device
(:meth:`~lightning_kd.data.base.ClassificationDataModule.on_after_batch_transfer`), and add the slot to the
batch as ``batch["view"]``.

Example:
    >>> import torch
    >>> crop = ReplayableCropFlip(padding=2, seed=0)
    >>> images, index = torch.arange(2 * 16.0).view(2, 1, 4, 4), torch.tensor([0, 1])
    >>> torch.equal(crop(images, index, view=3), crop(images, index, view=3))
    True
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_kd.errors import Refusal

_MASK = (1 << 63) - 1


def _mix(values: Tensor) -> Tensor:
    """A 63-bit integer hash of each int64 (splitmix64's finaliser, kept non-negative)."""
    z = values & _MASK
    z = (z ^ (z >> 31)) * 0x5DEECE66D & _MASK
    z = (z ^ (z >> 29)) * 0x2545F491 & _MASK
    z = (z ^ (z >> 32)) * 0x27D4EB2F165667C5 & _MASK
    return z ^ (z >> 31)


def check_views(views: int | None) -> int | None:
    """Raise ``ValueError`` unless ``views`` is ``None`` or ``>= 1``; return it.

    Example:
        >>> check_views(0)
        Traceback (most recent call last):
        ...
        lightning_kd.errors.Refusal: augmentation_views must be >= 1 (or null: a new view every epoch), got 0
    """
    if views is not None and views < 1:
        raise Refusal(f"augmentation_views must be >= 1 (or null: a new view every epoch), got {views}")
    return views


def replay_uniform(seed: int, index: Tensor, view: Tensor | int, stream: int, high: int) -> Tensor:
    """Integers in ``[0, high)``, one per sample, determined by ``(seed, index, view, stream)`` only.

    ``stream`` tells apart the random parameters of one augmentation (0: vertical offset, 1: horizontal, ...).

    Example:
        >>> index = torch.arange(5)
        >>> torch.equal(replay_uniform(0, index, 2, 0, 9), replay_uniform(0, index.flip(0), 2, 0, 9).flip(0))
        True
    """
    view = torch.as_tensor(view, device=index.device).expand_as(index)
    key = (((torch.as_tensor(seed, dtype=torch.int64) * 1_000_003 + index.long()) * 10_007 + view.long()) * 131
           + stream)
    return _mix(_mix(key.to(torch.int64))) % high


class ReplayableCropFlip:
    """Random crop of the ``padding``-padded image back to its size, and a horizontal flip (the CIFAR augmentation).

    Padding is with zeros of the *unnormalised* image (black), as torchvision's ``RandomCrop`` pads a
    PIL image: ``fill`` gives that value per channel in the normalised space the batch is in.

    Args:
        padding: Pixels of padding on each side (the crop's offsets range over ``0..2 * padding``).
        flip: Also flip horizontally with probability 1/2.
        seed: Seed of the hash (the data module's ``seed``).
        fill: Per-channel value of the padding in the batch's (normalised) space; default zeros.
    """

    def __init__(self, padding: int = 4, flip: bool = True, seed: int = 0,
                 fill: tuple[float, ...] | None = None) -> None:
        if padding < 0:
            raise Refusal(f"padding must be >= 0, got {padding}")
        self.padding, self.flip = padding, flip
        self.seed = seed % (1 << 31)  # torch.initial_seed() may not fit the hash's int64 arithmetic
        self.fill = fill

    @classmethod
    def black_padded(cls, padding: int, mean: Sequence[float], std: Sequence[float],
                     seed: int | None = None) -> ReplayableCropFlip:
        """The crop and flip of images normalised with ``mean``/``std``, padded with black as torchvision pads a
        PIL image; ``seed`` ``None``: torch's seed now (which ``seed_everything`` sets).

        Example:
            >>> ReplayableCropFlip.black_padded(4, mean=(0.5,), std=(0.25,), seed=3).fill
            (-2.0,)
        """
        black = tuple(-m / s for m, s in zip(mean, std, strict=True))
        return cls(padding=padding, seed=torch.initial_seed() if seed is None else seed, fill=black)

    def parameters(self, index: Tensor, view: Tensor | int) -> tuple[Tensor, Tensor, Tensor]:
        """Each sample's ``(top, left, flipped)`` for this view."""
        span = 2 * self.padding + 1
        top = replay_uniform(self.seed, index, view, 0, span)
        left = replay_uniform(self.seed, index, view, 1, span)
        flipped = replay_uniform(self.seed, index, view, 2, 2).bool() if self.flip else torch.zeros_like(top).bool()
        return top, left, flipped

    def __call__(self, images: Tensor, index: Tensor, view: Tensor | int) -> Tensor:
        """``images`` ``(B, C, H, W)`` of the samples ``index``, as their view ``view``."""
        batch, channels, height, width = images.shape
        top, left, flipped = self.parameters(index.to(images.device), view)
        p = self.padding
        padded = F.pad(images, (p, p, p, p))
        if self.fill is not None and p > 0:  # the border in the normalised space: the value black takes there
            border = torch.ones(height + 2 * p, width + 2 * p, device=images.device, dtype=images.dtype)
            border[p:p + height, p:p + width] = 0
            fill = torch.tensor(self.fill, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
            padded = padded + border * fill
        rows = top.view(-1, 1) + torch.arange(height, device=images.device)  # (B, H)
        columns = left.view(-1, 1) + torch.arange(width, device=images.device)  # (B, W)
        columns = torch.where(flipped.view(-1, 1), columns.flip(-1), columns)  # a flip reads the crop backwards
        cropped = padded.gather(2, rows.view(batch, 1, height, 1).expand(batch, channels, height, width + 2 * p))
        return cropped.gather(3, columns.view(batch, 1, 1, width).expand(batch, channels, height, width))

    def __repr__(self) -> str:
        return f"ReplayableCropFlip(padding={self.padding}, flip={self.flip}, seed={self.seed})"

