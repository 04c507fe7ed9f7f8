"""Sources to raw rows: stream the source named in params into one Parquet table, in source order.

The readers (readers, walking folders and archives with walkers) give records in the source's order
(mail files by folder and name, table rows by file and row); each is validated (validation), checked
for a duplicate id, optionally subsampled (`ingest.max_rows_per_label`, subsample_ids), and written
as a raw row (RAW_SCHEMA) or a reject with its reason. Memory holds one chunk of rows, plus a digest
of the id and the source name of every kept row (to find duplicate ids), so it grows with the number
of rows, not with their size. A file-level problem stops the stage with one message before its
outputs are replaced; row-level problems go to the rejects table. Every entry the readers meet is
counted where it is read (`SourceCount`), apart from kept and rejected (`Tally`), so a row lost on
the way fails the stage.
"""

from __future__ import annotations

import hashlib
import heapq
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from reprolab import storage
from reprolab.data.ingest_shared import IngestError, SourceCount, escaped
from reprolab.data.readers import records_from_source
from reprolab.data.row_rules import RowRules, TextRules
from reprolab.params import IngestParams, preview


def ingest(
    records: Iterable[dict],
    p: IngestParams,
    keep_ids: set[str] | None = None,
    labelled: bool = True,
    rules: RowRules | None = None,
) -> Iterator[tuple[bool, dict]]:
    """(kept, row) for every record, in the source's order: a raw row (`rules.schema`; labelled texts
    by default) when kept, else a reject row (storage.REJECT_SCHEMA) with its reason. With `keep_ids`
    (from `subsample_ids`), valid rows whose id is not in it are rejected as subsampled; with
    `labelled=False`, a row without a label is kept (label None). Memory holds a digest of each id
    seen, not the rows."""
    rules = rules or TextRules(p, labelled)
    seen_ids: dict[bytes, str] = {}  # a digest of each kept id (ids may be long) -> its source
    for record in records:
        problem = rules.problem(record)
        if problem is None:
            digest = hashlib.blake2b(record["id"].encode("utf-8"), digest_size=16).digest()  # valid ids are UTF-8
            if digest in seen_ids:
                problem = ("duplicate_id", f"id {preview(record['id'])} already used by {seen_ids[digest]}")
            else:
                seen_ids[digest] = record["source"]
        if problem is None:
            if keep_ids is not None and record["id"] not in keep_ids:
                problem = ("subsampled", f"ingest.max_rows_per_label={p.max_rows_per_label}")
        if problem:
            yield (
                False,
                {
                    "id": escaped(record["id"]),
                    "source": escaped(record["source"]),
                    "reason": problem[0],
                    "detail": escaped(problem[1]),
                    **rules.reject_fields(record),
                },
            )
        else:
            yield True, rules.row(record)


def subsample_ids(rows: Iterable[tuple[bool, dict]], max_per_label: int) -> set[str]:
    """The ids of the kept rows that a subsample keeps: per label, the `max_per_label` with the
    smallest SHA-256 of their id, so the choice does not depend on the source's order."""
    # Per label, a heap of the smallest digests so far, largest on top (negated): memory holds the
    # ids the subsample keeps, not every candidate.
    heaps: dict[str, list[tuple[int, str]]] = {}
    for kept, row in rows:
        if not kept:
            continue
        heap = heaps.setdefault(row["label"], [])
        entry = (-int.from_bytes(hashlib.sha256(row["id"].encode()).digest(), "big"), row["id"])
        if len(heap) < max_per_label:
            heapq.heappush(heap, entry)
        elif entry > heap[0]:
            heapq.heapreplace(heap, entry)
    return {row_id for heap in heaps.values() for _, row_id in heap}


