"""Language models: token ids ``(B, T)`` in, next-token logits ``(B, T, V)`` out.

A recurrent model can carry its hidden state from one batch to the next (truncated backpropagation
through time, as the standard recipe trains on contiguous streams; see :mod:`lightning_kd.data.text`):
the state is detached between batches and kept per *stream*, so the training stream, a validation run
in the middle of an epoch and a teacher running beside its student never mix. Tasks start each stream
afresh at the start of every epoch and evaluation (:func:`begin_stream`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from lightning_kd.errors import Refusal

__all__ = [
    "LSTM_PRESETS",
    "CarriedState",
    "LSTMLanguageModel",
    "TransformerLanguageModel",
    "begin_stream",
    "parameter_count_of_preset",
]


class CarriedState(nn.Module):
    """A network that carries a state across batches, one per stream (``"train"``, ``"val"``, ...).

    Subclasses read :meth:`carried` before a forward and hand the new state to :meth:`carry` after it.
    With ``carry_state`` false every batch starts from a fresh state.
    """

    carry_state: bool = True

    def __init__(self) -> None:
        super().__init__()
        self._states: dict[str, Any] = {}
        self._stream = "train"

    def begin_stream(self, stream: str, fresh: bool = True) -> None:
        """Make ``stream`` the current one; ``fresh``: forget what it carried (a new epoch or evaluation)."""
        self._stream = stream
        if fresh:
            self._states.pop(stream, None)

    def carried(self, batch_size: int) -> Any:
        """The current stream's state, or ``None`` (a fresh start) when it carries none for this batch size."""
        state = self._states.get(self._stream) if self.carry_state else None
        return state if state is not None and self.state_batch_size(state) == batch_size else None

    def carry(self, state: Any) -> None:
        """Keep ``state`` for the stream's next batch, cut from this batch's graph (truncated BPTT)."""
        if self.carry_state:
            self._states[self._stream] = _detached(state)

    @staticmethod
    def state_batch_size(state: Any) -> int:
        """The batch size a state was made for (an LSTM's ``(h, c)``: dimension 1)."""
        return int(state[0].shape[1])

    def __getstate__(self) -> dict[str, Any]:
        # pickles and deep copies (a promoted teacher, a checkpointed network) start with no carried state
        return {**super().__getstate__(), "_states": {}}


def begin_stream(module: nn.Module, stream: str, fresh: bool = True) -> None:
    """Call :meth:`CarriedState.begin_stream` on every carried-state network inside ``module``."""
    for inner in module.modules():
        if isinstance(inner, CarriedState):
            inner.begin_stream(stream, fresh)


def _detached(state: Any) -> Any:
    if isinstance(state, Tensor):
        return state.detach()
    return type(state)(_detached(part) for part in state)


LSTM_PRESETS: dict[str, dict[str, Any]] = {
    "small": dict(hidden_size=200, num_layers=2, dropout=0.0, tie_weights=False, init_range=0.1),
    "medium": dict(hidden_size=650, num_layers=2, dropout=0.5, tie_weights=False, init_range=0.05),
    "large": dict(hidden_size=1500, num_layers=2, dropout=0.65, tie_weights=False, init_range=0.04),
    "paper": dict(hidden_size=1500, num_layers=2, dropout=0.65, tie_weights=True, init_range=0.04),
}
"""Zaremba et al. (2014)'s small, medium and large LSTMs, and ``"paper"``: Born-Again's "52M" LSTM, most likely
the large one with tied input and output embeddings (51.0M parameters with a 10k vocabulary)."""


