"""`reprolab predict`: a source of raw records in, one row of predictions per record out, streamed.

The source is read by ingest's own readers (CSV, JSONL, Parquet, a folder or tar of mails or text
files), a label column or folder optional, or one text per line (stdin). Each batch of records is
cleaned, encoded and scored by `prediction.Predictor`; its predictions are written before the next
batch is read, so memory holds one batch (and a digest of each id, to find repeated ids) whatever the
source's size. Predictions go to Parquet or CSV by the output's extension (CSV cells guarded as the
reports are); records that cannot be scored go to a rejects Parquet with their reason, as in ingest.
Both files appear only when the whole source is done; rows in = rows predicted + rows rejected. An
input with no row predicted, or more rejected than `max_reject_fraction`, fails and writes neither.
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
TABLE_FORMATS = ("csv", "jsonl", "parquet")
HEADER_BYTES = 1 << 20  # read to find a table's columns: a header line, or a JSONL file's first record
# Ingest's messages name its params; predict's name its own flags or the model.
FOR_PREDICT = {
    "set ingest.text_column / label_column / id_column": "give --text-column / --label-column / --id-column",
    "ingest.labels": "the model's labels",
    "ingest.label_map": "the model's label_map",
    "ingest.max_text_bytes": "predict's text size limit",
}


def for_predict(message: str) -> str:
    for ingest_words, predict_words in FOR_PREDICT.items():
        message = message.replace(ingest_words, predict_words)
    return message


def check_predict_input(path: str, fmt: str | None) -> None:
    """The input exists (stdin aside) before a model is loaded."""
    if path != "-" and not Path(path).exists():
        raise StageError(f"{path}: no such file or folder (give a CSV, JSONL or Parquet file, a folder or tar, or -)")
    if fmt == "lines" and path != "-" and not Path(path).is_file():
        raise StageError(f"{path}: --input-format lines reads a file of one text per line (or - for stdin)")


def table_columns(path: Path, fmt: str) -> list[str]:
    """A table's column names, read from its first bytes (Parquet: its schema); [] when unreadable (the
    reader then says why)."""
    import json

    import pyarrow.parquet as pq

    try:
        if fmt == "parquet":
            return pq.read_schema(path).names
        with open(path, encoding="utf-8-sig", errors="replace", newline="") as handle:
            first = handle.readline(HEADER_BYTES)
        if fmt == "csv":
            return next(csv.reader([first]), [])
        record = json.loads(first)
        return list(record) if isinstance(record, dict) else []
    except (OSError, ValueError, csv.Error, pa.ArrowException):
        return []


def default_id_column(path: str, fmt: str, given: str | None) -> str | None:
    """The id column: as given, else `id` when the table has one, so predictions keep the user's ids."""
    if given or fmt not in TABLE_FORMATS or not Path(path).is_file():
        return given
    return "id" if "id" in table_columns(Path(path), fmt) else None


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


def _predict_rows(rows: Iterator) -> Iterator:
    """Ingest's rows, its file-level errors worded for predict."""
    try:
        yield from rows
    except StageError as exc:
        raise StageError(for_predict(str(exc))) from None


def _check_rejected(path: str, rows_in: int, rejected: int, reasons: Counter, max_fraction: float) -> None:
    """Fail (inside the sinks: neither file is written) on an input that yields no prediction, or too few."""
    top = ", ".join(f"{reason} {n}" for reason, n in reasons.most_common(5))
    if rows_in == 0:
        raise StageError(f"{path}: no rows to predict")
    if rejected == rows_in:
        raise StageError(f"{path}: every one of its {rows_in} rows was rejected ({top}); nothing was written")
    if rejected / rows_in > max_fraction:
        raise StageError(
            f"{path}: {rejected} of {rows_in} rows rejected ({top}), more than --max-reject-fraction "
            f"{max_fraction}; nothing was written"
        )


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
    max_reject_fraction: float = 1.0,
) -> dict:
    """Predictions for every record of `path` to `dest`, rejects to `rejects_dest`; returns the counts.
    Neither file is written when no row is predicted or more than `max_reject_fraction` are rejected."""
    if dest.suffix.lower() not in OUTPUT_FORMATS:
        raise StageError(f"{dest}: the output's extension chooses its format: .parquet or .csv")
    if rejects_dest.suffix.lower() != ".parquet" or rejects_dest.resolve() == dest.resolve():
        raise StageError(f"{rejects_dest}: the rejects file is a .parquet file beside the output, not the output")
    check_predict_input(path, fmt)
    fmt = input_format(path, predictor.recipe, fmt)
    p = source_params(path, fmt, predictor, text_column, label_column, default_id_column(path, fmt, id_column))
    count = ingest_shared.SourceCount()
    rows = _predict_rows(ingestion.ingest(_records(path, fmt, p, count), p, labelled=False))
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
            refused = [row | {"detail": for_predict(row["detail"])} for row in refused]
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
        _check_rejected(path, count.rows, rejects.rows, reasons, max_reject_fraction)
    return {
        "rows_in": count.rows,
        "rows_predicted": sink.rows,
        "rows_rejected": rejects.rows,
        "rejected_by_reason": dict(reasons.most_common()),
        "output": str(dest),
        "rejects": str(rejects_dest),
    }
