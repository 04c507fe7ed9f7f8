"""`reprolab predict`: a source of raw records in, one row of predictions per record out, streamed.

The source is read by ingest's own readers (CSV, JSONL, Parquet, a folder or tar of mails or text
files), a label column or folder optional, or one text per line (stdin). Each batch of records is
cleaned, encoded and scored by `prediction.Predictor`; its predictions are written before the next
batch is read, so memory holds one batch (and a digest of each id, to find repeated ids) whatever the
source's size. Predictions go to Parquet or CSV by the output's extension (CSV cells guarded as the
reports are); records that cannot be scored go to a rejects Parquet with their reason, as in ingest.
Both files appear only when the whole source is done; rows in = rows predicted + rows rejected.
"""

from __future__ import annotations

import contextlib
import csv
import io
import sys
from collections import Counter
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from reprolab import storage
from reprolab.data import ingest_shared, ingestion, readers
from reprolab.errors import StageError
from reprolab.inference.prediction import Predictor, input_format
from reprolab.params import IngestParams
from reprolab.tasks.base import Task

OUTPUT_FORMATS = (".parquet", ".csv")
BATCH_ROWS = 1024


def output_schema(task: Task, labels: list[str]) -> pa.Schema:
    """id, the record's own label where it has one (else null), then the task's prediction columns."""
    return pa.schema([("id", pa.string()), ("actual", pa.string()), *task.output_fields(labels)])


class _CsvSink:
    def __init__(self, handle, schema: pa.Schema):
        self.writer = csv.writer(handle, lineterminator="\n")
        self.writer.writerow(schema.names)
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        columns = [column.to_pylist() for column in table.columns]
        self.writer.writerows(
            [["" if v is None else storage.csv_cell(v) for v in row] for row in zip(*columns, strict=True)]
        )
        self.rows += table.num_rows


@contextlib.contextmanager
def prediction_sink(dest: Path, schema: pa.Schema) -> Iterator:
    """A streamed Parquet or CSV output (by `dest`'s extension), renamed into place when the block succeeds."""
    if dest.suffix.lower() == ".parquet":
        with storage.parquet_sink(dest, schema) as sink:
            yield sink
    else:
        with storage.atomic_path(dest) as tmp, open(tmp, "w", encoding="utf-8", newline="") as handle:
            yield _CsvSink(handle, schema)


def source_params(
    path: str, fmt: str, predictor: Predictor, text_column: str, label_column: str, id_column: str | None
) -> IngestParams:
    """Ingest params to read a prediction source with: the model's label params, the user's columns."""
    source = predictor.recipe.source
    return IngestParams.model_construct(  # the label params were validated when the model was trained
        format=fmt if fmt != "lines" else "csv",
        path=path,
        labels=source["labels"],
        label_map={key: value for key, value in source["label_map"]},
        label_strip=source["label_strip"],
        label_casefold=source["label_casefold"],
        folder_labels=source["folder_labels"],
        text_column=text_column,
        label_column=label_column,
        id_column=id_column,
    )


def _records(path: str, fmt: str, p: IngestParams, count: ingest_shared.SourceCount) -> Iterator[dict]:
    if fmt != "lines":
        return readers.records_from_source(p, count, labelled=False)
    if path == "-":
        return readers.read_lines(
            io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="surrogateescape"), p, count
        )
    return _file_lines(Path(path), p, count)


def _file_lines(path: Path, p: IngestParams, count: ingest_shared.SourceCount) -> Iterator[dict]:
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as text:
        yield from readers.read_lines(text, p, count, name=path.name)


def _batch_table(rows: list[dict], probs: np.ndarray, predictor: Predictor, schema: pa.Schema) -> pa.Table:
    columns = {"id": [row["id"] for row in rows], "actual": [row["label"] for row in rows]}
    columns |= predictor.task.output_columns(probs, predictor.labels)
    return pa.table(columns, schema=schema)


def predict_source(
    predictor: Predictor,
    path: str,
    dest: Path,
    rejects_dest: Path,
    fmt: str | None = None,
    text_column: str = "text",
    label_column: str = "label",
    id_column: str | None = None,
    batch_rows: int = BATCH_ROWS,
    progress: bool = True,
) -> dict:
    """Predictions for every record of `path` to `dest`, rejects to `rejects_dest`; returns the counts."""
    if dest.suffix.lower() not in OUTPUT_FORMATS:
        raise StageError(f"{dest}: the output's extension chooses its format: .parquet or .csv")
    if rejects_dest.suffix.lower() != ".parquet" or rejects_dest.resolve() == dest.resolve():
        raise StageError(f"{rejects_dest}: the rejects file is a .parquet file beside the output, not the output")
    fmt = input_format(path, predictor.recipe, fmt)
    p = source_params(path, fmt, predictor, text_column, label_column, id_column)
    count = ingest_shared.SourceCount()
    rows = ingestion.ingest(_records(path, fmt, p, count), p, labelled=False)
    schema = output_schema(predictor.task, predictor.labels)
    reasons: Counter[str] = Counter()
    with (
        prediction_sink(dest, schema) as sink,
        storage.parquet_sink(rejects_dest, storage.REJECT_SCHEMA) as rejects,
        tqdm(desc="predict", unit=" rows", disable=not progress, file=sys.stderr) as bar,
    ):
        while batch := list(islice(rows, batch_rows)):
            kept = [row for ok, row in batch if ok]
            refused = [row for ok, row in batch if not ok]
            scored, probs, problems = predictor.score(kept)
            refused += [kept[i] | {"reason": reason, "detail": detail} for i, (reason, detail) in problems.items()]
            if scored:
                sink.write(_batch_table([kept[i] for i in scored], probs, predictor, schema))
            if refused:
                rejects.write(storage.rejects_table(refused, "predict"))
            reasons.update(row["reason"] for row in refused)
            bar.update(len(batch))
        if count.rows != sink.rows + rejects.rows:  # inside the block: neither file replaces a previous one
            raise StageError(
                f"{path}: {count.rows} rows read but {sink.rows} predicted and {rejects.rows} "
                "rejected: a reader lost rows; please report this"
            )
    return {
        "rows_in": count.rows,
        "rows_predicted": sink.rows,
        "rows_rejected": rejects.rows,
        "rejected_by_reason": dict(reasons.most_common()),
        "output": str(dest),
        "rejects": str(rejects_dest),
    }