class LSTMLanguageModel(CarriedState):
    """A word- (or character-) level LSTM language model (Zaremba et al. 2014; PyTorch's word_language_model).

    Embedding, dropout, a stacked LSTM (dropout between layers), dropout, a linear decoder; with
    ``tie_weights`` the decoder shares the embedding matrix (Press & Wolf 2017; the embedding then has
    ``hidden_size`` dimensions). Weights are drawn uniformly from ``[-init_range, init_range]``, biases 0
    (Zaremba et al.'s initialisation).

    Args:
        vocab_size: Tokens in the vocabulary (the CLI fills in the data's; 10k, Penn Treebank's, by default).
        preset: ``"small"``, ``"medium"``, ``"large"`` or ``"paper"`` (:data:`LSTM_PRESETS`): the defaults of the
            arguments below; an argument given explicitly wins.
        hidden_size, num_layers, dropout, tie_weights, init_range: See above.
        embedding_size: Embedding width (default: ``hidden_size``; must equal it when tied).
        carry_state: Carry the hidden state across batches of a stream (truncated BPTT).

    Example:
        >>> model = LSTMLanguageModel(vocab_size=50, preset="small")
        >>> model(torch.randint(0, 50, (4, 7))).shape
        torch.Size([4, 7, 50])
    """

    def __init__(self, vocab_size: int = 10_000, preset: str | None = "medium", hidden_size: int | None = None,
                 num_layers: int | None = None, dropout: float | None = None, tie_weights: bool | None = None,
                 init_range: float | None = None, embedding_size: int | None = None,
                 carry_state: bool = True) -> None:
        super().__init__()
        if preset is not None and preset not in LSTM_PRESETS:
            raise Refusal(f"LSTM preset must be one of {', '.join(LSTM_PRESETS)}, got {preset!r}")
        given = dict(hidden_size=hidden_size, num_layers=num_layers, dropout=dropout, tie_weights=tie_weights,
                     init_range=init_range)
        settings = {**LSTM_PRESETS.get(preset or "medium", LSTM_PRESETS["medium"]),
                    **{name: value for name, value in given.items() if value is not None}}
        self.hidden_size, self.num_layers = int(settings["hidden_size"]), int(settings["num_layers"])
        self.dropout, self.tie_weights = float(settings["dropout"]), bool(settings["tie_weights"])
        self.init_range = float(settings["init_range"])
        embedding_size = embedding_size or self.hidden_size
        if vocab_size < 1:
            raise Refusal(f"vocab_size must be >= 1, got {vocab_size}")
        if not 0 <= self.dropout < 1:
            raise Refusal(f"dropout must be in [0, 1), got {self.dropout}")
        if self.tie_weights and embedding_size != self.hidden_size:
            raise Refusal(f"tied weights need embedding_size == hidden_size, got {embedding_size} and "
                          f"{self.hidden_size}")
        self.num_classes = self.vocab_size = vocab_size
        self.carry_state = carry_state
        self.embedding = nn.Embedding(vocab_size, embedding_size)
        self.drop = nn.Dropout(self.dropout)
        self.lstm = nn.LSTM(embedding_size, self.hidden_size, self.num_layers, batch_first=True,
                            dropout=self.dropout if self.num_layers > 1 else 0.0)
        self.decoder = nn.Linear(self.hidden_size, vocab_size)
        if self.tie_weights:
            self.decoder.weight = self.embedding.weight
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform ``[-init_range, init_range]`` weights, zero biases of the decoder."""
        for parameter in self.parameters():
            nn.init.uniform_(parameter, -self.init_range, self.init_range)
        nn.init.zeros_(self.decoder.bias)

    def forward(self, tokens: Tensor) -> Tensor:
        _check_tokens(tokens, self.vocab_size)
        hidden, state = self.lstm(self.drop(self.embedding(tokens)), self.carried(tokens.shape[0]))
        self.carry(state)
        return self.decoder(self.drop(hidden))


class TransformerLanguageModel(nn.Module):
    """A small causal Transformer language model (pre-norm GPT-style blocks, learned positions).

    Each batch is read on its own (no state carried): a position sees the positions before it in its window.

    Args:
        vocab_size: Tokens in the vocabulary (the CLI fills in the data's).
        d_model, num_heads, num_layers, dim_feedforward, dropout: The blocks' sizes.
        max_length: The longest window (the positions learned).
        tie_weights: The decoder shares the embedding matrix.

    Example:
        >>> model = TransformerLanguageModel(vocab_size=30, d_model=16, num_heads=2, num_layers=1)
        >>> model(torch.randint(0, 30, (2, 5))).shape
        torch.Size([2, 5, 30])
    """

    def __init__(self, vocab_size: int = 10_000, d_model: int = 256, num_heads: int = 4, num_layers: int = 4,
                 dim_feedforward: int | None = None, dropout: float = 0.1, max_length: int = 512,
                 tie_weights: bool = True) -> None:
        super().__init__()
        if d_model % num_heads:
            raise Refusal(f"d_model ({d_model}) must be a multiple of num_heads ({num_heads})")
        self.num_classes = self.vocab_size = vocab_size
        self.max_length = max_length
        self.embedding = nn.Embedding(vocab_size, d_model)
        self.positions = nn.Embedding(max_length, d_model)
        block = nn.TransformerEncoderLayer(d_model, num_heads, dim_feedforward or 4 * d_model, dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(block, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.decoder = nn.Linear(d_model, vocab_size)
        if tie_weights:
            self.decoder.weight = self.embedding.weight
        self.drop = nn.Dropout(dropout)
        nn.init.normal_(self.embedding.weight, std=0.02)
        nn.init.normal_(self.positions.weight, std=0.02)

    def forward(self, tokens: Tensor) -> Tensor:
        _check_tokens(tokens, self.vocab_size)
        length = tokens.shape[1]
        if length > self.max_length:
            raise Refusal(f"a window of {length} tokens is longer than max_length={self.max_length}")
        positions = torch.arange(length, device=tokens.device)
        hidden = self.drop(self.embedding(tokens) + self.positions(positions))
        causal = nn.Transformer.generate_square_subsequent_mask(length, device=tokens.device, dtype=hidden.dtype)
        hidden = self.blocks(hidden, mask=causal, is_causal=True)
        return self.decoder(self.norm(hidden))


def _check_tokens(tokens: Tensor, vocab_size: int) -> None:
    if tokens.ndim != 2 or tokens.is_floating_point():
        raise Refusal(f"a language model takes token ids (B, T) of an integer type, got {tuple(tokens.shape)} "
                      f"{tokens.dtype}")


def parameter_count_of_preset(preset: str, vocab_size: int = 10_000) -> int:
    """Parameters of an LSTM preset (shared tied weights counted once).

    Example:
        >>> round(parameter_count_of_preset("paper") / 1e6, 1)
        51.0
    """
    with torch.device("meta"):
        model = LSTMLanguageModel(vocab_size, preset=preset)
    return sum(p.numel() for p in model.parameters())

