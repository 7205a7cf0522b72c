"""The six Jane Austen novels as a Penn-Treebank-style corpus, from the R package ``janeaustenr`` (no R needed).

Debian ships the novels (public domain, from Project Gutenberg; about 730k words, the size of Penn
Treebank) as R data in ``r-cran-janeaustenr``. Fetch the package without installing R::

    apt-get download r-cran-janeaustenr          # the .deb file, into the current folder
    lightning-kd data janeausten --root data/janeausten --source r-cran-janeaustenr_*.deb

How the files are made (:data:`RECIPE`, recorded in ``janeausten.json`` with every file's SHA-256):

* **Chapters.** Each novel's lines, in publication order (Sense and Sensibility, Pride and Prejudice,
  Mansfield Park, Emma, Northanger Abbey, Persuasion), are cut at their ``CHAPTER ...`` headings; the
  front matter before the first chapter, the headings, ``VOLUME ...`` lines and ``THE END``/``FINIS``
  are left out.
* **Split by chapter, 80/10/10.** Counting chapters across the six novels, chapter ``i`` goes to
  validation when ``i % 10 == 8``, to test when ``i % 10 == 9``, else to training: every novel is in
  every split, and no chapter is cut.
* **Tokens.** Lower case; Gutenberg's ``_italics_`` marks dropped; curly quotes made straight;
  punctuation split off as tokens (``--`` is one), words keep inner apostrophes (``don't``,
  ``emma's``), ``mr.``/``mrs.``-style abbreviations keep their dot, and numbers become ``N`` (as in PTB).
* **Sentences.** Paragraphs (lines between blank lines) are joined and cut after ``.``, ``!`` or ``?``
  (keeping one closing quote with its sentence): one sentence per line, as PTB. Rule-based, so
  approximate.
* **Vocabulary.** The 9,998 most frequent training tokens (ties by first appearance) are kept; any other
  token, in any split, becomes ``<unk>``. With the ``<eos>`` a reader appends to each line, that is a
  10,000-word vocabulary, as Mikolov's PTB.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

from lightning_kd.data.rdata import read_lazy_load_database
from lightning_kd.errors import MissingFileRefusal, Refusal

__all__ = ["NOVELS", "RECIPE", "prepare_jane_austen", "sentences_of", "split_chapters", "tokenize"]

NOVELS = ("sensesensibility", "prideprejudice", "mansfieldpark", "emma", "northangerabbey", "persuasion")
"""The novels' names in ``janeaustenr``, in publication order (the order of the corpus)."""
RECIPE = "janeausten-1"
"""The name of the rules above; a change to them gets a new name (and new checksums)."""
UNKNOWN, VOCABULARY_WORDS = "<unk>", 9998
PREPARE_COMMAND = "lightning-kd data janeausten --root {root}"
"""The command that writes the corpus files (what a missing file's refusal names)."""

_CHAPTER = re.compile(r"^\s*chapter\s+([ivxlc]+|\d+)\b", re.IGNORECASE)
_SKIPPED = re.compile(r"^\s*(volume\s+[ivx]+|the\s+end|finis)\s*\.?\s*$", re.IGNORECASE)
_ABBREVIATIONS = "mr|mrs|messrs|dr|st|esq|col|capt|rev|gen|lt"
_TOKEN = re.compile(rf"(?:{_ABBREVIATIONS})\.(?![a-z])|[a-z]+(?:'[a-z]+)*|\d+(?:[.,:]\d+)*|--|[^\sa-z\d]")
_QUOTES = str.maketrans({"\u201c": '"', "\u201d": '"', "\u2018": "'", "\u2019": "'", "_": ""})
_SPLITS = ("train", "valid", "test")


def tokenize(text: str) -> list[str]:
    """Lower-cased tokens of ``text``, punctuation split off, numbers as ``N``.

    Example:
        >>> tokenize("\u201cMr. Knightley's _two_ pounds--in 1814!\u201d")
        ['"', 'mr.', "knightley's", 'two', 'pounds', '--', 'in', 'N', '!', '"']
    """
    tokens = _TOKEN.findall(text.translate(_QUOTES).lower())
    return ["N" if token[0].isdigit() else token for token in tokens]


def split_chapters(lines: Iterable[str]) -> list[list[str]]:
    """A novel's chapters (lines of text), without front matter, headings, volume lines or ``THE END``.

    Example:
        >>> split_chapters(["EMMA", "CHAPTER I", "", "Emma was.", "VOLUME II", "CHAPTER II", "She did."])
        [['', 'Emma was.'], ['She did.']]
    """
    chapters: list[list[str]] = []
    for line in lines:
        line = line or ""  # NA lines
        if _CHAPTER.match(line):
            chapters.append([])
        elif chapters and not _SKIPPED.match(line):
            chapters[-1].append(line)
    return chapters


def sentences_of(chapter: Iterable[str]) -> Iterator[list[str]]:
    """The sentences of a chapter's lines, tokenized: paragraphs joined, cut after ``.``, ``!`` or ``?``.

    Example:
        >>> list(sentences_of(['"Is it? Yes." Mr. Elton', "smiled.", "", "No"]))
        [['"', 'is', 'it', '?'], ['yes', '.', '"'], ['mr.', 'elton', 'smiled', '.'], ['no']]
    """
    paragraph: list[str] = []
    for line in [*chapter, ""]:
        if line.strip():
            paragraph.append(line)
            continue
        sentence: list[str] = []
        tokens = tokenize(" ".join(paragraph))
        for index, token in enumerate(tokens):
            if not sentence and token in ('"', "'") and index > 0 and tokens[index - 1] in ".!?":
                continue  # a closing quote, already kept with the sentence before
            sentence.append(token)
            if token in (".", "!", "?"):
                if index + 1 < len(tokens) and tokens[index + 1] in ('"', "'"):
                    sentence.append(tokens[index + 1])
                yield sentence
                sentence = []
        if sentence:
            yield sentence
        paragraph = []


