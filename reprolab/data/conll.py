"""CoNLL files: one word a line, its tag in the last column, a blank line between sentences.

Columns are separated by any run of tabs or spaces, so CoNLL-2003's POS and chunk columns, or a
tagger's ten feature columns, sit between the word and its tag unread. A `-DOCSTART-` line starts a
document: its sentences share it (`document`; the split keeps a document whole); in a file without
one, none is known. A record is a sentence, counted when read; a line with one column makes its
sentence a reject (`malformed_line`): unlabelled (`reprolab predict`), a sentence may be words alone,
one a line, but not some words tagged and others not. A sentence over `ingest.max_text_bytes` is read
past in bounded pieces and rejected (`text_too_large`), its lines not held. The tags are checked against
`ingest.tag_scheme` and the entity types after the reader, by `sentences.SentenceRules`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from reprolab.data.ingest_shared import IngestError, SourceCount, bounded_lines, escaped
from reprolab.params import IngestParams

DOCSTART = "-DOCSTART-"


def read_conll(path: Path, text: TextIO, p: IngestParams, count: SourceCount, labelled: bool = True) -> Iterator[dict]:
    """One record per sentence of an opened CoNLL file; `labelled=False`: tags optional."""
    document: str | None = None  # the group of the sentences since the last -DOCSTART- line
    documents = sentences = 0
    sentence = _Sentence(path, p.max_text_bytes, labelled)
    for number, line in bounded_lines(text, p.max_text_bytes):
        columns = line.split() if line is not None else None
        ends = columns is not None and (not columns or columns[0] == DOCSTART)  # a blank line, or a document
        if ends and sentence.open:
            count.rows += 1
            sentences += 1
            yield sentence.record(document)
            sentence = _Sentence(path, p.max_text_bytes, labelled)
        if ends and columns:
            documents += 1
            document = f"{path.name}#doc{documents}"
        elif not ends:
            sentence.add(number, line, columns)
    if sentence.open:
        count.rows += 1
        sentences += 1
        yield sentence.record(document)
    if sentences == 0:
        raise IngestError(f"{path}: no sentences (a word and its tag a line, a blank line between sentences)")


class _Sentence:
    """The lines of one sentence, up to the byte limit; past it, only that it was too large."""

    def __init__(self, path: Path, limit: int, labelled: bool = True):
        self.path, self.limit, self.labelled = path, limit, labelled
        self.first_line: int | None = None
        self.tokens: list[str] = []
        self.tags: list[str] = []
        self.tagged = True  # whether the sentence's words come with tags (always, labelled)
        self.size = 0
        self.problem: tuple[str, str] | None = None
        self.raw: list[str] = []

    @property
    def open(self) -> bool:
        return self.first_line is not None

    def add(self, number: int, line: str | None, columns: list[str] | None) -> None:
        if self.first_line is None:
            self.first_line = number
        if self.problem and self.problem[0] == "text_too_large":
            return
        self.size += self.limit + 1 if line is None else len(line.encode("utf-8", "surrogateescape"))
        if self.size > self.limit:
            self.problem = ("text_too_large", f"sentence over ingest.max_text_bytes={self.limit} bytes; not read")
            self.tokens, self.tags, self.raw = [], [], []
            return
        self.raw.append(line)
        if self.problem is not None:
            return
        tagged = len(columns) > 1
        if self.labelled and not tagged:
            self.problem = (
                "malformed_line",
                f"line {number}: one column ({escaped(columns[0])[:60]!r}); expected a word, then its tag last",
            )
        elif self.tokens and tagged != self.tagged:
            self.problem = (
                "malformed_line",
                f"line {number}: {'a word and its tag' if tagged else 'a word without a tag'} after "
                f"{'tagged' if self.tagged else 'untagged'} words; tag every word of a sentence, or none",
            )
        else:
            self.tagged = tagged
            self.tokens.append(columns[0])
            self.tags.append(columns[-1])

    def record(self, document: str | None) -> dict:
        record_id = f"{self.path.name}:{self.first_line}"
        record = {
            "id": record_id,
            "source": f"{self.path}:{self.first_line}",
            "group": self.path.name,
            "document": document,  # None: the file names no documents
            "split": None,
            "text": self.tokens,  # the words and their tags, where a table's columns put them
            "label": self.tags if self.tagged else None,
            "raw": "".join(self.raw).encode("utf-8", "surrogateescape") or None,  # for a reject row
        }
        return record | {"reject": self.problem} if self.problem else record
