"""A small registry of networks by name, in the spirit of timm's ``create_model``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from lightning_kd.errors import Refusal

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_CONFIGS: dict[str, dict[str, Any]] = {}  # name -> the class_path/init_args that build it, where declared

F = TypeVar("F", bound=Callable[..., nn.Module])


def register_model(name: str | None = None, network: type[nn.Module] | None = None,
                   **preset: Any) -> Callable[[F], F]:
    """Register a network constructor under ``name`` (default: the function's name).

    ``network`` and ``preset`` say which class with which arguments the constructor builds, so that the name can
    stand for that config on the command line (:func:`model_config`: ``--model.init_args.student resnet20``).

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
        if network is not None:
            public = network.__module__.startswith("lightning_kd.models")  # exported by the package
            module = "lightning_kd.models" if public else network.__module__
            _CONFIGS[key] = {"class_path": f"{module}.{network.__qualname__}",
                             "init_args": {k: list(v) if isinstance(v, tuple) else v for k, v in preset.items()}}
        return fn

    return decorator


def list_models() -> list[str]:
    """Names of the registered networks, sorted; torchvision and timm models are reached as ``tv_<name>``
    and ``timm_<name>``."""
    return sorted(_MODELS)


def is_model_name(value: str) -> bool:
    """Whether ``value`` names a network: a registered one, ``tv_<name>``, or ``timm_<name>`` / ``timm/<name>``."""
    return value in _MODELS or any(value.startswith(prefix) and len(value) > len(prefix)
                                   for prefix in ("tv_", "timm_", "timm/"))


def model_config(name: str) -> dict[str, Any]:
    """The config (``class_path``/``init_args``) that builds the network ``name``, as a config file would give it.

    Example:
        >>> model_config("resnet20")
        {'class_path': 'lightning_kd.models.CifarResNet', 'init_args': {'depth': 20, 'widths': [16, 16, 32, 64]}}
        >>> model_config("timm/resnet18")["init_args"]
        {'name': 'resnet18'}

    Raises:
        Refusal: No network has that name, or it was registered without the class it builds.
    """
    if name.startswith("tv_"):
        return {"class_path": "lightning_kd.models.TorchvisionNetwork", "init_args": {"name": name[3:]}}
    if name.startswith(("timm_", "timm/")):
        return {"class_path": "lightning_kd.models.TimmNetwork", "init_args": {"name": name[5:]}}
    if name not in _MODELS:
        raise Refusal(f"unknown network {name!r}: `lightning-kd list networks` names them")
    if name not in _CONFIGS:
        raise Refusal(f"network {name!r} was registered without the class it builds (register_model(network=...)), "
                      "so it cannot stand for a config")
    return {"class_path": _CONFIGS[name]["class_path"], "init_args": dict(_CONFIGS[name]["init_args"])}


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
