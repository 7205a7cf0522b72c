"""Feature taps: the outputs of chosen layers of any ``nn.Module``, collected with forward hooks.

Layers are named by module path (``"stages.1"``, ``"layer3.1.conv2"``, ``"body.layer4"``), as
``network.named_modules()`` lists them, or by names that work on any network:

* ``"stages"``: the network's stages, the outputs at the end of each resolution (see
  :func:`stage_names`): zoo networks name theirs, timm networks report them through
  ``feature_info``; ``"stages[i]"`` one of them (0-based, ``"stages[-1]"`` the deepest);
* ``"preact_stages"``: the same stages before their last ReLU (``"preact_stages[i]"`` one of them), where a network
  names them (the CIFAR ResNets, WRNs, VGGs and ShuffleNetV2 of the zoo; ``SmallCNN``): what AB, OFD and ReviewKD
  read of a teacher;
* ``"stem"``: the output of the layers before the first stage, where a network names them (the zoo's ``stem``;
  the CIFAR VGGs' ``block0``), as FSP's first layer;
* ``"penultimate"``: the features the classifier head sees (for a zoo or timm network its
  ``forward_features``; for any other module the input of its last ``nn.Linear``).

Hooks exist only while a tapped forward runs (:func:`forward_with_taps`): nothing stays registered
on a network afterwards, so deleting a task, deep-copying a network or promoting a Born-Again
generation leaves no hook and no tensor behind.

Example:
    >>> import torch
    >>> from lightning_kd.models import create_model
    >>> net = create_model("resnet20", num_classes=10)
    >>> out = forward_with_taps(net, torch.randn(2, 3, 32, 32), ["stages", "penultimate"])
    >>> {name: tuple(f.shape) for name, f in out.features.items()}  # doctest: +NORMALIZE_WHITESPACE
    {'stages.0': (2, 16, 32, 32), 'stages.1': (2, 32, 16, 16), 'stages.2': (2, 64, 8, 8),
     'penultimate': (2, 64)}
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from lightning_kd.errors import Refusal

STAGES = "stages"
PREACT_STAGES = "preact_stages"
STEM = "stem"
PENULTIMATE = "penultimate"
_ONE_STAGE = re.compile(r"(preact_)?stages\[(-?\d+)\]")

LayerSpec = str | Sequence[str]
"""One layer name, ``"stages"``, ``"stages[i]"``, ``"preact_stages"``, ``"stem"``, ``"penultimate"``, or a list."""


@dataclass
class NetworkOutput:
    """What one forward of a network gives a method: logits and the tapped features by layer name."""

    logits: Tensor
    features: dict[str, Tensor] = field(default_factory=dict)


def stage_names(network: nn.Module) -> tuple[str, ...]:
    """Module paths of ``network``'s stages, shallowest first.

    Raises:
        Refusal: The network names no stages (a plain ``nn.Module``): name its layers by path instead.
    """
    names = getattr(network, "stage_names", None)
    if names is None:
        raise Refusal(
            f"{type(network).__name__} does not name its stages; name the layers to tap by module path "
            "(see network.named_modules()), or use a zoo, torchvision or timm network"
        )
    return tuple(names)


def preact_stage_names(network: nn.Module) -> tuple[str, ...]:
    """Module paths whose outputs are ``network``'s stages before their last ReLU, shallowest first.

    Raises:
        Refusal: The network does not name them.

    Example:
        >>> from lightning_kd.models import create_model
        >>> preact_stage_names(create_model("resnet20", num_classes=10))
        ('stages.0.2.preact', 'stages.1.2.preact', 'stages.2.2.preact')
    """
    names = getattr(network, "preact_stage_names", None)
    if names is None:
        raise Refusal(
            f"{type(network).__name__} does not name its stages before their last ReLU (\"preact_stages\"): the "
            "CIFAR ResNets, WRNs, VGGs and ShuffleNetV2 of the zoo and SmallCNN do; otherwise name the layers by "
            "module path")
    return tuple(names)


def preact_batchnorm(network: nn.Module, layer: str) -> nn.BatchNorm2d:
    """The BatchNorm before the ReLU at a tapped pre-activation ``layer`` of ``network``: the layer itself when it is
    one, else the one the network names for that pre-activation stage (a ResNet block's last residual BatchNorm).

    Raises:
        Refusal: None is known for that layer.

    Example:
        >>> from lightning_kd.models import create_model
        >>> net = create_model("resnet20", num_classes=10)
        >>> preact_batchnorm(net, "stages.0.2.preact") is net.stages[0][2].bn2
        True
    """
    modules = dict(network.named_modules())
    if isinstance(modules.get(layer), nn.BatchNorm2d):
        return modules[layer]
    stages, batchnorms = (getattr(network, name, ()) for name in ("preact_stage_names", "preact_batchnorm_names"))
    if layer in stages and len(batchnorms) == len(stages):
        return modules[batchnorms[list(stages).index(layer)]]
    raise Refusal(f"{type(network).__name__}'s layer {layer!r} follows no known BatchNorm: tap \"preact_stages\" of a "
                  "zoo network, or BatchNorm layers by module path")


def resolve_layers(network: nn.Module, layers: LayerSpec) -> list[str]:
    """Expand ``"stages"`` and ``"stages[i]"`` (one stage, 0-based; ``-1`` the deepest) and check every path;
    ``"penultimate"`` is kept as is.

    Raises:
        Refusal: A path names no module of ``network``; the message suggests the closest ones.

    Example:
        >>> from lightning_kd.models import SmallCNN
        >>> resolve_layers(SmallCNN(widths=(8, 16)), ["stages", "penultimate"])
        ['body.2', 'body.6', 'penultimate']
        >>> resolve_layers(SmallCNN(widths=(8, 16)), ["stages[-1]", "stages[0]"])
        ['body.6', 'body.2']
        >>> resolve_layers(SmallCNN(widths=(8, 16)), "bdy.2")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        lightning_kd.errors.Refusal: SmallCNN has no layer 'bdy.2'; did you mean 'body.2', ...? (...)
    """
    requested = [layers] if isinstance(layers, str) else list(layers)
    paths = {name for name, _ in network.named_modules() if name}
    resolved: list[str] = []
    for name in requested:
        if name == STAGES:
            expanded = list(stage_names(network))
        elif name == PREACT_STAGES:
            expanded = list(preact_stage_names(network))
        elif name == STEM:  # a network whose stem is not a module named "stem" names it
            expanded = [getattr(network, "stem_name", STEM)]
        else:
            expanded = [_one_stage(network, name) or name]
        for path in expanded:
            if path != PENULTIMATE and path not in paths:
                close = difflib.get_close_matches(path, sorted(paths), n=3, cutoff=0.5)
                hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
                raise Refusal(
                    f"{type(network).__name__} has no layer {path!r}{hint} (network.named_modules() lists every path)"
                )
            if path not in resolved:
                resolved.append(path)
    return resolved


def _one_stage(network: nn.Module, name: str) -> str | None:
    """The module path ``"stages[i]"`` stands for, ``None`` for any other name."""
    match = _ONE_STAGE.fullmatch(name)
    if match is None:
        return None
    stages = preact_stage_names(network) if match.group(1) else stage_names(network)
    index = int(match.group(2))
    if not -len(stages) <= index < len(stages):
        raise Refusal(f"{name!r}: {type(network).__name__} has {len(stages)} stages ({', '.join(stages)}); "
                      f"index them from 0 to {len(stages) - 1}, or from -1 back")
    return stages[index]


def layer_list(layers: LayerSpec) -> list[str]:
    """A layer spec as a list of names, in order, each once (one name stands for a list of one).

    Example:
        >>> layer_list("penultimate"), layer_list(["a", "b", "a"])
        (['penultimate'], ['a', 'b'])
    """
    return [layers] if isinstance(layers, str) else list(dict.fromkeys(layers))


def forward_with_taps(network: nn.Module, x: Tensor, layers: LayerSpec = ()) -> NetworkOutput:
    """Run ``network`` on ``x``, returning its logits and the outputs of ``layers``.

    The logits are exactly what ``network(x)`` returns: hooks only read. A module that runs several
    times in one forward reports its last output. The hooks are removed before this returns, even
    when the forward raises.

    Args:
        network: Any ``nn.Module`` returning logits.
        x: Its input batch.
        layers: What to tap (module paths, ``"stages"``, ``"penultimate"``).
    """
    paths = resolve_layers(network, layers) if layers else []
    if not paths:
        return NetworkOutput(network(x))
    return _tapped_forward(network, x, paths)


# Eager inside a compiled step (CompiledStep): torch.compile does not guard every change of a module's hooks, and a
# forward it compiled while some layers were tapped skipped the hooks of a layer tapped later on a network of that
# class and shapes (another task's in the same process): tested in tests/test_contract.py.
@torch.compiler.disable
def _tapped_forward(network: nn.Module, x: Tensor, paths: list[str]) -> NetworkOutput:
    features: dict[str, Tensor] = {}
    modules = dict(network.named_modules())
    with ExitStack() as hooks:
        for path in paths:
            if path != PENULTIMATE:
                handle = modules[path].register_forward_hook(_recorder(features, path))
                hooks.callback(handle.remove)
        if PENULTIMATE in paths and callable(getattr(network, "forward_with_features", None)):
            logits, features[PENULTIMATE] = network.forward_with_features(x)
        else:
            if PENULTIMATE in paths:
                handle = _last_linear(network).register_forward_pre_hook(_input_recorder(features))
                hooks.callback(handle.remove)
            logits = network(x)
    return NetworkOutput(logits, {path: features[path] for path in paths if path in features})


def _recorder(features: dict[str, Tensor], path: str) -> Any:
    def hook(module: nn.Module, inputs: Any, output: Any) -> None:
        if not isinstance(output, Tensor):
            raise TypeError(f"layer {path!r} ({type(module).__name__}) returns {type(output).__name__}, not a tensor")
        features[path] = output

    return hook


def _input_recorder(features: dict[str, Tensor]) -> Any:
    def hook(module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
        features[PENULTIMATE] = inputs[0]

    return hook


def _last_linear(network: nn.Module) -> nn.Linear:
    linears = [m for m in network.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise Refusal(f"{type(network).__name__} has no nn.Linear head, so no penultimate features to tap")
    return linears[-1]
