"""A synthetic corpus of any size from the real messages: `python bench/build_corpus.py --rows 1000000 OUT`.

Each row is a real clean message (from the pipeline's clean splits) varied so that no two rows are
the same text: a few words dropped, a neighbouring pair swapped, and a random number spliced in,
all from a seeded generator. Written as `--form split` (the clean-split schema: id, label, text),
`raw` (ingest's schema, the input of clean), both one streamed Parquet file, or `jsonl` (id, label,
text per line, a source for ingest), so building 1,000,000 rows holds one chunk in memory, not the
corpus.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

import common  # noqa: F401  first: it calls configure_process() before numpy or torch loads
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from common import clean_texts

from reprolab import storage
from reprolab.data.cleaning import SPLIT_SCHEMA
from reprolab.data.row_rules import RAW_SCHEMA

CHUNK = 10_000


def varied(words: list[str], rng: np.random.Generator) -> str:
    words = [w for w in words if rng.random() >= 0.05] or words[:1]
    if len(words) > 2:
        i = int(rng.integers(len(words) - 1))
        words[i], words[i + 1] = words[i + 1], words[i]
    words.insert(int(rng.integers(len(words) + 1)), str(int(rng.integers(1_000_000))))
    return " ".join(words)


def synthetic_rows(rows: int, seed: int = 0) -> Iterator[pa.Table]:
    texts, labels = clean_texts()
    split_words = [t.split(" ") for t in texts]
    rng = np.random.default_rng(seed)
    for start in range(0, rows, CHUNK):
        picks = rng.integers(len(texts), size=min(CHUNK, rows - start))
        yield pa.table(
            {
                "id": [f"synthetic-{start + i:09d}" for i in range(len(picks))],
                "label": [labels[p] for p in picks],
                "text": [varied(list(split_words[p]), rng) for p in picks],
                "replacements": pa.repeat(0, len(picks)),
            },
            schema=SPLIT_SCHEMA,
        )


def as_raw(table: pa.Table) -> pa.Table:
    """Clean-split rows as ingest would write them from a table source."""
    rows = table.num_rows
    return pa.table(
        {
            "id": table["id"],
            "source": table["id"],
            "group": pa.repeat("synthetic", rows),
            "label": table["label"],
            "kind": pa.repeat("text", rows),
            "raw": pc.cast(table["text"], pa.binary()),
            "checksum_status": pa.repeat("absent", rows),
            "split": pa.nulls(rows, pa.string()),
            "encoding": pa.nulls(rows, pa.string()),
        },
        schema=RAW_SCHEMA,
    )


def build(rows: int, out: Path, seed: int = 0, form: str = "split") -> None:
    if form == "jsonl":
        with storage.atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8") as handle:
            for table in synthetic_rows(rows, seed):
                handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in table.to_pylist())
        return
    with storage.parquet_sink(out, RAW_SCHEMA if form == "raw" else SPLIT_SCHEMA) as sink:
        for table in synthetic_rows(rows, seed):
            sink.write(as_raw(table) if form == "raw" else table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--form", choices=["split", "raw", "jsonl"], default="split")
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    build(args.rows, args.out.resolve(), args.seed, args.form)
    print(f"{args.rows} rows -> {args.out}")


if __name__ == "__main__":
    main()
