"""Any torchvision classification model, split into features and head."""

from __future__ import annotations

import functools

import torch
import torchvision
from torch import Tensor, nn

from lightning_kd.errors import Refusal
from lightning_kd.models.base import ClassifierNetwork


def _set_submodule(root: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, name, module)


class TorchvisionNetwork(ClassifierNetwork):
    """Wrap ``torchvision.models.get_model(name)``; its last ``nn.Linear`` becomes the head.

    Args:
        name: A torchvision classification model, e.g. ``"resnet18"`` or ``"mobilenet_v3_small"``.
        num_classes: Number of classes (linked from the data module by the CLI).
        in_channels: Must be 3: torchvision's stems take RGB input.
        weights: Pretrained weights name (``"DEFAULT"``, ``"IMAGENET1K_V1"``, ...), downloaded by
            torchvision; the ImageNet head is replaced by a fresh one with ``num_classes`` outputs.

    Example:
        >>> import torch
        >>> net = TorchvisionNetwork("resnet18", num_classes=10)
        >>> logits, features = net.forward_with_features(torch.randn(2, 3, 32, 32))
        >>> logits.shape, features.shape
        (torch.Size([2, 10]), torch.Size([2, 512]))
    """

    def __init__(self, name: str, num_classes: int = 1000, in_channels: int = 3, weights: str | None = None) -> None:
        super().__init__()
        available = torchvision.models.list_models(module=torchvision.models)
        if name not in available:
            raise Refusal(f"unknown torchvision classification model {name!r}; choose from: {', '.join(available)}")
        if in_channels != 3:
            raise Refusal(f"torchvision model {name!r} takes 3 input channels, the data has {in_channels}")
        if weights is None:
            model = torchvision.models.get_model(name, num_classes=num_classes)
        else:
            model = torchvision.models.get_model(name, weights=weights)
        linears = [(path, m) for path, m in model.named_modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise Refusal(f"torchvision model {name!r} has no linear classifier head to split off")
        head_path, head = linears[-1]
        _set_submodule(model, head_path, nn.Identity())
        if head.out_features != num_classes:
            head = nn.Linear(head.in_features, num_classes)
        self.body = model
        self.fc = head
        self.num_classes = num_classes
        self.num_features = head.in_features
        self._spec = (name, weights)

    def reset_parameters(self) -> None:
        """Weights as at construction: torchvision's own initialisation (or its pretrained weights), a fresh head."""
        name, weights = self._spec
        self.load_state_dict(TorchvisionNetwork(name, self.num_classes, 3, weights).state_dict())

    @functools.cached_property
    def stage_names(self) -> tuple[str, ...]:  # type: ignore[override]
        """The last module at each resolution among the trunk's top-level modules (timm's ``feature_info`` convention).

        Found once, by one forward of a 224x224 image (torchvision's native size) with hooks on the
        trunk's top-level modules (``body.features``' children where the model has that Sequential).
        """
        trunk_path = "body.features" if isinstance(getattr(self.body, "features", None), nn.Sequential) else "body"
        trunk = self.get_submodule(trunk_path)
        sizes: dict[str, tuple[int, ...]] = {}
        handles = [
            module.register_forward_hook(
                lambda m, i, out, name=f"{trunk_path}.{name}": sizes.__setitem__(name, tuple(out.shape[2:]))
                if isinstance(out, Tensor) and out.ndim == 4 else None
            )
            for name, module in trunk.named_children()
        ]
        was_training = self.training
        try:
            self.eval()
            with torch.no_grad():
                self.forward_features(torch.zeros(1, 3, 224, 224, device=self.fc.weight.device))
        finally:
            self.train(was_training)
            for handle in handles:
                handle.remove()
        # a stage ends where the next module changes the resolution; global pooling (1x1) ends none
        names = [name for name, size in sizes.items() if size != (1, 1)]
        return tuple(name for name, after in zip(names, [*names[1:], None], strict=True)
                     if after is None or sizes[after] != sizes[name])

    def forward_features(self, x: Tensor) -> Tensor:
        return self.body(x)
