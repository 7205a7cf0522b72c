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
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_kd.errors import Refusal

__all__ = [
    "CHAR_CNN_PRESETS",
    "LSTM_PRESETS",
    "CarriedState",
    "CharCNNLSTM",
    "Highway",
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



CHAR_CNN_PRESETS: dict[str, dict[str, Any]] = {
    "small": dict(widths=(1, 2, 3, 4, 5, 6), filters_per_width=25, max_filters=None, highway_layers=1,
                  hidden_size=300, dropout=0.5),
    "large": dict(widths=(1, 2, 3, 4, 5, 6, 7), filters_per_width=50, max_filters=200, highway_layers=2,
                  hidden_size=650, dropout=0.5),
}
"""Kim et al. (2016)'s small and large character-aware models (``large`` is the Born-Again paper's "ConvLSTM",
about 19M parameters on Penn Treebank)."""


class Highway(nn.Module):
    """``t * relu(W_h x) + (1 - t) * x`` with the gate ``t = sigmoid(W_t x + b_t)``, ``b_t`` starting at -2."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.transform, self.gate = nn.Linear(size, size), nn.Linear(size, size)
        nn.init.constant_(self.gate.bias, -2.0)

    def forward(self, x: Tensor) -> Tensor:
        gate = torch.sigmoid(self.gate(x))
        return gate * torch.relu(self.transform(x)) + (1 - gate) * x


class CharCNNLSTM(CarriedState):
    """The character-aware language model of Kim et al. (2016): words read from their characters.

    Each word's characters ``(B, T, L)`` (ids from the data module with ``characters=True``; 0 pads) are
    embedded (15 dimensions), convolved with filters of several widths, max-pooled over the word and passed
    through tanh and highway layers; a 2-layer LSTM then predicts the next **word** (logits ``(B, T, V)``).
    Carries its state across batches like :class:`LSTMLanguageModel`.

    Args:
        vocab_size: Words in the vocabulary (what is predicted).
        char_vocab_size: Characters in the character vocabulary (the CLI fills both in from the data).
        preset: ``"small"`` or ``"large"`` (:data:`CHAR_CNN_PRESETS`; ``large`` is the paper's ConvLSTM).
        char_embedding_size: Character embedding width (15 in the paper).
        num_layers: LSTM layers (2).
        init_range: Weights drawn from ``[-init_range, init_range]`` (0.05 in the paper).
        dropout: Dropout before and after the LSTM (default: the preset's 0.5).
        carry_state: Carry the hidden state across batches of a stream.

    Example:
        >>> model = CharCNNLSTM(vocab_size=40, char_vocab_size=30, preset="small")
        >>> model(torch.randint(1, 30, (2, 5, 9))).shape
        torch.Size([2, 5, 40])
    """

    def __init__(self, vocab_size: int = 10_000, char_vocab_size: int = 51, preset: str = "large",
                 char_embedding_size: int = 15, num_layers: int = 2, init_range: float = 0.05,
                 dropout: float | None = None, carry_state: bool = True) -> None:
        super().__init__()
        if preset not in CHAR_CNN_PRESETS:
            raise Refusal(f"character-aware preset must be one of {', '.join(CHAR_CNN_PRESETS)}, got {preset!r}")
        settings = {**CHAR_CNN_PRESETS[preset], **({} if dropout is None else {"dropout": dropout})}
        self.num_classes = self.vocab_size = vocab_size
        self.carry_state, self.init_range = carry_state, init_range
        self.characters = nn.Embedding(char_vocab_size, char_embedding_size, padding_idx=0)
        counts = [settings["filters_per_width"] * w if settings["max_filters"] is None
                  else min(settings["max_filters"], settings["filters_per_width"] * w) for w in settings["widths"]]
        self.convolutions = nn.ModuleList(nn.Conv1d(char_embedding_size, count, width)
                                          for width, count in zip(settings["widths"], counts, strict=True))
        self.min_word_length = max(settings["widths"])
        width = sum(counts)
        self.highways = nn.Sequential(*(Highway(width) for _ in range(settings["highway_layers"])))
        self.drop = nn.Dropout(settings["dropout"])
        self.lstm = nn.LSTM(width, settings["hidden_size"], num_layers, batch_first=True,
                            dropout=settings["dropout"] if num_layers > 1 else 0.0)
        self.decoder = nn.Linear(settings["hidden_size"], vocab_size)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform ``[-init_range, init_range]`` weights; the highway gates' bias at -2 (carry at first)."""
        for parameter in self.parameters():
            nn.init.uniform_(parameter, -self.init_range, self.init_range)
        for highway in self.highways:
            nn.init.constant_(highway.gate.bias, -2.0)

    def words(self, characters: Tensor) -> Tensor:
        """``(B, T, L)`` character ids to ``(B, T, F)`` word vectors (convolutions, max over the word, highways)."""
        batch, steps, length = characters.shape
        if length < self.min_word_length:  # the widest filter needs that many characters
            characters = F.pad(characters, (0, self.min_word_length - length))
        embedded = self.characters(characters.reshape(batch * steps, -1)).transpose(1, 2)  # (B*T, E, L)
        pooled = [torch.tanh(convolution(embedded)).amax(dim=2) for convolution in self.convolutions]
        return self.highways(torch.cat(pooled, dim=1)).view(batch, steps, -1)

    def forward(self, characters: Tensor) -> Tensor:
        if characters.ndim != 3 or characters.is_floating_point():
            raise Refusal(f"CharCNNLSTM takes character ids (B, T, L) of an integer type, got "
                          f"{tuple(characters.shape)} {characters.dtype}: use a text data module with characters=True")
        hidden, state = self.lstm(self.drop(self.words(characters)), self.carried(characters.shape[0]))
        self.carry(state)
        return self.decoder(self.drop(hidden))
