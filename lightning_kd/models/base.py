"""The interface every network in the zoo follows."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lightning_kd.errors import Refusal


class ClassifierNetwork(nn.Module):
    """A classifier split into a feature extractor and a linear head.

    Distillation methods need both the logits and the penultimate features (feature-matching
    losses, projectors, distribution matching), so every network of the zoo implements
    :meth:`forward_features` (input -> pooled penultimate features); :meth:`forward_head`
    (features -> logits) is the linear ``fc`` unless a network says otherwise. ``forward`` returns
    logits only, so a zoo network is a drop-in ``nn.Module`` anywhere else.

    Every zoo network also names its stages (:attr:`stage_names`): the module paths whose outputs are
    the feature maps at the end of each resolution, so a method can tap "the stages" (see
    :mod:`lightning_kd.models.taps`) without knowing the architecture.

    Attributes:
        num_classes: Number of output classes.
        num_features: Width of the penultimate features.
        fc: The linear head.
    """

    num_classes: int
    num_features: int
    fc: nn.Module
    he_init: bool = False
    """Whether construction ends with :func:`init_weights` (He-normal convolutions, unit BatchNorm)."""

    def reset_parameters(self) -> None:
        """Draw fresh random weights from the same distribution as at construction.

        Layers reset themselves, then :func:`init_weights` runs if construction ran it. A parameter
        outside any layer with ``reset_parameters()`` is an error: a subclass that has one overrides this.
        """
        _reset_layers(self)
        if self.he_init:
            init_weights(self)

    def forward_features(self, x: Tensor) -> Tensor:
        """Return the penultimate features, shape ``(B, num_features)``."""
        raise NotImplementedError

    def forward_head(self, features: Tensor) -> Tensor:
        """Map penultimate features to logits, shape ``(B, num_classes)``."""
        return self.fc(features)

    @property
    def stage_names(self) -> tuple[str, ...]:
        """Module paths of the stages' outputs, shallowest first."""
        raise NotImplementedError(f"{type(self).__name__} does not name its stages")

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_with_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(logits, features)`` from one pass."""
        features = self.forward_features(x)
        return self.forward_head(features), features


def count_parameters(network: nn.Module) -> int:
    """Number of parameters of a network (trainable or not)."""
    return sum(p.numel() for p in network.parameters())


@torch.no_grad()
def init_weights(module: nn.Module) -> None:
    """He-normal convolutions, unit BatchNorm: the CIFAR ResNet/WRN convention (linears keep torch's default)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


@torch.no_grad()
def reinitialize(network: nn.Module) -> nn.Module:
    """Give ``network`` fresh random weights in place (from the global RNG) and return it.

    A network with its own ``reset_parameters()`` (every zoo network) uses it; otherwise every
    submodule's ``reset_parameters()`` is called, and a parameter that none of them covers is an
    error rather than a weight silently carried over. BatchNorm running statistics are reset too.

    Raises:
        Refusal: Some parameter's module has no ``reset_parameters()``.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
        >>> before = net[0].weight.clone()
        >>> torch.equal(reinitialize(net)[0].weight, before)
        False
    """
    if callable(getattr(network, "reset_parameters", None)):
        network.reset_parameters()
    else:
        _reset_layers(network)
    for module in network.modules():  # running statistics belong to the old weights
        if callable(getattr(module, "reset_running_stats", None)):
            module.reset_running_stats()
    return network


def _has_reset(module: nn.Module) -> bool:
    return callable(getattr(module, "reset_parameters", None))


def _reset_layers(network: nn.Module) -> None:
    """Call every submodule's ``reset_parameters()``; refuse a parameter that none of them covers."""
    uncovered = [
        f"{name}.{param_name}" if name else param_name
        for name, module in network.named_modules()
        if module is network or not _has_reset(module)
        for param_name, _ in module.named_parameters(recurse=False)
    ]
    if uncovered:
        raise Refusal(
            f"cannot re-initialise {type(network).__name__}: the modules owning {uncovered[:5]} have no "
            "reset_parameters(); give the network a reset_parameters() method, or build it from a config "
            "(class_path/init_args, as the CLI does) so each generation is constructed afresh"
        )
    for module in network.modules():
        if module is not network and _has_reset(module):
            module.reset_parameters()


def check_networks_fit(networks: dict[str, nn.Module], num_classes: int, input_shape: tuple[int, ...],
                       dtype: torch.dtype = torch.float32) -> Tensor:
    """:func:`check_network_fits` for each network by role; returns the example sample (zeros, batch of one)."""
    example = torch.zeros(1, *input_shape, dtype=dtype)
    for role, network in networks.items():
        check_network_fits(role, network, num_classes, example)
    return example


def check_network_fits(role: str, network: nn.Module, num_classes: int, example: Tensor) -> None:
    """One eval-mode forward of a dummy batch: refuse a network that does not fit the data, naming its role.

    Args:
        role: The network's role (named in the message).
        network: The network.
        num_classes: The data's class count (a vocabulary's size for token data).
        example: One sample of the data's shape and type (zeros); a batch of two is run.

    Raises:
        Refusal: The network fails on such inputs, or predicts another number of classes (in its last dimension).
    """
    input_shape = tuple(example.shape[1:])
    parameter = next(network.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    was_training = network.training
    network.eval()
    try:
        with torch.no_grad():
            logits = network(torch.zeros(2, *input_shape, dtype=example.dtype, device=device))
    except Exception as error:  # the network's own error names the layer; add what we know
        raise Refusal(
            f"the {role} network ({type(network).__name__}) fails on inputs of shape {input_shape} "
            f"from the data: {error}"
        ) from error
    finally:
        network.train(was_training)
    if logits.ndim < 2 or logits.shape[-1] != num_classes:
        per = "position" if logits.ndim > 2 else "sample"
        raise Refusal(
            f"the {role} network ({type(network).__name__}) predicts {tuple(logits.shape[-1:])} outputs per "
            f"{per} but the data has {num_classes} classes{' (tokens)' if example.dtype == torch.long else ''}"
        )
