"""Capture and restore the global random number generators, in a form a ``weights_only`` checkpoint keeps."""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import Tensor


def collect_rng_states() -> dict[str, Any]:
    """The global RNG states (torch, numpy, Python, and CUDA when present), as tensors, lists and numbers.

    Example:
        >>> import torch
        >>> states = collect_rng_states()
        >>> first = torch.rand(3)
        >>> set_rng_states(states)
        >>> torch.equal(torch.rand(3), first)
        True
    """
    version, numpy_keys, position, has_gauss, cached_gauss = np.random.get_state()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [version, torch.from_numpy(np.asarray(numpy_keys, dtype=np.int64)), position, has_gauss, cached_gauss],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what :func:`collect_rng_states` captured."""
    torch.set_rng_state(states["torch"])
    version, numpy_keys, position, has_gauss, cached_gauss = states["numpy"]
    np.random.set_state((version, numpy_keys.numpy().astype(np.uint32), position, has_gauss, cached_gauss))
    random.setstate(_as_tuples(states["python"]))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _as_tuples(value: Any) -> Any:
    # checkpoints may turn the state's tuples into lists; random.setstate wants tuples
    if isinstance(value, Iterable) and not isinstance(value, (str, bytes, Tensor)):
        return tuple(_as_tuples(v) for v in value)
    return value
