"""Token ids of clean splits (int32 lists), encoding only the part of each text that truncation keeps.

`tokenize_split` streams a split: it reads record batches and encodes each with the Rust
tokenizer's batched call (which spreads the batch over all cores), in the stage's process on the local
engine or as Ray tasks (reprolab.engines), so memory is bounded by a few batches and one row group,
not by the size of the split.

A mail runs to thousands of characters, but only `max_length` tokens survive truncation, so each
text is encoded chunk by chunk from its kept side (the start for head truncation, the end for tail;
head_tail reads from the start, and a row long enough to be cut then from the end too), each chunk
cut at a space, until it has enough tokens or runs out. Tokens never span a space,
so the chunks' tokens joined are the text's own; the tokenizer's special tokens go around them. The
first chunk is sized from the typical characters per token; a row that falls short continues with a
chunk sized from its own rate. ASCII chunks skip the tokenizer's normaliser when a byte table can
stand in for it (`BatchEncoder`). The ids are exactly those of the whole text, which the first batch
of every split checks against the tokenizer's own call.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from reprolab import storage
from reprolab.encoding import encoder
from reprolab.engines import IN_PROCESS, Engine
from reprolab.params import TokenizeParams

# WordPiece on English mail: 3.45 characters per token at the median. A first chunk this long
# covers about half the rows; the others need one or two short continuations, which cost less than
# a first chunk long enough for nearly every row.
CHARS_PER_TOKEN = 3.5
CONTINUATION_MARGIN = 1.2  # a continuation asks for this much more text than the row's rate predicts


def next_span(text: str, done: int, chars: int, side: str) -> tuple[int, int]:
    """Bounds of the next chunk of `text`: about `chars` characters next to the `done` characters
    already encoded from the kept side, cut at a space (the last one in reach; else the first one
    past it; else the end of the text)."""
    if side == "right":
        start, end = done, done + chars
        if end >= len(text):
            return start, len(text)
        cut = text.rfind(" ", start + 1, end + 1)
        if cut <= start:
            cut = text.find(" ", end)
        return start, len(text) if cut < 0 else cut
    end = len(text) - done
    start = end - chars
    if start <= 0:
        return 0, end
    cut = text.find(" ", start, end)
    if cut < 0:
        cut = text.rfind(" ", 0, start)
    return max(cut, 0), end


_PER_CHARACTER_NORMALIZERS = {"BertNormalizer", "Lowercase", "NFC", "NFD", "NFKC", "NFKD", "StripAccents"}


def ascii_translation(backend) -> tuple[bytes, bytes] | None:
    """The backend's normaliser on ASCII text as a `bytes.translate` table and the bytes it deletes,
    when the normaliser works one character at a time and maps each ASCII character to at most one
    ASCII character (BERT's: control characters dropped, whitespace to spaces, lower case); else None."""
    spec = json.loads(backend.to_str())["normalizer"]
    if spec is None:
        return None  # nothing to save
    steps = spec["normalizers"] if spec["type"] == "Sequence" else [spec]
    if any(step["type"] not in _PER_CHARACTER_NORMALIZERS for step in steps):
        return None
    outputs = [backend.normalizer.normalize_str(chr(c)) for c in range(128)]
    if any(len(out) > 1 or not out.isascii() for out in outputs):
        return None
    table = bytes(ord(out) if out else c for c, out in enumerate(outputs)) + bytes(range(128, 256))
    return table, bytes(c for c, out in enumerate(outputs) if not out)


class BatchEncoder:
    """Encodes texts without special tokens: parallel over the batch, without character offsets
    (`encode_batch_fast`; the Python wrapper's per-call overhead would cost more than the tokenizing).

    The normaliser takes half the tokenizer's time on mail. When it works character by character
    (BERT's does), ASCII texts are normalised here by one `bytes.translate` each and encoded by a
    copy of the tokenizer without normaliser: the same ids for two thirds of the time. Texts that
    hold an added token ([CLS], [MASK], ...) stay with the whole tokenizer, which matches some of
    those before normalising.
    """

    def __init__(self, backend):
        from tokenizers import Tokenizer

        self.backend = backend
        self.ascii = ascii_translation(backend)
        if self.ascii:
            spec = json.loads(backend.to_str())
            spec["normalizer"] = None
            self.prenormalised = Tokenizer.from_str(json.dumps(spec))
            contents = [token["content"] for token in spec["added_tokens"] if token["content"].isascii()]
            forms = sorted({*contents, *map(self._normalise, contents)} - {""}, key=len, reverse=True)
            self.added = re.compile("|".join(map(re.escape, forms)) if forms else "(?!)")  # (?!): never

    def _normalise(self, text: str) -> str:
        return text.encode("ascii").translate(*self.ascii).decode("ascii")

    def __call__(self, texts: list[str]) -> list:
        if self.ascii is None:
            return self.backend.encode_batch_fast(texts, add_special_tokens=False)
        fast, whole = [], []
        for k, text in enumerate(texts):
            if text.isascii():
                normalised = self._normalise(text)
                if not (self.added.search(text) or self.added.search(normalised)):
                    fast.append((k, normalised))
                    continue
            whole.append((k, text))
        encoded = [None] * len(texts)
        for backend, part in ((self.prenormalised, fast), (self.backend, whole)):
            results = backend.encode_batch_fast([text for _, text in part], add_special_tokens=False) if part else []
            for (k, _), result in zip(part, results, strict=True):
                encoded[k] = result
        return encoded


class ChunkedEncoder:
    """`encoder.encode`, reading only as much of each text as truncation can keep."""

    def __init__(self, tokenizer, max_length: int, truncation: encoder.Truncation):
        from tokenizers import Tokenizer

        self.truncation = truncation
        # A copy without the wrapper's truncation and padding: the caller's tokenizer stays as it was.
        self.backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        self.backend.no_truncation()
        self.backend.no_padding()
        self.encode_batch = BatchEncoder(self.backend)
        self.prefix, self.suffix = encoder.special_tokens(tokenizer)
        self.budget = max_length - len(self.prefix) - len(self.suffix)  # text tokens that survive
        if self.budget < 1:
            raise ValueError(f"max_length {max_length} leaves no room besides the special tokens")

    def __call__(self, texts: list[str]) -> pa.ListArray:
        head = self.truncation.head(self.budget)
        # Head and head_tail read from the start; a row that fills the budget is long enough to be cut,
        # and head_tail then takes its tail from the end (the chunks' tokens are the text's own, so the
        # two never overlap).
        tokens = self._kept(texts, "left" if head == 0 else "right", self.budget)
        if 0 < head < self.budget:
            long = [i for i, row in enumerate(tokens) if len(row) >= self.budget]
            tails = self._kept([texts[i] for i in long], "left", self.budget - head)
            for i, tail in zip(long, tails, strict=True):
                tokens[i] = tokens[i][:head] + tail
        return self._with_special_tokens(tokens)

    def _kept(self, texts: list[str], side: str, budget: int) -> list[list[int]]:
        """Each text's first (side right) or last (left) `budget` text tokens, without special tokens."""
        tokens: list[list[int]] = [[] for _ in texts]
        done = [0] * len(texts)  # characters encoded so far, from the kept side
        chars = [int(budget * CHARS_PER_TOKEN)] * len(texts)
        pending = list(range(len(texts)))
        while pending:
            spans = [next_span(texts[i], done[i], chars[i], side) for i in pending]
            chunks = [texts[i][start:end] for i, (start, end) in zip(pending, spans, strict=True)]
            encoded = self.encode_batch(chunks)
            short = []
            for i, (start, end), chunk in zip(pending, spans, encoded, strict=True):
                row = tokens[i]
                if side == "right":
                    row += chunk.ids
                    done[i] = end
                else:
                    row[:0] = chunk.ids
                    done[i] = len(texts[i]) - start
                if len(row) >= budget:  # drop what truncation drops: the end, or the start
                    del row[slice(budget, None) if side == "right" else slice(None, len(row) - budget)]
                elif done[i] < len(texts[i]):
                    rate = done[i] / max(len(row), 1)  # this text's characters per token so far
                    chars[i] = int((budget - len(row)) * rate * CONTINUATION_MARGIN) + 8
                    short.append(i)
            pending = short
        return tokens

    def _with_special_tokens(self, tokens: list[list[int]]) -> pa.ListArray:
        """Every row's tokens between the special tokens, as one Arrow array built in bulk."""
        lengths = np.fromiter(map(len, tokens), np.int32, len(tokens))
        offsets = np.zeros(len(tokens) + 1, np.int32)
        np.cumsum(lengths + len(self.prefix) + len(self.suffix), out=offsets[1:])
        values = np.empty(offsets[-1], np.int32)
        special = np.zeros(offsets[-1], bool)
        for place, token in [
            *((offsets[:-1] + j, t) for j, t in enumerate(self.prefix)),
            *((offsets[1:] - len(self.suffix) + j, t) for j, t in enumerate(self.suffix)),
        ]:
            values[place], special[place] = token, True
        values[~special] = np.fromiter(chain.from_iterable(tokens), np.int32, int(lengths.sum()))
        return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))