def _split_of(chapter_index: int) -> str:
    return {8: "valid", 9: "test"}.get(chapter_index % 10, "train")


def _vocabulary(sentences: Iterable[list[str]]) -> set[str]:
    counts: Counter[str] = Counter()
    first_seen: dict[str, int] = {}
    for sentence in sentences:
        for token in sentence:
            counts[token] += 1
            first_seen.setdefault(token, len(first_seen))
    ranked = sorted(counts, key=lambda token: (-counts[token], first_seen[token]))
    return set(ranked[:VOCABULARY_WORDS])


def find_source(source: Path | None) -> Path:
    """The ``Rdata`` stem of janeaustenr's data: in ``source`` (a folder, or the ``.deb`` file), or where Debian
    installs it, or in a ``r-cran-janeaustenr_*.deb`` of the current folder."""
    candidates = [source] if source is not None else [Path("/usr/lib/R/site-library/janeaustenr"),
                                                     *sorted(Path().glob("r-cran-janeaustenr_*.deb"))]
    for candidate in candidates:
        if candidate.is_file() and candidate.suffix == ".deb":
            return _extract_from_deb(candidate)
        if candidate.is_dir():
            found = sorted(candidate.rglob("Rdata.rdx"))
            if found:
                return found[0].with_suffix("")
    raise MissingFileRefusal(
        f"janeaustenr's data not found {'in ' + str(source) if source else 'here'}: run "
        "`apt-get download r-cran-janeaustenr` (not `apt-get install`, which pulls in R) and pass the .deb as --source")


def _extract_from_deb(deb: Path) -> Path:
    """Unpack ``janeaustenr/data/Rdata.rd[bx]`` from a Debian package (an ar archive holding ``data.tar.*``)."""
    archive = deb.read_bytes()
    if archive[:8] != b"!<arch>\n":
        raise Refusal(f"{deb} is not a Debian package (no ar archive header)")
    position = 8
    while position + 60 <= len(archive):
        name, size = archive[position : position + 16].decode().strip(), int(archive[position + 48 : position + 58])
        body = archive[position + 60 : position + 60 + size]
        position += 60 + size + size % 2
        if not name.startswith("data.tar"):
            continue
        folder = Path(tempfile.mkdtemp(prefix="janeaustenr-"))
        with tarfile.open(fileobj=io.BytesIO(body), mode="r:*") as tar:
            for member in tar.getmembers():
                if member.isfile() and re.search(r"janeaustenr/data/Rdata\.rd[bx]$", member.name):
                    extracted = tar.extractfile(member)
                    assert extracted is not None
                    (folder / Path(member.name).name).write_bytes(extracted.read())
        if (folder / "Rdata.rdx").is_file() and (folder / "Rdata.rdb").is_file():
            return folder / "Rdata"
        break
    raise Refusal(f"{deb} holds no janeaustenr/data/Rdata.rdx and .rdb: is it r-cran-janeaustenr?")


def prepare_jane_austen(root: Path | str, source: Path | str | None = None) -> dict:
    """Write ``train.txt``, ``valid.txt``, ``test.txt`` and ``janeausten.json`` under ``root`` (see the module).

    Files already there are replaced only if they are this recipe's output (their manifest says so);
    anything else is refused, never overwritten.

    Returns:
        The manifest: the recipe, the source's SHA-256, per split its sentences, tokens (with ``<eos>``)
        and the file's SHA-256, and the vocabulary size.
    """
    root = Path(root)
    manifest_path = root / "janeausten.json"
    existing = [root / f"{split}.txt" for split in _SPLITS if (root / f"{split}.txt").exists()]
    if existing and not manifest_path.is_file():
        raise Refusal(f"{root} already holds {existing[0].name}, not written by this command: choose another --root")
    stem = find_source(None if source is None else Path(source))
    novels = read_lazy_load_database(stem)
    missing = [name for name in NOVELS if name not in novels]
    if missing:
        raise Refusal(f"{stem}.rdx holds no {', '.join(missing)}: is it janeaustenr's data?")
    splits: dict[str, list[list[str]]] = {split: [] for split in _SPLITS}
    chapter_index = 0
    for name in NOVELS:
        for chapter in split_chapters(novels[name]):
            splits[_split_of(chapter_index)].extend(sentences_of(chapter))
            chapter_index += 1
    kept = _vocabulary(splits["train"])
    root.mkdir(parents=True, exist_ok=True)
    manifest: dict = {"recipe": RECIPE, "source_sha256": _sha256((stem.with_suffix(".rdb")).read_bytes()),
                      "chapters": chapter_index, "vocabulary": len(kept | {UNKNOWN}) + 1, "splits": {}}
    for split, sentences in splits.items():
        text = "".join(" ".join(t if t in kept else UNKNOWN for t in s) + "\n" for s in sentences).encode()
        (root / f"{split}.txt").write_bytes(text)
        manifest["splits"][split] = {"sentences": len(sentences), "tokens": sum(len(s) + 1 for s in sentences),
                                     "sha256": _sha256(text)}
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
