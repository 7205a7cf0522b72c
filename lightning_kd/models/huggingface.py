"""Hugging Face ``transformers`` causal language models as students or teachers (the optional ``hf`` extra).

``pip install "lightning-kd[hf]"``. A model is built from a config (randomly initialised; nothing is
downloaded) or, with ``pretrained``, loaded by name or path (``from_pretrained``; the data's vocabulary must
then be the model's tokenizer's, which the task checks before training).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from lightning_kd.errors import Refusal

__all__ = ["HuggingFaceCausalLM"]


class HuggingFaceCausalLM(nn.Module):
    """Any ``transformers`` causal LM: token ids ``(B, T)`` in, logits ``(B, T, V)`` out.

    Args:
        model_type: The architecture (``"gpt2"``, ``"llama"``, ...; ``transformers.AutoConfig.for_model``).
        config: Its config's settings (sizes); ``vocab_size`` comes from the data (the CLI fills it in).
        pretrained: A model name or folder to load instead (``AutoModelForCausalLM.from_pretrained``).
        vocab_size: The vocabulary's size, for a model built from a config.

    Example:
        >>> import torch
        >>> model = HuggingFaceCausalLM("gpt2", dict(n_embd=16, n_layer=1, n_head=2, n_positions=32), vocab_size=30)
        >>> model(torch.randint(0, 30, (2, 5))).shape
        torch.Size([2, 5, 30])
    """

    def __init__(self, model_type: str = "gpt2", config: dict[str, Any] | None = None, pretrained: str | None = None,
                 vocab_size: int = 10_000) -> None:
        super().__init__()
        try:
            from transformers import AutoConfig, AutoModelForCausalLM
        except ImportError as error:
            raise Refusal('HuggingFaceCausalLM needs transformers: pip install "lightning-kd[hf]"') from error
        if pretrained is not None:
            self.model = AutoModelForCausalLM.from_pretrained(pretrained)
        else:
            # no special tokens of a tokenizer this vocabulary does not have
            settings = {"bos_token_id": None, "eos_token_id": None, "pad_token_id": None, **(config or {}),
                        "vocab_size": vocab_size}
            try:
                model_config = AutoConfig.for_model(model_type, **settings)
            except ValueError as error:
                raise Refusal(f"transformers knows no model type {model_type!r}: {error}") from error
            self.model = AutoModelForCausalLM.from_config(model_config)
        self.num_classes = self.vocab_size = int(self.model.config.vocab_size)

    def forward(self, tokens: Tensor) -> Tensor:
        if tokens.ndim != 2 or tokens.is_floating_point():
            raise Refusal(f"a language model takes token ids (B, T) of an integer type, got {tuple(tokens.shape)} "
                          f"{tokens.dtype}")
        return self.model(input_ids=tokens, use_cache=False).logits
