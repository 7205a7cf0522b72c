"""Multi-exit networks: classifier exits along a backbone's depth, without editing the backbone's code.

:class:`MultiExitNetwork` attaches an exit to chosen layers of any backbone (a zoo network's stages by
default; module paths for any torchvision, timm or plain network), as Be Your Own Teacher (Zhang et
al. 2019) does: each exit is a bottleneck that down-samples the layer's feature map to the final
resolution and widens it to the final feature width, global average pooling and a linear head, plus
a linear adaptation layer that maps the exit's pooled features onto the deepest features for the
feature hint. The deepest exit *is* the backbone's own head: ``forward`` returns exactly the
backbone's logits, and the exits are read from forward hooks that only read.

Exits are numbered from 1 (the shallowest) to ``num_exits`` (the backbone's head). Each exit's cost
(:meth:`MultiExitNetwork.exit_costs`) is what running the network up to and including that exit
takes: parameters and multiply-adds per sample. :meth:`MultiExitNetwork.truncated` exports the
network cut after one exit as a plain ``nn.Module`` (the backbone's graph pruned by torch.fx, through
torchvision's ``create_feature_extractor``).

Example:
    >>> import torch
    >>> from lightning_kd.models import SmallCNN
    >>> backbone = SmallCNN(widths=(8, 16, 32), num_classes=10)
    >>> net = MultiExitNetwork(backbone, input_shape=(1, 28, 28))
    >>> net.exit_paths, net.num_exits
    (('body.2', 'body.6'), 3)
    >>> x = torch.randn(4, 1, 28, 28)
    >>> out = net.forward_exits(x)
    >>> [tuple(z.shape) for z in out.logits]
    [(4, 10), (4, 10), (4, 10)]
    >>> torch.equal(net(x), backbone(x))
    True
"""

from __future__ import annotations

import copy
import difflib
import math
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lightning_kd.errors import Refusal
from lightning_kd.models.base import count_parameters, init_weights
from lightning_kd.models.taps import PENULTIMATE, STAGES, LayerSpec, forward_with_taps

DEFAULT_BOTTLENECK_RATIO = 4
"""An exit's bottleneck runs at ``final width / ratio`` channels (the BYOT code's choice)."""


@dataclass(frozen=True)
class ExitCost:
    """What running the network up to and including one exit takes, per input sample.

    Attributes:
        exit: The exit's number (1 = shallowest).
        parameters: Parameters of the backbone's layers that run before the exit, plus the exit's own.
        macs: Multiply-adds of convolutions and matrix products (``torch.utils.flop_counter``'s FLOPs / 2;
            normalisation, activations and pooling are not counted).
    """

    exit: int
    parameters: int
    macs: int


@dataclass
class MultiExitOutput:
    """Every exit's output from one forward.

    Attributes:
        logits: Each exit's logits, shallowest first; the last are the backbone's own.
        features: Each exit's pooled features ``F_i``, ``(B, D)``; the last are the backbone's penultimate.
        hints: Each shallow exit's features through its adaptation layer (one fewer than ``logits``),
            comparable with ``features[-1]``.
    """

    logits: list[Tensor]
    features: list[Tensor]
    hints: list[Tensor]