class Tally:
    """The ingest report, counted as the rows stream past."""

    def __init__(self, count: SourceCount, rules: RowRules) -> None:
        self.source = count  # filled by the readers as they read
        self.rules = rules
        self.kept = 0
        self.kept_by: Counter[str] = Counter()  # by what `rules.counts` names: a label, an entity type
        self.rejected_by_reason: Counter[str] = Counter()
        self.example_by_reason: dict[str, str] = {}  # the first detail of each reason, for messages
        self.checksum: Counter[str] = Counter()
        self.encodings: Counter[str] = Counter()  # text_dir: the encodings files were decoded from
        self.mismatched: list[str] = []  # sources whose bytes do not match the MD5 in their name

    def add(self, kept: bool, row: dict) -> None:
        if not kept:
            self.rejected_by_reason[row["reason"]] += 1
            self.example_by_reason.setdefault(row["reason"], f"{row['source']}: {row['detail']}"[:200])
            return
        self.kept += 1
        self.kept_by.update(self.rules.counts(row))
        if "checksum_status" in row:
            self.checksum[row["checksum_status"]] += 1
        if row.get("encoding"):
            self.encodings[row["encoding"]] += 1
        if row.get("checksum_status") == "mismatch":
            self.mismatched.append(row["source"])

    def top_rejects(self, most: int = 3) -> str:
        """The commonest reject reasons with their counts and an example each, for a message."""
        if not self.rejected_by_reason:
            return "no row was rejected"
        return "; ".join(
            f"{reason} x{n} (e.g. {self.example_by_reason[reason]})"
            for reason, n in self.rejected_by_reason.most_common(most)
        )

    def report(self) -> dict[str, Any]:
        return {
            "rows_in": self.source.rows,
            "rows_kept": self.kept,
            "rows_rejected": self.rejected_by_reason.total(),
            "rejected_by_reason": dict(sorted(self.rejected_by_reason.items())),
            self.rules.counted: dict(sorted(self.kept_by.items())),
            "skipped_by_rule": dict(sorted(self.source.skipped.items())),
            **({"checksum": dict(sorted(self.checksum.items()))} if self.checksum else {}),
            **({"encodings": dict(sorted(self.encodings.items()))} if self.encodings else {}),
        }

    def check(self, written: tuple[int, int]) -> None:
        """Before the outputs replace the previous ones: every entry read is a kept or rejected row, and
        the kept rows hold every name the rules expect (each class; each entity type)."""
        kept, rejected = self.kept, self.rejected_by_reason.total()
        if written != (kept, rejected) or self.source.rows != kept + rejected:
            raise IngestError(
                f"ingest lost rows (a bug; please report it): read {self.source.rows} entries, "
                f"counted {kept} kept + {rejected} rejected, wrote {written[0]} + {written[1]}"
            )
        if not kept:
            raise IngestError(f"no row kept of {self.source.rows} read: {self.top_rejects()}")
        empty = [name for name in self.rules.expected() if not self.kept_by[name]]
        if empty:
            raise IngestError(f"{self.rules.missing(empty, dict(self.kept_by))}: {self.top_rejects()}")


# Rows are handed to the Parquet writers in chunks of this many rows or bytes, whichever comes first.
_CHUNK_ROWS = 1024
_CHUNK_BYTES = 16 << 20


def write_outputs(
    rows: Iterable[tuple[bool, dict]], count: SourceCount, rules: RowRules, raw_dest: Path, rejects_dest: Path
) -> Tally:
    """Stream kept rows (`rules.schema`) to `raw_dest` and rejects to `rejects_dest` (`count` being
    filled by the reader of `rows`); memory holds one chunk of each plus the writers' row group,
    whatever the source's size."""
    tally = Tally(count, rules)
    with (
        storage.parquet_sink(raw_dest, rules.schema) as raw_sink,
        storage.parquet_sink(rejects_dest, storage.REJECT_SCHEMA) as reject_sink,
    ):
        chunks: dict[bool, list[dict]] = {True: [], False: []}
        sizes = {True: 0, False: 0}

        def flush(kept: bool) -> None:
            if kept:
                raw_sink.write(pa.Table.from_pylist(chunks[kept], schema=rules.schema))
            else:
                reject_sink.write(storage.rejects_table(chunks[kept], "ingest"))
            chunks[kept], sizes[kept] = [], 0

        for kept, row in rows:
            tally.add(kept, row)
            chunks[kept].append(row)
            sizes[kept] += len(row.get("raw") or b"")
            if len(chunks[kept]) >= _CHUNK_ROWS or sizes[kept] >= _CHUNK_BYTES:
                flush(kept)
        for kept in (True, False):
            if chunks[kept]:
                flush(kept)
        tally.check((raw_sink.rows, reject_sink.rows))
    return tally


def ingest_source(p: IngestParams, raw_dest: Path, rejects_dest: Path, rules: RowRules | None = None) -> Tally:
    """The source named in `p` to `raw_dest` (kept rows, by `rules`: labelled texts by default) and
    `rejects_dest`; with a subsample (`max_rows_per_label`), a first pass over the source picks the ids."""
    rules = rules or TextRules(p)
    keep_ids = None
    if p.max_rows_per_label is not None:
        keep_ids = subsample_ids(ingest(records_from_source(p), p, rules=rules), p.max_rows_per_label)
    count = SourceCount()
    return write_outputs(
        ingest(records_from_source(p, count), p, keep_ids, rules=rules), count, rules, raw_dest, rejects_dest
    )
