"""Any timm model as a zoo network: penultimate features, stages and re-initialisation through timm's own API."""

from __future__ import annotations

import difflib
from typing import Any

from torch import Tensor

from lightning_kd.errors import Refusal
from lightning_kd.models.base import ClassifierNetwork


def _timm() -> Any:
    try:
        import timm
    except ImportError as error:  # an extra, not a core dependency
        raise ImportError("timm networks need timm: pip install 'lightning-kd[timm]'") from error
    return timm


class TimmNetwork(ClassifierNetwork):
    """Wrap ``timm.create_model(name)``, split into features and head with timm's own API.

    ``forward_features`` is timm's ``forward_head(forward_features(x), pre_logits=True)`` (pooled
    penultimate features) and ``forward_head`` its classifier (``get_classifier()``); the stages are
    the modules timm's ``feature_info`` reports. Head dropout that timm applies between the two
    (``drop_rate``, off by default) is skipped by the split; ``forward`` is timm's own.

    Args:
        name: A timm model name, e.g. ``"resnet18"``, ``"convnext_atto"``, ``"vit_tiny_patch16_224"``.
        num_classes: Number of classes (filled from the data module by the CLI).
        in_channels: Input channels (filled from the data module by the CLI), timm's ``in_chans``.
        pretrained: Load timm's pretrained weights (downloaded from the Hugging Face Hub, so off by
            default); the head is then a fresh one with ``num_classes`` outputs.
        model_kwargs: Further keyword arguments of ``timm.create_model`` (``img_size``, ``drop_path_rate``, ...).

    Example:
        >>> import torch
        >>> net = TimmNetwork("resnet18", num_classes=10, in_channels=1)
        >>> logits, features = net.forward_with_features(torch.randn(2, 1, 32, 32))
        >>> logits.shape, features.shape, net.stage_names[-1]
        (torch.Size([2, 10]), torch.Size([2, 512]), 'body.layer4')
    """

    def __init__(
        self,
        name: str,
        num_classes: int = 1000,
        in_channels: int = 3,
        pretrained: bool = False,
        model_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        timm = _timm()
        if not timm.is_model(name):
            close = difflib.get_close_matches(name, timm.list_models(), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else " (timm.list_models() lists them)"
            raise Refusal(f"unknown timm model {name!r}{hint}")
        self._spec = {"model_name": name, "num_classes": num_classes, "in_chans": in_channels,
                      "pretrained": pretrained, **(model_kwargs or {})}
        self.body = timm.create_model(**self._spec)
        self.num_classes = num_classes
        self.num_features = getattr(self.body, "head_hidden_size", self.body.num_features)

    @property
    def stage_names(self) -> tuple[str, ...]:
        return tuple(f"body.{info['module']}" for info in self.body.feature_info)

    def reset_parameters(self) -> None:
        """Weights as at construction: timm's own initialisation (or its pretrained weights and a fresh head)."""
        self.body.load_state_dict(_timm().create_model(**self._spec).state_dict())

    def forward_features(self, x: Tensor) -> Tensor:
        return self.body.forward_head(self.body.forward_features(x), pre_logits=True)

    def forward_head(self, features: Tensor) -> Tensor:
        return self.body.get_classifier()(features)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)