class VerifiedEncoder:
    """Encodes with `ChunkedEncoder` where it gives the tokenizer's own ids, else whole texts; built
    once for all splits (its tokenizer copies take 0.3 s), checked on the first batch of each."""

    def __init__(self, tokenizer, max_length: int, truncation: encoder.Truncation, caller: str = "tokenize"):
        self.name = type(tokenizer).__name__
        self.caller = caller  # who says so, when the fast encoder is not used
        self.whole = partial(encoder.encode, tokenizer, max_length=max_length, truncation=truncation)
        try:
            self.chunked, self.reason = ChunkedEncoder(tokenizer, max_length, truncation), ""
        except ValueError as exc:
            self.chunked, self.reason = None, str(exc)

    def verified(self, sample: list[str]) -> tuple[Callable, list[list[int]]]:
        """The encoder to use from here on, with the ids of `sample`."""
        expected = self.whole(sample)
        reason = self.reason
        if self.chunked is not None:
            if self.chunked(sample).to_pylist() == expected:
                return self.chunked, expected
            reason = "chunked ids differ from whole-text ids"  # tokens that can span a space
        print(f"{self.caller}: {self.name}: {reason}; encoding whole texts")
        return self.whole, expected


@dataclass(frozen=True)
class TokenBatch:
    """A clean split's record batch -> its token table: pure, so batches can run on any worker."""

    encode: Callable[[list[str]], list]
    labels: list[str]

    def __call__(self, batch: pa.RecordBatch) -> pa.Table:
        columns = batch.to_pydict()
        return encoder.token_table(
            columns["id"], self.encode(columns["text"]), encoder.label_ids(columns["label"], self.labels)
        )


