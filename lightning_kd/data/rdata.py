"""Read the data of an installed R package without R: its lazy-load database (``data/Rdata.rdx`` + ``Rdata.rdb``).

An R package's data sets are stored as a lazy-load database: ``Rdata.rdx``, a gzip-compressed serialization
of an index (``variables``: each data set's name and its ``(offset, length)`` in the ``.rdb`` file), and
``Rdata.rdb``, blocks of a 4-byte big-endian length followed by a compressed stream (zlib; bzip2 or
xz after a type byte), each the R XDR serialization of one object. This reader understands what data
sets are made of: vectors (logical, integer, double, character, lists), pairlists, attributes (names),
symbols and references, and R >= 3.5's compact (ALTREP) sequences and wrappers. Names are kept:
a character vector comes back as a ``list[str | None]`` (``None`` for ``NA``), a named list as a
``dict``.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import struct
import zlib
from pathlib import Path
from typing import Any

from lightning_kd.errors import Refusal

__all__ = ["read_lazy_load_database", "unserialize"]

# R's SEXP types and special markers (R's serialize.c)
NILSXP, SYMSXP, LISTSXP, CLOSXP, ENVSXP, PROMSXP, LANGSXP = 0, 1, 2, 3, 4, 5, 6
SPECIALSXP, BUILTINSXP, CHARSXP, LGLSXP, INTSXP, REALSXP, CPLXSXP, STRSXP = 7, 8, 9, 10, 13, 14, 15, 16
DOTSXP, VECSXP, EXPRSXP, RAWSXP = 17, 19, 20, 24
ALTREP_SXP, ATTRLISTSXP, ATTRLANGSXP, BASEENV_SXP, EMPTYENV_SXP = 238, 239, 240, 241, 242
PERSISTSXP, PACKAGESXP, NAMESPACESXP, BASENAMESPACE_SXP, MISSINGARG_SXP = 247, 248, 249, 250, 251
UNBOUNDVALUE_SXP, GLOBALENV_SXP, NILVALUE_SXP, REFSXP = 252, 253, 254, 255
_NA_INTEGER = -(2**31)
_PAIRLISTS = {LISTSXP, LANGSXP, CLOSXP, PROMSXP, DOTSXP, ATTRLISTSXP, ATTRLANGSXP}
_SINGLETONS = {NILVALUE_SXP, EMPTYENV_SXP, BASEENV_SXP, GLOBALENV_SXP, UNBOUNDVALUE_SXP, MISSINGARG_SXP,
               BASENAMESPACE_SXP}


class Symbol(str):
    """An R symbol (a name), told apart from a string."""


def decompress_block(block: bytes) -> bytes:
    """One block of a lazy-load database: a 4-byte big-endian length, then the compressed serialization.

    Example:
        >>> import zlib
        >>> decompress_block(len(b"data").to_bytes(4, "big") + zlib.compress(b"data"))
        b'data'
    """
    if len(block) < 5:
        raise Refusal(f"an R lazy-load block of {len(block)} bytes is too short to hold anything")
    length = int.from_bytes(block[:4], "big")
    body = block[4:]
    if body[:1] in (b"Z", b"2", b"X", b"0") and body[1:2] != b"\x9c":  # R >= 2.10's typed blocks
        kind, body = body[:1], body[1:]
        data = {b"Z": zlib.decompress, b"2": bz2.decompress, b"X": lzma.decompress, b"0": bytes}[kind](body)
    else:
        data = zlib.decompress(body)
    if len(data) != length:
        raise Refusal(f"an R lazy-load block says {length} bytes but holds {len(data)}: the file is damaged")
    return data


class _Reader:
    """R's XDR (big-endian, binary) unserialization of one object."""

    def __init__(self, data: bytes) -> None:
        self.data, self.position, self.references = data, 0, []

    def take(self, size: int) -> bytes:
        chunk = self.data[self.position : self.position + size]
        if len(chunk) != size:
            raise Refusal("an R serialization ends in the middle of an object: the file is damaged or truncated")
        self.position += size
        return chunk

    def integer(self) -> int:
        return struct.unpack(">i", self.take(4))[0]

    def header(self) -> None:
        if self.take(2) != b"X\n":
            raise Refusal("not an R XDR serialization (R's binary format 'X'); ASCII and native ones are not read")
        version = self.integer()
        self.integer(), self.integer()  # the writer's R version, the oldest R that reads it
        if version == 3:
            self.take(self.integer())  # the native encoding's name
        elif version != 2:
            raise Refusal(f"R serialization version {version} is not known (2 and 3 are)")

    def item(self) -> Any:
        flags = self.integer()
        kind, has_attributes, has_tag = flags & 0xFF, bool(flags & (1 << 9)), bool(flags & (1 << 10))
        if kind in _SINGLETONS:
            return None
        if kind == REFSXP:
            index = flags >> 8 or self.integer()
            return self.references[index - 1]
        if kind == SYMSXP:
            symbol = Symbol(self.item() or "")
            self.references.append(symbol)
            return symbol
        if kind in (PACKAGESXP, NAMESPACESXP, PERSISTSXP):
            self.integer()  # an always-zero int before the STRSXP of names
            names = self._strings(self.integer())
            self.references.append(names)
            return names
        if kind == ENVSXP:
            raise Refusal("this R object holds an environment, which this reader does not rebuild")
        if kind in _PAIRLISTS:
            return self._pairlist(kind, has_attributes, has_tag)
        if kind == ALTREP_SXP:
            return self._altrep()
        if kind == CHARSXP:
            return self._string()
        value = self._vector(kind)
        if has_attributes:
            value = _with_attributes(value, self._attributes())
        return value

    def _string(self) -> str | None:
        length = self.integer()
        return None if length == -1 else self.take(length).decode("utf-8", errors="replace")

    def _strings(self, count: int) -> list[str | None]:
        strings = []
        for _ in range(count):
            self.integer()  # each element's CHARSXP flags (encoding bits)
            strings.append(self._string())
        return strings

    def _vector(self, kind: int) -> Any:
        if kind in (SPECIALSXP, BUILTINSXP):
            return self.take(self.integer()).decode()
        length = self.integer()
        if length == -1:  # long vectors: two ints
            length = (self.integer() << 32) + self.integer()
        if kind in (LGLSXP, INTSXP):
            values = struct.unpack(f">{length}i", self.take(4 * length))
            return [None if v == _NA_INTEGER else (bool(v) if kind == LGLSXP else v) for v in values]
        if kind == REALSXP:
            return list(struct.unpack(f">{length}d", self.take(8 * length)))
        if kind == CPLXSXP:
            values = struct.unpack(f">{2 * length}d", self.take(16 * length))
            return [complex(values[i], values[i + 1]) for i in range(0, 2 * length, 2)]
        if kind == STRSXP:
            return self._strings(length)
        if kind in (VECSXP, EXPRSXP):
            return [self.item() for _ in range(length)]
        if kind == RAWSXP:
            return self.take(length)
        raise Refusal(f"R object type {kind} is not one this reader knows (vectors, lists and pairlists are)")

    def _pairlist(self, kind: int, has_attributes: bool, has_tag: bool) -> dict[str, Any] | list[Any]:
        entries: list[tuple[str | None, Any]] = []
        while True:
            if has_attributes:
                self._attributes()
            tag = self.item() if has_tag else None
            entries.append((tag, self.item()))
            flags = self.integer()  # the CDR: another cell of the list, or its end
            kind = flags & 0xFF
            if kind not in _PAIRLISTS:
                self.position -= 4
                self.item()  # R_NilValue, almost always
                break
            has_attributes, has_tag = bool(flags & (1 << 9)), bool(flags & (1 << 10))
        if all(tag is not None for tag, _ in entries):
            return {str(tag): value for tag, value in entries}
        return [value for _, value in entries]

    def _attributes(self) -> dict[str, Any]:
        attributes = self.item()
        return attributes if isinstance(attributes, dict) else {}

    def _altrep(self) -> Any:
        info, state, attributes = self.item(), self.item(), self.item()
        name = str(info[0]) if isinstance(info, list) and info else ""
        if name in ("compact_intseq", "compact_realseq"):
            count, start, step = state
            value = [start + step * i for i in range(int(count))]
            value = [int(v) for v in value] if name == "compact_intseq" else value
        elif name.startswith("wrap_") or name == "deferred_string":
            value = state[0] if isinstance(state, list) else state
        else:
            raise Refusal(f"the compact R representation {name!r} is not one this reader knows")
        return _with_attributes(value, attributes if isinstance(attributes, dict) else {})


