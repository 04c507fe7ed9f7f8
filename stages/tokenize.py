"""tokenize: clean splits -> token ids (int32 lists) per split, with the model's fast tokenizer.

Streams each split: reads it in record batches, encodes each batch in one call to the Rust tokenizer
(which spreads the batch over all cores) and appends it to the output, so memory is bounded by the
batch and one row group, not by the size of the split.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from stages import encoding, io, paths, tracking
from stages.errors import run_stage
from stages.params import load_params

IDENTITY_PATH = paths.TOKENS_DIR / "tokenizer_identity.json"


def tokenize_split(source, tokenizer, max_length: int, labels: list[str], batch_size: int) -> Iterator[pa.Table]:
    """Token tables for a clean split (a Parquet file), one per record batch: memory stays bounded."""
    for batch in pq.ParquetFile(source).iter_batches(batch_size=batch_size, columns=["id", "label", "text"]):
        columns = batch.to_pydict()
        yield encoding.token_table(
            columns["id"],
            encoding.encode(tokenizer, columns["text"], max_length),
            encoding.label_ids(columns["label"], labels),
        )


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