class ExitHead(nn.Module):
    """One exit: a bottleneck to the final resolution and feature width, global average pooling, a linear head.

    For a feature map ``(C, H, W)``: 1x1 convolution to ``width / ratio`` channels, a ``s x s``
    convolution of stride ``s = H // final_H`` (the down-sampling), 1x1 convolution to ``width``
    channels, each with BatchNorm and ReLU. For a feature vector ``(C,)`` (an MLP's hidden layer): a
    linear layer to ``width`` with BatchNorm and ReLU.

    Args:
        in_shape: Shape of the layer's output for one sample, ``(C, H, W)`` or ``(C,)``.
        final_size: ``(H, W)`` of the backbone's last feature map (ignored for vectors).
        width: The backbone's penultimate feature width.
        num_classes: Number of classes.
        bottleneck_ratio: Channels of the bottleneck's middle convolutions: ``width // ratio``.
    """

    def __init__(self, in_shape: Sequence[int], final_size: Sequence[int], width: int, num_classes: int,
                 bottleneck_ratio: int = DEFAULT_BOTTLENECK_RATIO) -> None:
        super().__init__()
        self.bottleneck: nn.Module
        if len(in_shape) == 3:
            channels, height = in_shape[0], in_shape[1]
            middle = max(1, width // bottleneck_ratio)
            stride = max(1, height // final_size[0]) if final_size else 1
            self.bottleneck = nn.Sequential(
                nn.Conv2d(channels, middle, 1, bias=False), nn.BatchNorm2d(middle), nn.ReLU(),
                nn.Conv2d(middle, middle, stride, stride, bias=False), nn.BatchNorm2d(middle), nn.ReLU(),
                nn.Conv2d(middle, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            )
        else:
            self.bottleneck = nn.Sequential(nn.Linear(in_shape[0], width), nn.BatchNorm1d(width), nn.ReLU())
        self.fc = nn.Linear(width, num_classes)
        init_weights(self)

    def forward_features(self, x: Tensor) -> Tensor:
        """The exit's pooled features ``F_i``, ``(B, width)``."""
        return self.bottleneck(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.forward_features(x))


class MultiExitNetwork(nn.Module):
    """A backbone with classifier exits attached to its layers; its own output unchanged.

    Args:
        backbone: Any network returning logits: a zoo, torchvision (``tv_*``) or timm (``timm_*``)
            network, or a plain ``nn.Module``.
        exits: Where the shallow exits attach: ``"stages"`` (every stage of the backbone but the last,
            whose exit is the backbone's own head) or module paths (``"layer2"``, ``"stages.1"``; see
            ``backbone.named_modules()``), shallowest first.
        input_shape: Shape of one input, e.g. ``(3, 32, 32)``, to size the exits (the CLI fills it in from
            the data).
        bottleneck_ratio: Each exit's bottleneck runs at ``final width // ratio`` channels.

    Raises:
        Refusal: An exit names no layer of the backbone (the message lists its stages), a layer
            gives neither a feature map nor a feature vector, the exits are not in forward order, or
            there is no shallow exit.
    """

    def __init__(self, backbone: nn.Module, exits: LayerSpec = STAGES, input_shape: Sequence[int] | None = None,
                 bottleneck_ratio: int = DEFAULT_BOTTLENECK_RATIO) -> None:
        super().__init__()
        if input_shape is None:
            raise Refusal("MultiExitNetwork needs input_shape (one input's shape, e.g. [3, 32, 32]) to size its "
                             "exits; the CLI fills it in from the data")
        if bottleneck_ratio < 1:
            raise Refusal(f"bottleneck_ratio must be >= 1, got {bottleneck_ratio}")
        self.backbone = backbone
        self.input_shape = tuple(int(size) for size in input_shape)
        stages = _stage_names_or_none(backbone)
        self.exit_paths = _exit_paths(backbone, exits, stages)
        probe = _probe(backbone, self.input_shape, [*self.exit_paths, *(stages[-1:] if stages else [])])
        fired = [path for path in probe.order if path in self.exit_paths]
        if fired != list(self.exit_paths):
            raise Refusal(f"exits must be listed shallowest first, in the order the backbone runs them: "
                             f"{', '.join(fired)} (got {', '.join(self.exit_paths)})")
        self.num_classes = int(probe.logits.shape[1])
        width = int(probe.features[PENULTIMATE].shape[1])
        final_size = _final_size(probe.features, stages, self.exit_paths)
        heads = []
        for path in self.exit_paths:
            shape = tuple(probe.features[path].shape[1:])
            if len(shape) not in (1, 3):
                raise Refusal(f"layer {path!r} gives features of shape {shape} per sample; exits attach to feature "
                                 "maps (C, H, W) or vectors (C,): choose another layer")
            heads.append(ExitHead(shape, final_size, width, self.num_classes, bottleneck_ratio))
        self.exits = nn.ModuleList(heads)
        self.adapters = nn.ModuleList(nn.Linear(width, width) for _ in self.exit_paths)
        self.num_features = width
        self._costs: list[ExitCost] | None = None
        self._ensemble_cost = (0, 0)

    @property
    def num_exits(self) -> int:
        """Number of exits, the backbone's own head included."""
        return len(self.exit_paths) + 1

    @property
    def stage_names(self) -> tuple[str, ...]:
        """The backbone's stages (so a multi-exit network can be tapped, e.g. as a teacher)."""
        stages = _stage_names_or_none(self.backbone)
        if stages is None:
            raise Refusal(f"{type(self.backbone).__name__} does not name its stages")
        return tuple(f"backbone.{name}" for name in stages)

    def forward(self, x: Tensor) -> Tensor:
        """The backbone's logits, exactly (the deepest exit)."""
        return self.backbone(x)

    def forward_with_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The backbone's logits and penultimate features."""
        out = forward_with_taps(self.backbone, x, [PENULTIMATE])
        return out.logits, out.features[PENULTIMATE]

    def forward_exits(self, x: Tensor) -> MultiExitOutput:
        """Every exit's logits and features, and the shallow exits' adapted features, from one backbone pass."""
        tapped = forward_with_taps(self.backbone, x, [*self.exit_paths, PENULTIMATE])
        features = [head.forward_features(tapped.features[path]) for head, path in zip(self.exits, self.exit_paths,
                                                                                          strict=True)]
        logits = [head.fc(f) for head, f in zip(self.exits, features, strict=True)]
        hints = [adapter(f) for adapter, f in zip(self.adapters, features, strict=True)]
        return MultiExitOutput([*logits, tapped.logits], [*features, tapped.features[PENULTIMATE]], hints)

    def check_exit(self, exit: int) -> None:
        """Raise ``ValueError`` unless ``exit`` is one of this network's exit numbers."""
        if not (isinstance(exit, int) and 1 <= exit <= self.num_exits):
            raise Refusal(f"exit must be a number from 1 to {self.num_exits} (the backbone's head), got {exit!r}")

    # -- cost ---------------------------------------------------------------------------------------
    def exit_costs(self) -> list[ExitCost]:
        """Parameters and multiply-adds per sample of running the network up to and including each exit.

        Measured once (one forward of a single zero input, in eval mode, on the network's device) and kept.

        Example:
            >>> from lightning_kd.models import MLP
            >>> net = MultiExitNetwork(MLP(input_shape=(4,), hidden_sizes=(8, 6), num_classes=3), input_shape=(4,))
            >>> net.exit_costs()[0]  # backbone 4*8 + 8, bottleneck 8*6 + 6 and BatchNorm 2*6, head 6*3 + 3
            ExitCost(exit=1, parameters=127, macs=98)
            >>> net.exit_costs()[-1].parameters == count_parameters(net.backbone)
            True
        """
        if self._costs is None:
            self._costs, self._ensemble_cost = self._measure_costs()
        return list(self._costs)

    def ensemble_cost(self) -> tuple[int, int]:
        """``(parameters, multiply-adds)`` of running every exit (the backbone once, every exit's head): the
        cost of the exits' ensemble."""
        self.exit_costs()
        return self._ensemble_cost

    @torch.no_grad()
    def _measure_costs(self) -> tuple[list[ExitCost], tuple[int, int]]:
        from torch.utils.flop_counter import FlopCounterMode

        parameter = next(self.parameters())
        x = torch.zeros(1, *self.input_shape, device=parameter.device, dtype=parameter.dtype)
        modules = dict(self.backbone.named_modules())
        started: set[int] = set()
        at_exit: dict[str, tuple[int, int, Tensor]] = {}
        was_training = self.training
        self.eval()
        try:
            with FlopCounterMode(display=False) as counter, ExitStack() as hooks:
                def started_hook(module: nn.Module, inputs: Any) -> None:
                    started.add(id(module))

                def exit_hook(path: str) -> Any:
                    def hook(module: nn.Module, inputs: Any, output: Any) -> None:
                        parameters = sum(p.numel() for m in self.backbone.modules() if id(m) in started
                                         for p in m.parameters(recurse=False))
                        at_exit.setdefault(path, (parameters, counter.get_total_flops(), output))
                    return hook

                for module in modules.values():
                    hooks.callback(module.register_forward_pre_hook(started_hook).remove)
                for path in self.exit_paths:
                    hooks.callback(modules[path].register_forward_hook(exit_hook(path)).remove)
                self.backbone(x)
            full = counter.get_total_flops()
            costs, head_flops = [], 0
            for number, (path, head) in enumerate(zip(self.exit_paths, self.exits, strict=True), start=1):
                parameters, flops, features = at_exit[path]
                with FlopCounterMode(display=False) as head_counter:
                    head(features)
                head_flops += head_counter.get_total_flops()
                costs.append(ExitCost(number, parameters + count_parameters(head),
                                      (flops + head_counter.get_total_flops()) // 2))
            costs.append(ExitCost(self.num_exits, count_parameters(self.backbone), full // 2))
        finally:
            self.train(was_training)
        ensemble = (count_parameters(self.backbone) + count_parameters(self.exits), (full + head_flops) // 2)
        return costs, ensemble

    # -- export -------------------------------------------------------------------------------------
    def truncated(self, exit: int) -> nn.Module:
        """A copy of the network cut after ``exit``: a plain ``nn.Module`` returning that exit's logits.

        Only the backbone's layers that exit needs run (its graph is pruned with torch.fx through
        torchvision's ``create_feature_extractor``); the last exit gives a copy of the backbone itself.

        Raises:
            Refusal: ``exit`` is out of range, or torch.fx cannot trace the backbone (data-dependent
                control flow); the message says which.
        """
        self.check_exit(exit)
        if exit == self.num_exits:
            return copy.deepcopy(self.backbone)
        from torchvision.models.feature_extraction import create_feature_extractor

        path = self.exit_paths[exit - 1]
        try:
            extractor = create_feature_extractor(copy.deepcopy(self.backbone), return_nodes={path: "features"})
        except Exception as error:  # torch.fx's own error names the construct it cannot trace
            raise Refusal(f"cannot cut {type(self.backbone).__name__} after exit {exit}: torch.fx cannot trace "
                             f"it ({error}); use forward_exits for that exit instead") from error
        # a node typed by a postponed annotation holds the string ("Tensor"), which torch 2.11's pickler of graph
        # modules cannot save (torch 2.14's can): dropped, the cut network saves whole on both
        for node in extractor.graph.nodes:
            if isinstance(node.type, str):
                node.type = None
        extractor.recompile()
        return TruncatedNetwork(extractor, copy.deepcopy(self.exits[exit - 1])).train(self.training)


class TruncatedNetwork(nn.Module):
    """A backbone's layers up to one exit's layer, then that exit (see :meth:`MultiExitNetwork.truncated`).

    Args:
        extractor: Returns ``{"features": <the exit's layer output>}`` (a torch.fx ``GraphModule``).
        head: The exit.
    """

    def __init__(self, extractor: nn.Module, head: ExitHead) -> None:
        super().__init__()
        self.extractor = extractor
        self.head = head
        self.num_classes = head.fc.out_features

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.extractor(x)["features"])


# -- helpers ----------------------------------------------------------------------------------------
@dataclass
class _Probe:
    logits: Tensor
    features: dict[str, Tensor]
    order: list[str]


@torch.no_grad()
def _probe(backbone: nn.Module, input_shape: tuple[int, ...], paths: list[str]) -> _Probe:
    """One eval-mode forward of zeros: the logits, the layers' outputs and the order they ran in."""
    parameter = next(backbone.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    modules = dict(backbone.named_modules())
    order: list[str] = []
    was_training = backbone.training
    backbone.eval()
    try:
        with ExitStack() as hooks:
            for path in dict.fromkeys(paths):
                handle = modules[path].register_forward_hook(_order_recorder(order, path))
                hooks.callback(handle.remove)
            try:
                out = forward_with_taps(backbone, torch.zeros(2, *input_shape, device=device), [*paths, PENULTIMATE])
            except Exception as error:
                raise Refusal(f"the backbone ({type(backbone).__name__}) fails on inputs of shape {input_shape}: "
                                 f"{error}") from error
    finally:
        backbone.train(was_training)
    if out.logits.ndim != 2:
        raise Refusal(f"the backbone ({type(backbone).__name__}) returns {tuple(out.logits.shape)}, not "
                         "(B, classes) logits")
    return _Probe(out.logits, out.features, list(dict.fromkeys(order)))


def _order_recorder(order: list[str], path: str) -> Any:
    def hook(module: nn.Module, inputs: Any, output: Any) -> None:
        order.append(path)

    return hook


def _stage_names_or_none(backbone: nn.Module) -> tuple[str, ...] | None:
    try:
        names = getattr(backbone, "stage_names", None)
    except NotImplementedError:
        return None
    return tuple(names) if names else None


def _exit_paths(backbone: nn.Module, exits: LayerSpec, stages: tuple[str, ...] | None) -> tuple[str, ...]:
    """The layers the shallow exits attach to; refuse unknown ones, listing the backbone's stages."""
    if exits == STAGES:
        if stages is None:
            raise Refusal(f"{type(backbone).__name__} does not name its stages: give the exits as module paths "
                             "(see backbone.named_modules())")
        if len(stages) < 2:
            raise Refusal(f"{type(backbone).__name__} has a single stage, so no shallow exit: give module paths")
        return stages[:-1]
    requested = [exits] if isinstance(exits, str) else list(exits)
    if not requested:
        raise Refusal("MultiExitNetwork needs at least one shallow exit")
    paths = {name for name, _ in backbone.named_modules() if name}
    for path in requested:
        if path not in paths:
            listed = f"its stages are {', '.join(stages)}" if stages else "it names no stages"
            close = difflib.get_close_matches(str(path), sorted(paths), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise Refusal(f"cannot attach an exit to {path!r}: {type(backbone).__name__} has no such layer; "
                             f"{listed} (any path of backbone.named_modules() works){hint}")
    if len(set(requested)) != len(requested):
        raise Refusal(f"exits are listed more than once: {requested}")
    return tuple(requested)


def _final_size(features: dict[str, Tensor], stages: tuple[str, ...] | None,
                exit_paths: Sequence[str]) -> tuple[int, ...]:
    """``(H, W)`` the exits down-sample to: the last stage's map, else the smallest of the exits' maps."""
    if stages and features[stages[-1]].ndim == 4:
        return tuple(features[stages[-1]].shape[2:])
    maps = [features[path] for path in exit_paths if features[path].ndim == 4]
    if not maps:
        return ()
    return tuple(min((tuple(m.shape[2:]) for m in maps), key=math.prod))