def tokenize_split(
    source, verified: VerifiedEncoder, labels: list[str], batch_size: int, engine: Engine = IN_PROCESS
) -> Iterator[pa.Table]:
    """Token tables for a clean split (a Parquet file), one per record batch: memory stays bounded. The
    first batch chooses the encoder here; the others run on the `engine`."""
    batches = storage.iter_batches(source, ["id", "label", "text"], batch_size)
    first = next(batches, None)
    if first is None:
        return
    columns = first.to_pydict()
    encode, ids = verified.verified(columns["text"])
    yield encoder.token_table(columns["id"], ids, encoder.label_ids(columns["label"], labels))
    yield from engine.map(TokenBatch(encode, labels), batches)


def tokenize_splits(
    tokenizer,
    p: TokenizeParams,
    labels: list[str],
    sources: dict[str, Path],
    dests: dict[str, Path],
    engine: Engine,
) -> dict[str, int]:
    """Each clean split's texts -> token ids and label ids (encoder.TOKEN_SCHEMA); rows per split."""
    verified = VerifiedEncoder(tokenizer, p.max_length, encoder.Truncation.of(p))
    rows = {}
    for split, source in sources.items():
        with storage.parquet_sink(dests[split], encoder.TOKEN_SCHEMA) as sink:
            for table in tokenize_split(source, verified, labels, p.batch_size, engine):
                sink.write(table)
            # Before the output replaces the previous one: a row for every row in, whatever ran the batches.
            storage.check_every_row_came_back(source, sink.rows, dests[split])
        rows[split] = sink.rows
    return rows


def identity_settings(p: TokenizeParams) -> dict[str, Any]:
    """What else than the tokenizer and max_length the token ids depend on: which part of a text is kept."""
    truncation = encoder.Truncation.of(p)
    return {
        "truncation": truncation.kind,
        **({"head_fraction": truncation.head_fraction} if truncation.kind == "head_tail" else {}),
    }
