"""tokenize: clean splits -> token ids (int32 lists) per split, with the model's fast tokenizer.

Streams each split: reads it in record batches, encodes each batch in one call to the Rust tokenizer
(which spreads the batch over all cores) and appends it to the output, so memory is bounded by the
batch and one row group, not by the size of the split.

A mail runs to thousands of characters, but only `max_length` tokens survive truncation, so the
tokenizer is given a window of each text: the first (or, truncating left, the last)
`max_length * CHARS_PER_TOKEN` characters, cut at a space. Tokens never span a space, so the window's
tokens are the text's own; a row whose window yields fewer than `max_length` tokens gets a window
four times wider, until it has enough tokens or covers the whole text. The ids are exactly those of
the whole text, which the first batch of every split checks against the tokenizer's own call.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

import pyarrow as pa

from stages import encoding, io, paths, tracking
from stages.errors import run_stage
from stages.params import load_params

IDENTITY_PATH = paths.TOKENS_DIR / "tokenizer_identity.json"
CHARS_PER_TOKEN = 6  # English mail runs 4 to 5 characters per WordPiece token; 6 rarely needs widening


def text_window(text: str, chars: int, side: str) -> str:
    """The part of `text` that truncation on `side` keeps at most, cut at a space (whole text if none)."""
    if len(text) <= chars:
        return text
    if side == "right":
        cut = text.rfind(" ", 0, chars + 1)
        return text[:cut] if cut > 0 else text
    cut = text.find(" ", len(text) - chars - 1)
    return text[cut + 1 :] if cut >= 0 else text


class WindowedEncoder:
    """`encoding.encode`, reading only the window of each text that truncation can keep.

    Calls the tokenizer's Rust backend directly (`encode_batch`, parallel over the batch): the
    Python wrapper's per-call overhead would otherwise cost more than the tokenizing itself.
    """

    def __init__(self, tokenizer, max_length: int):
        from tokenizers import Tokenizer

        self.max_length = max_length
        self.side = tokenizer.truncation_side
        # A copy with the wrapper's truncation settings: the caller's tokenizer stays as it was.
        self.backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        self.backend.enable_truncation(max_length, direction=self.side)
        self.backend.no_padding()

    def __call__(self, texts: list[str]) -> list[list[int]]:
        ids: list[list[int]] = [[] for _ in texts]
        pending, chars = list(range(len(texts))), self.max_length * CHARS_PER_TOKEN
        while pending:
            windows = [text_window(texts[i], chars, self.side) for i in pending]
            widen = []
            for i, window, encoded in zip(pending, windows, self.backend.encode_batch(windows), strict=True):
                if len(encoded.ids) < self.max_length and len(window) < len(texts[i]):
                    widen.append(i)  # the window ran out of tokens before the text did
                else:
                    ids[i] = encoded.ids
            pending, chars = widen, chars * 4
        return ids


def tokenize_split(source, tokenizer, max_length: int, labels: list[str], batch_size: int) -> Iterator[pa.Table]:
    """Token tables for a clean split (a Parquet file), one per record batch: memory stays bounded."""
    encode = WindowedEncoder(tokenizer, max_length)
    for number, batch in enumerate(io.iter_batches(source, ["id", "label", "text"], batch_size)):
        columns = batch.to_pydict()
        ids = encode(columns["text"])
        if number == 0:
            whole = encoding.encode(tokenizer, columns["text"], max_length)
            if ids != whole:
                # A tokenizer whose tokens can span spaces: windows would change the ids.
                print(f"tokenize: {type(tokenizer).__name__}: windowed ids differ from whole-text ids; "
                      "encoding whole texts")
                encode, ids = partial(encoding.encode, tokenizer, max_length=max_length), whole
        yield encoding.token_table(columns["id"], ids, encoding.label_ids(columns["label"], labels))


def main() -> None:
    params = load_params()
    p = params.tokenize
    tokenizer = encoding.load_tokenizer(params.model.name_or_path, p.truncation_side)
    counts = {}
    for split in paths.SPLITS:
        with io.parquet_sink(paths.token_split(split), encoding.TOKEN_SCHEMA) as sink:
            for table in tokenize_split(
                paths.clean_split(split), tokenizer, p.max_length, params.ingest.labels, p.batch_size
            ):
                sink.write(table)
        counts[split] = sink.rows
    ident = encoding.identity(tokenizer, params.model.name_or_path, p.max_length)
    io.write_json(ident, IDENTITY_PATH)
    print(f"tokenize: {counts} rows with {ident['class']} (sha256 {ident['sha256'][:12]})")
    tracking.log_stage(
        "tokenize", params,
        outputs=[*map(paths.token_split, paths.SPLITS), IDENTITY_PATH],
        metrics={"rows": counts},
        inputs={split: paths.clean_split(split) for split in paths.SPLITS},
    )


if __name__ == "__main__":
    run_stage(main)
