"""Text corpora for language models: word or character tokens, batched as contiguous streams (truncated BPTT).

The standard word-language-model recipe (Zaremba et al. 2014; PyTorch's ``word_language_model``): each
split is read as one token sequence (each line's tokens, then ``<eos>``), cut into ``B`` equal
contiguous streams (the tail that does not fill a stream is dropped), and served ``bptt`` steps at a
time: batch ``i`` holds positions ``[i * bptt, (i + 1) * bptt)`` of every stream as ``input`` ``(B, T)``
and the next token of each as ``target``. A stream continues from one batch to the next, so a
network may carry its hidden state across batches (see :mod:`lightning_kd.models.language`); nothing
is shuffled, so every epoch, process and resumed run sees the same batches.

Under DDP the ``B`` streams of each process are its own slice of ``B * world_size`` streams of the
split: two processes of ``batch_size=10`` see exactly the streams one process of ``batch_size=20``
does, and every process has the same number of batches.

The vocabulary is built from the training split alone, in order of first appearance; a validation or
test token outside it becomes ``<unk>`` (refused when the vocabulary has none: a silent remapping
would change the task).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

import torch
from pytorch_lightning import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

from lightning_kd.data.base import Batch
from lightning_kd.errors import MissingFileRefusal, Refusal

__all__ = [
    "EOS",
    "BPTTBatches",
    "JaneAustenDataModule",
    "Spellings",
    "TextDataModule",
    "Vocabulary",
    "batchify",
    "read_tokens",
]

EOS, UNK = "<eos>", "<unk>"
Level = Literal["word", "char"]
Layout = Literal["ptb", "wikitext"]
SPLITS = ("train", "valid", "test")
_FILE_NAMES: dict[str, tuple[str, ...]] = {
    "ptb": ("{split}.txt", "ptb.{split}.txt"),
    "wikitext": ("wiki.{split}.tokens",),
}


def read_tokens(path: Path, level: Level = "word") -> list[str]:
    """A file's tokens: per line, its words (``level="word"``, split on white space) or its characters
    (``"char"``, spaces included), then ``<eos>``.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "train.txt"
        >>> _ = path.write_text("the cat\\n\\nsat\\n")
        >>> read_tokens(path), read_tokens(path, "char")[:4]
        (['the', 'cat', '<eos>', '<eos>', 'sat', '<eos>'], ['t', 'h', 'e', ' '])
    """
    tokens: list[str] = []
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            tokens += (line.split() if level == "word" else list(line.rstrip("\n"))) + [EOS]
    return tokens


class Vocabulary:
    """Tokens and their ids, in order of first appearance in the training tokens.

    Example:
        >>> vocabulary = Vocabulary(["a", "b", "a", "<eos>"])
        >>> len(vocabulary), vocabulary.encode(["b", "a"]).tolist()
        (3, [1, 0])
    """

    def __init__(self, training_tokens: list[str]) -> None:
        self.tokens = list(dict.fromkeys(training_tokens))
        self.ids = {token: index for index, token in enumerate(self.tokens)}

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, tokens: list[str], source: str = "the text") -> Tensor:
        """The tokens' ids; an unknown token becomes ``<unk>``, and is refused if there is none."""
        unknown = self.ids.get(UNK)
        ids = [self.ids.get(token, unknown) for token in tokens]
        if unknown is None and None in ids:
            missing = tokens[ids.index(None)]
            raise Refusal(f"{source} holds {missing!r}, which the training split does not, and the vocabulary has no "
                          f"{UNK} to stand for it: use files whose rare words are {UNK} (as Penn Treebank's)")
        return torch.tensor(ids, dtype=torch.long)


def batchify(ids: Tensor, streams: int) -> Tensor:
    """``(steps, streams)``: ``ids`` cut into ``streams`` contiguous columns, the remainder dropped.

    Example:
        >>> batchify(torch.arange(7), 2).T.tolist()
        [[0, 1, 2], [3, 4, 5]]
    """
    steps = len(ids) // streams
    return ids[: steps * streams].view(streams, steps).T.contiguous()


class Spellings:
    """Each word of a vocabulary as character ids, for character-aware models (Kim et al. 2016's conventions).

    A word is ``{`` + its characters + ``}``, padded with 0 to the longest word (cut at ``max_length``);
    ``<unk>`` is spelled ``|`` and ``<eos>`` ``+``, as in Kim et al.'s code. Characters are numbered from 1
    in order of first appearance.

    Example:
        >>> spellings = Spellings(["ab", "<eos>", "b"])
        >>> spellings.table.tolist(), spellings.size
        ([[1, 2, 3, 4], [1, 5, 4, 0], [1, 3, 4, 0]], 6)
    """

    def __init__(self, words: list[str], max_length: int = 65) -> None:
        spelled = [["{", *({UNK: "|", EOS: "+"}.get(word) or word), "}"][:max_length] for word in words]
        characters = list(dict.fromkeys(c for word in spelled for c in word))
        self.ids = {c: index + 1 for index, c in enumerate(characters)}  # 0 pads
        self.size = len(characters) + 1
        length = max(len(word) for word in spelled)
        self.table = torch.zeros(len(words), length, dtype=torch.long)
        for row, word in enumerate(spelled):
            self.table[row, : len(word)] = torch.tensor([self.ids[c] for c in word])