def _with_attributes(value: Any, attributes: dict[str, Any]) -> Any:
    names = attributes.get("names")
    if isinstance(value, list) and isinstance(names, list) and len(names) == len(value):
        return dict(zip([str(n) for n in names], value, strict=True))
    return value


def unserialize(data: bytes) -> Any:
    """The object of one R XDR serialization (``serialize(x, NULL)``'s bytes, or a decompressed block).

    Example:
        >>> import struct
        >>> strsxp = struct.pack(">iii", 16, 1, 0x40009) + struct.pack(">i", 2) + b"hi"
        >>> unserialize(b"X\\n" + struct.pack(">iii", 2, 0x40000, 0x20300) + strsxp)
        ['hi']
    """
    reader = _Reader(data)
    reader.header()
    return reader.item()


def read_lazy_load_database(stem: Path | str) -> dict[str, Any]:
    """Every object of an R lazy-load database (``<stem>.rdx`` and ``<stem>.rdb``), by name.

    Args:
        stem: The database's path without its suffix, e.g. ``.../janeaustenr/data/Rdata``.

    Raises:
        MissingFileRefusal: Either file is missing.
    """
    from lightning_kd.errors import MissingFileRefusal

    stem = Path(stem)
    index_path, data_path = stem.with_suffix(".rdx"), stem.with_suffix(".rdb")
    for path in (index_path, data_path):
        if not path.is_file():
            raise MissingFileRefusal(f"no R lazy-load database file {path}")
    raw_index = index_path.read_bytes()
    # the index is saved as an .rds file (gzip, as R's saveRDS writes it), or, by older R, as one block
    index = unserialize(gzip.decompress(raw_index) if raw_index[:2] == b"\x1f\x8b" else decompress_block(raw_index))
    if not isinstance(index, dict) or not isinstance(index.get("variables"), dict):
        raise Refusal(f"{index_path} is not a lazy-load index (no 'variables' entry)")
    blob = data_path.read_bytes()
    objects = {}
    for name, (offset, length) in index["variables"].items():
        objects[name] = unserialize(decompress_block(blob[int(offset) : int(offset) + int(length)]))
    return objects
