"""Losses computed in float32 under mixed precision, whatever precision their inputs come in.

Under ``16-mixed`` or ``bf16-mixed`` a network's outputs (logits, feature maps) come out in half precision, and
inside ``torch.autocast`` a matrix product runs in half precision even on float32 inputs. A loss computed so
carries half precision's rounding (8 bits of mantissa for bf16) into every step: a softmax of near-uniform
logits put a KD term 66% off its value, and NST's kernel MMD of bf16 feature maps came 2% off. Every loss of
:mod:`lightning_kd.losses` is therefore computed in float32 (float64 inputs stay float64): its half-precision
tensor arguments, and lists of them, are cast to float32 and autocast is off while it runs. The gradients flow
back to the half-precision outputs as usual.

Logits losses get this from :func:`~lightning_kd.losses.per_position`; feature losses from :func:`full_precision`.
A loss computed on float32 or float64 tensors outside autocast runs exactly as written (no copy).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch
from torch import Tensor

__all__ = ["autocast_off", "call_in_float32", "full_precision", "in_float32"]

Loss = TypeVar("Loss", bound=Callable[..., Any])

_HALF_PRECISION = (torch.float16, torch.bfloat16)


def in_float32(value: Any) -> Any:
    """A half-precision tensor (or a list of them: several teachers' logits) as float32; anything else as it is.

    Example:
        >>> in_float32(torch.ones(2, dtype=torch.bfloat16)).dtype, in_float32(torch.ones(2, dtype=torch.float64)).dtype
        (torch.float32, torch.float64)
    """
    if isinstance(value, Tensor):
        return value.float() if value.dtype in _HALF_PRECISION else value
    if isinstance(value, (list, tuple)) and any(isinstance(v, Tensor) and v.dtype in _HALF_PRECISION for v in value):
        return type(value)(in_float32(v) for v in value)
    return value


def _first_tensor(values: Iterator[Any]) -> Tensor | None:
    for value in values:
        if isinstance(value, Tensor):
            return value
        if isinstance(value, (list, tuple)):
            first = _first_tensor(iter(value))
            if first is not None:
                return first
    return None


_AUTOCAST_AVAILABLE: dict[str, bool] = {}
"""Whether each device type has autocast, asked once per type (see :func:`_autocast_available`)."""


def _autocast_available(device: str) -> bool:
    """``torch.amp.is_autocast_available(device)``, remembered per device type.

    torch.compile before torch 2.14 cannot trace that call: asked inside a compiled step (every loss asks), it broke
    the step's graph in two at every loss (torch 2.11). A dict lookup traces, so each type is asked once, outside.
    """
    available = _AUTOCAST_AVAILABLE.get(device)
    if available is None:
        available = _AUTOCAST_AVAILABLE[device] = torch.amp.is_autocast_available(device)
    return available


for _device in ("cpu", "cuda", "xpu", "mps", "hpu", "meta"):  # asked now, before any step can be compiled
    _autocast_available(_device)
del _device


def autocast_off(*values: Any) -> contextlib.AbstractContextManager[Any]:
    """A context with autocast off on the device of the first tensor among ``values`` (lists searched too), where
    autocast is on; else one that does nothing (no tensor, a device without autocast, autocast already off).

    Example:
        >>> x = torch.ones(2, 2)
        >>> with torch.autocast("cpu", dtype=torch.bfloat16), autocast_off(x):
        ...     (x @ x).dtype
        torch.float32
    """
    tensor = _first_tensor(iter(values))
    if tensor is None:
        return contextlib.nullcontext()
    device = tensor.device.type
    # a device without autocast (meta tensors, say): nothing to switch off, and is_autocast_enabled would raise
    if not _autocast_available(device) or not torch.is_autocast_enabled(device):
        return contextlib.nullcontext()
    return torch.autocast(device, enabled=False)


def call_in_float32(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``function(*args, **kwargs)`` with the half-precision tensor arguments (and lists of them) as float32 and
    autocast off: what :func:`full_precision` and :func:`~lightning_kd.losses.per_position` do around a loss.

    Example:
        >>> call_in_float32(torch.add, torch.ones(2, dtype=torch.bfloat16), torch.ones(2)).dtype
        torch.float32
    """
    args = tuple(in_float32(value) for value in args)
    kwargs = {name: in_float32(value) for name, value in kwargs.items()}
    with autocast_off(*args, *kwargs.values()):
        return function(*args, **kwargs)


def full_precision(loss: Loss) -> Loss:
    """Compute ``loss`` in float32: its half-precision tensor arguments (and lists of them) as float32, autocast off.

    Every feature loss of :mod:`lightning_kd.losses` is decorated with it (the logits losses get the same from
    :func:`~lightning_kd.losses.per_position`); the decorated function is marked ``full_precision`` so that tests
    find every such loss.

    Example:
        >>> @full_precision
        ... def gram_loss(student: Tensor, teacher: Tensor) -> Tensor:
        ...     return (student @ student.T - teacher @ teacher.T).pow(2).mean()
        >>> student = torch.randn(4, 8).bfloat16()
        >>> with torch.autocast("cpu", dtype=torch.bfloat16):
        ...     gram_loss(student, torch.randn(4, 8)).dtype
        torch.float32
    """

    @functools.wraps(loss)
    def in_full_precision(*args: Any, **kwargs: Any) -> Any:
        return call_in_float32(loss, *args, **kwargs)

    in_full_precision.full_precision = True  # type: ignore[attr-defined]  # how tests find every such loss
    return in_full_precision  # type: ignore[return-value]
