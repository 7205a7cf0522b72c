"""Losses over positions: a sequence's tokens (or a dense output's pixels) as the samples of a batch.

A classifier's logits are ``(B, C)`` with ``(B,)`` targets. A language model's are ``(B, T, V)`` with
``(B, T)`` targets: one prediction per position. Every logits loss of :mod:`lightning_kd.losses` is
decorated with :func:`per_position`, so it takes either: logits ``(..., C)`` (the class dimension
**last**, as language models return them; move a dense ``(B, C, H, W)`` output with
``logits.movedim(1, -1)``) and targets of the leading shape ``(...)``. The positions are flattened into
samples and the ignored ones dropped before the loss runs, so

* the loss is **per position** (per token): its means are over the valid positions of the whole batch,
  and a batch statistic (CWTM's normalisation, AE-KD's teacher weights) is taken over them;
* an **ignored** position (target :data:`IGNORE_INDEX`, PyTorch's ``-100``, as for padding) or one
  outside ``mask`` contributes nothing, not even a gradient;
* half-precision logits (a ``16-mixed`` or ``bf16-mixed`` forward's) are computed on in float32, with autocast
  off (see :mod:`lightning_kd.losses.precision`): a softmax rounded to bf16's 8 bits, then a log-ratio of two
  nearly equal distributions, had put a KD term of near-uniform outputs 66% off its value on the same logits (the
  gradient flows back to the half-precision logits as usual).

``(B, C)`` logits (float32 or float64) with ``(B,)`` targets pass through untouched (no copy, no synchronisation).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import torch
from torch import Tensor

from lightning_kd.errors import Refusal
from lightning_kd.losses.precision import call_in_float32

__all__ = ["IGNORE_INDEX", "flatten_positions", "per_position"]

IGNORE_INDEX = -100
"""The target of a position no loss or metric counts (PyTorch's ``ignore_index`` default)."""

Loss = TypeVar("Loss", bound=Callable[..., Any])


def flatten_positions(logits: Tensor, targets: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The valid positions of ``(..., C)`` logits and ``(...)`` targets as ``(N, C)`` and ``(N,)``.

    A position is valid when its target is not :data:`IGNORE_INDEX` and ``mask`` (same shape as
    ``targets``, if given) is true there.

    Example:
        >>> logits, targets = torch.randn(2, 3, 5), torch.tensor([[1, 2, -100], [0, -100, 4]])
        >>> flat_logits, flat_targets = flatten_positions(logits, targets)
        >>> flat_logits.shape, flat_targets.tolist()
        (torch.Size([4, 5]), [1, 2, 0, 4])
    """
    if targets.ndim == 1 and mask is None:
        return logits, targets
    if logits.shape[:-1] != targets.shape:
        raise Refusal(f"logits of shape {tuple(logits.shape)} do not match targets of shape {tuple(targets.shape)}: "
                      "per-position logits are (..., C) with the class dimension last and targets (...)")
    keep = _valid(targets, mask)
    return _select(logits, targets.shape, keep), _select(targets, targets.shape, keep)


def per_position(loss: Loss) -> Loss:
    """Let a ``(B, C)`` loss take ``(..., C)`` logits: flatten its per-position arguments, drop ignored positions.

    The positions' shape is read from the ``targets`` argument, or else from the first logits argument
    (``(...)`` of its ``(..., C)``). Then every tensor argument whose shape holds those positions,
    followed by a class dimension (logits, probabilities) or not (targets, per-position weights), and
    every list of such tensors (several teachers' logits), is flattened to ``N`` positions, and stacked
    tensors (``(K, ..., C)``) keep their leading dimensions. The decorated loss also takes ``mask``, a
    boolean tensor of the positions' shape: only its true positions count.

    Example:
        >>> import torch.nn.functional as F
        >>> cross_entropy = per_position(lambda logits, targets: F.cross_entropy(logits, targets))
        >>> logits, targets = torch.randn(2, 3, 5), torch.randint(0, 5, (2, 3))
        >>> flat = F.cross_entropy(logits.reshape(6, 5), targets.reshape(6))
        >>> bool(torch.isclose(cross_entropy(logits, targets), flat))
        True
    """
    signature = inspect.signature(loss)

    @functools.wraps(loss)
    def on_positions(*args: Any, mask: Tensor | None = None, **kwargs: Any) -> Any:
        return call_in_float32(_on_positions, *args, mask=mask, **kwargs)

    def _on_positions(*args: Any, mask: Tensor | None, **kwargs: Any) -> Any:
        if mask is None and _samples_only(args, kwargs):  # (B, C) and (B,) tensors: the common case, at no cost
            return loss(*args, **kwargs)
        arguments = signature.bind(*args, **kwargs)
        shape = _positions_shape(arguments.arguments)
        if shape is None or (len(shape) == 1 and mask is None):  # (B, C) samples: nothing to do
            return loss(*args, **kwargs)
        targets = arguments.arguments.get("targets")
        keep = _valid(targets if isinstance(targets, Tensor) else None, mask, shape)
        for name, value in arguments.arguments.items():
            arguments.arguments[name] = _select(value, shape, keep)
        return loss(*arguments.args, **arguments.kwargs)

    on_positions.per_position = True  # type: ignore[attr-defined]  # how tests find every such loss
    return on_positions  # type: ignore[return-value]


def _samples_only(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether no argument can hold positions: no list, no integer tensor past ``(B,)``, no other past ``(B, C)``."""
    for value in (*args, *kwargs.values()):
        if isinstance(value, Tensor):
            if value.ndim > (2 if value.is_floating_point() else 1):
                return False
        elif isinstance(value, (list, tuple)):
            return False
    return True


def _positions_shape(arguments: Mapping[str, Any]) -> torch.Size | None:
    targets = arguments.get("targets")
    if isinstance(targets, Tensor) and not targets.is_floating_point():
        return targets.shape
    for name, value in arguments.items():
        if name.endswith("logits"):
            first = value[0] if isinstance(value, (list, tuple)) and value else value
            if isinstance(first, Tensor) and first.ndim >= 2:
                return first.shape[:-1]
    return None


def _valid(targets: Tensor | None, mask: Tensor | None, shape: torch.Size | None = None) -> Tensor | None:
    """Flat boolean of the positions that count, or ``None`` when every one does."""
    shape = targets.shape if targets is not None else shape
    keep = None if targets is None else targets.reshape(-1) != IGNORE_INDEX
    if mask is not None:
        if mask.shape != shape:
            raise Refusal(f"the mask's shape {tuple(mask.shape)} is not the positions' shape {tuple(shape or ())}")
        keep = mask.reshape(-1).bool() if keep is None else keep & mask.reshape(-1).bool()
    return None if keep is None or bool(keep.all()) else keep  # all valid: reshape only, no gather


def _select(value: Any, shape: torch.Size, keep: Tensor | None) -> Any:
    if isinstance(value, (list, tuple)):
        return type(value)(_select(item, shape, keep) for item in value)
    if not isinstance(value, Tensor):
        return value
    rank, count = len(shape), shape.numel()
    if value.ndim >= rank + 1 and value.shape[value.ndim - rank - 1 : value.ndim - 1] == shape:  # (..., C)
        flat = value.reshape(*value.shape[: value.ndim - rank - 1], count, value.shape[-1])
        return flat if keep is None else flat[..., keep, :]
    if value.ndim >= rank and value.shape[value.ndim - rank :] == shape:  # one value per position
        flat = value.reshape(*value.shape[: value.ndim - rank], count)
        return flat if keep is None else flat[..., keep]
    return value
