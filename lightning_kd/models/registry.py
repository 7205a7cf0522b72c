"""A small registry of networks by name, in the spirit of timm's ``create_model``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from torch import nn

from lightning_kd.errors import Refusal

_MODELS: dict[str, Callable[..., nn.Module]] = {}

F = TypeVar("F", bound=Callable[..., nn.Module])


def register_model(name: str | None = None) -> Callable[[F], F]:
    """Register a network constructor under ``name`` (default: the function's name).

    Example:
        >>> from torch import nn
        >>> @register_model("tiny_linear")
        ... def tiny_linear(num_classes: int = 10) -> nn.Module:
        ...     return nn.Linear(4, num_classes)
        >>> create_model("tiny_linear", num_classes=3).out_features
        3
    """

    def decorator(fn: F) -> F:
        key = name or fn.__name__
        if key in _MODELS:
            raise Refusal(f"a model named {key!r} is already registered")
        _MODELS[key] = fn
        return fn

    return decorator


def list_models() -> list[str]:
    """Names of the registered networks, sorted; torchvision and timm models are reached as ``tv_<name>``
    and ``timm_<name>``."""
    return sorted(_MODELS)


def create_model(name: str, **kwargs: object) -> nn.Module:
    """Build a registered network, a torchvision classification model as ``tv_<name>``, a timm one as ``timm_<name>``.

    Example:
        >>> net = create_model("resnet8x4", num_classes=100)
        >>> net.num_classes, net.num_features
        (100, 256)
    """
    if name.startswith("tv_"):
        from lightning_kd.models.torchvision import TorchvisionNetwork

        return TorchvisionNetwork(name[3:], **kwargs)  # type: ignore[arg-type]
    if name.startswith("timm_"):
        from lightning_kd.models.timm import TimmNetwork

        return TimmNetwork(name[5:], **kwargs)  # type: ignore[arg-type]
    try:
        constructor = _MODELS[name]
    except KeyError:
        raise Refusal(f"unknown model {name!r}; registered models: {', '.join(list_models())}") from None
    return constructor(**kwargs)