class BPTTBatches(IterableDataset):
    """The batches of one split for one process: ``bptt`` steps of its streams at a time, in order.

    Each batch is ``{"input": (B, T), "target": (B, T), "index": (B,)}``; ``index`` names the batch's
    window of each stream (``chunk * streams + stream``), stable across epochs, ranks and runs.

    Args:
        stream: ``(steps, total_streams)`` from :func:`batchify`.
        bptt: Steps per batch (the last batch of a split may be shorter).
        columns: Which of the streams this process serves.
        spellings: ``(V, L)`` character ids of each word: inputs are then ``(B, T, L)`` (see :class:`Spellings`).
    """

    def __init__(self, stream: Tensor, bptt: int, columns: slice | None = None,
                 spellings: Tensor | None = None) -> None:
        self.stream, self.bptt, self.spellings = stream, bptt, spellings
        self.columns = columns or slice(0, stream.shape[1])

    def __len__(self) -> int:
        return max(0, -(-(self.stream.shape[0] - 1) // self.bptt))

    def __iter__(self) -> Iterator[Batch]:
        total = self.stream.shape[1]
        streams = torch.arange(total)[self.columns]
        for chunk, start in enumerate(range(0, self.stream.shape[0] - 1, self.bptt)):
            length = min(self.bptt, self.stream.shape[0] - 1 - start)
            window = self.stream[start : start + length + 1, self.columns].T
            inputs = window[:, :-1] if self.spellings is None else self.spellings[window[:, :-1]]  # (B, T[, L])
            yield {"input": inputs.contiguous(), "target": window[:, 1:].contiguous(), "index": chunk * total + streams}


@functools.cache
def _read_split(path: Path, level: str, stamp: tuple[int, int]) -> tuple[str, ...]:
    """A file's tokens, read once per process and version of the file (``stamp``: its size and mtime)."""
    return tuple(read_tokens(path, level))  # type: ignore[arg-type]


class TextDataModule(LightningDataModule):
    """A word- or character-level corpus in train/valid/test files, batched for truncated BPTT (see the module).

    Args:
        root: Folder of the corpus files.
        layout: ``"ptb"``: ``train.txt``, ``valid.txt``, ``test.txt`` (or Mikolov's ``ptb.train.txt``, ...), one
            sentence per line; ``"wikitext"``: WikiText-2's ``wiki.train.tokens``, ``wiki.valid.tokens``,
            ``wiki.test.tokens`` (headings and blank lines are lines too, as the standard recipe reads them).
        level: ``"word"`` tokens (split on white space) or ``"char"`` (every character of a line, spaces too;
            then bits per character are reported as well).
        batch_size: Training streams per process.
        eval_batch_size: Validation and test streams per process (10 in the standard recipe).
        bptt: Steps per batch (35 in Zaremba et al.'s recipe).
        characters: Serve each input word as its characters ``(B, T, L)`` (:class:`Spellings`), for
            character-aware models (:class:`~lightning_kd.models.CharCNNLSTM`); targets stay words.
    """

    prepare_command: ClassVar[str | None] = None
    """A command that writes this corpus's files, named when they are missing (``{root}`` filled in)."""
    input_dtype: ClassVar[torch.dtype] = torch.long

    def __init__(self, root: str | Path = "data/ptb", layout: Layout = "ptb", level: Level = "word",
                 batch_size: int = 20, eval_batch_size: int = 10, bptt: int = 35, characters: bool = False) -> None:
        super().__init__()
        _check_settings(layout, level, batch_size, eval_batch_size, bptt)
        if characters and level == "char":
            raise Refusal("characters=True spells each word in characters; with level='char' the tokens already are")
        self.save_hyperparameters()
        self.root, self.layout, self.level = Path(root), layout, level
        self.batch_size, self.eval_batch_size, self.bptt = batch_size, eval_batch_size, bptt
        self.characters = characters
        self.vocabulary: Vocabulary | None = None
        self._spellings: Spellings | None = None
        self.splits: dict[str, Tensor] = {}

    @property
    def unit(self) -> str:
        """What a token is (``"word"`` or ``"char"``): what the perplexity is per."""
        return self.level

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.bptt,) if not self.characters else (self.bptt, self.spellings().table.shape[1])

    def spellings(self) -> Spellings:
        """The vocabulary's words as characters (``characters=True``)."""
        if self._spellings is None:
            self._spellings = Spellings(self.read_vocabulary().tokens)
        return self._spellings

    @property
    def num_classes(self) -> int:
        """The vocabulary's size (every token a model can predict)."""
        return len(self.read_vocabulary())

    @classmethod
    def data_facts(cls, **init_args: Any) -> dict[str, Any]:
        """The vocabulary's size (as ``num_classes`` and ``vocab_size``) and ``input_shape`` ``(bptt,)``, read from
        the training file (the CLI gives them to the networks)."""
        module = cls(**init_args)
        size = len(module.read_vocabulary())
        facts = {"num_classes": size, "vocab_size": size, "input_shape": module.input_shape}
        return facts | ({"char_vocab_size": module.spellings().size} if module.characters else {})

    def split_path(self, split: str) -> Path:
        """The file of ``split``; refused, naming the command that writes it, when missing."""
        for pattern in _FILE_NAMES[self.layout]:
            path = self.root / pattern.format(split=split)
            if path.is_file():
                return path
        names = " or ".join(pattern.format(split=split) for pattern in _FILE_NAMES[self.layout])
        how = (f"prepare it with `{self.prepare_command.format(root=self.root)}`" if self.prepare_command
               else f"point root at a {self.layout} corpus")
        raise MissingFileRefusal(f"no {names} under {self.root}: {how}")

    def tokens(self, split: str) -> tuple[str, ...]:
        """The tokens of ``split`` (``<eos>`` after each line); a split without any is refused."""
        path = self.split_path(split)
        status = path.stat()
        tokens = _read_split(path, self.level, (status.st_size, status.st_mtime_ns))
        if not any(token != EOS for token in tokens):
            empty_lines = " (only empty lines)" if tokens else ""
            raise Refusal(f"{path} holds no tokens{empty_lines}: the {split} split is empty")
        return tokens

    def read_vocabulary(self) -> Vocabulary:
        """The vocabulary of the training split (read once)."""
        if self.vocabulary is None:
            self.vocabulary = Vocabulary(list(self.tokens("train")))
        return self.vocabulary

    def setup(self, stage: str | None = None) -> None:
        vocabulary = self.read_vocabulary()
        for split in SPLITS:
            if split not in self.splits:
                self.splits[split] = vocabulary.encode(list(self.tokens(split)), source=str(self.split_path(split)))

    def _batches(self, split: str, streams: int, whole: bool = False) -> DataLoader:
        if split not in self.splits:
            raise RuntimeError(f"{type(self).__name__}.setup() has not been called")
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        if whole:  # every process's streams, in one loader
            streams, world, rank = streams * world, 1, 0
        stream = batchify(self.splits[split], streams * world)
        if stream.shape[0] < 2:
            raise Refusal(f"the {split} split ({len(self.splits[split])} tokens) is too short for {streams * world} "
                          f"streams of at least 2 tokens: lower the batch size")
        spellings = self.spellings().table if self.characters else None
        batches = BPTTBatches(stream, self.bptt, slice(rank * streams, (rank + 1) * streams), spellings)
        return DataLoader(batches, batch_size=None)

    def train_dataloader(self) -> DataLoader:
        return self._batches("train", self.batch_size)

    def training_windows(self) -> tuple[int, int]:
        """How many windows the training batches name by ``index`` (every process's streams) and the steps of each
        (``bptt``; the last window may be shorter): what a per-position teacher cache holds."""
        if "train" not in self.splits:
            raise RuntimeError(f"{type(self).__name__}.setup() has not been called")
        trainer = self.trainer
        streams = self.batch_size * (trainer.world_size if trainer is not None else 1)
        stream = batchify(self.splits["train"], streams)
        return len(BPTTBatches(stream, self.bptt)) * streams, min(self.bptt, max(stream.shape[0] - 1, 1))

    def val_dataloader(self) -> DataLoader:
        return self._batches("valid", self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._batches("test", self.eval_batch_size)

    def predict_dataloader(self) -> DataLoader:
        return self._batches("test", self.eval_batch_size)

    def evaluation_dataloader(self, split: str) -> DataLoader:
        """The whole ``"val"`` or ``"test"`` split, every process's streams (for scoring outside Lightning's loops,
        as the Born-Again generations table does)."""
        return self._batches({"val": "valid"}.get(split, split), self.eval_batch_size, whole=True)


class JaneAustenDataModule(TextDataModule):
    """The six Jane Austen novels as ``lightning-kd data janeausten`` writes them.

    See :mod:`~lightning_kd.data.janeausten` for how the corpus is made.

    About 718k training tokens, 88k validation, 82k test, a 10k vocabulary: the size of Penn Treebank.
    """

    prepare_command = "lightning-kd data janeausten --root {root}"

    def __init__(self, root: str | Path = "data/janeausten", level: Level = "word", batch_size: int = 20,
                 eval_batch_size: int = 10, bptt: int = 35, characters: bool = False) -> None:
        super().__init__(root, "ptb", level, batch_size, eval_batch_size, bptt, characters)


def _check_settings(layout: str, level: str, batch_size: int, eval_batch_size: int, bptt: int) -> None:
    if layout not in get_args(Layout):
        raise Refusal(f"layout must be one of {', '.join(get_args(Layout))}, got {layout!r}")
    if level not in get_args(Level):
        raise Refusal(f"level must be 'word' or 'char', got {level!r}")
    if bptt < 1:
        raise Refusal(f"bptt must be >= 1 (steps per batch), got {bptt}")
    if batch_size < 1 or eval_batch_size < 1:
        raise Refusal(f"batch_size and eval_batch_size must be >= 1, got {batch_size} and {eval_batch_size}")
