"""What every part of ingest shares: the error a file-level problem stops the stage with
(`IngestError`), the count of what the readers met in the source (`SourceCount`), and the byte-level
tests on untrusted names and content (`escaped`, `undecodable`, `sniff_binary`).

Their own module, so that the walkers, the readers, the validation and the ingest run use them
without importing one another.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TextIO

from reprolab.errors import StageError

# Control bytes that text does not use. Real mail carries a few strays (the corpus has some), so
# only a NUL or a high share of them marks content as binary.
_CONTROL_BYTES = re.compile(rb"[\x00-\x08\x0e-\x1a\x1c-\x1f]")
_BINARY_SHARE = 0.05
_MAGIC = {b"PK\x03\x04": "a zip archive", b"\x1f\x8b": "gzip data", b"%PDF": "a PDF", b"PAR1": "Parquet"}


class IngestError(StageError):
    """A file-level problem: the stage stops with one clear message."""


def sniff_binary(head: bytes) -> str | None:
    for magic, what in _MAGIC.items():
        if head.startswith(magic):
            return what
    head = head[:4096]
    controls = len(_CONTROL_BYTES.findall(head))
    return "binary data" if b"\x00" in head or controls > _BINARY_SHARE * len(head) else None


@dataclass
class SourceCount:
    """What the readers met in the source, counted as they meet it: `rows` entries that become a kept or
    rejected row (files, members, table rows, lines), and entries a format's documented rule skips."""

    rows: int = 0
    skipped: Counter[str] = field(default_factory=Counter)


def escaped(text: str) -> str:
    """`text` safe to write and print: undecodable bytes (kept as surrogates) shown as \\xNN escapes."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate from a JSON escape, not from a byte
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def undecodable(text: str) -> bool:
    try:
        text.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


def bounded_lines(text: TextIO, limit: int) -> Iterator[tuple[int, str | None]]:
    """(line number, line) for each line, None for a line longer than `limit` characters (read past in
    bounded chunks, never held whole). Lines end at \\n, \\r\\n or \\r only: JSON text may hold U+2028."""
    number = 0
    while True:
        line = text.readline(limit + 1)
        if not line:
            return
        number += 1
        if len(line) > limit and not line.endswith(("\n", "\r")):
            while line and not line.endswith(("\n", "\r")):
                line = text.readline(limit)
            yield number, None
            continue
        yield number, line
