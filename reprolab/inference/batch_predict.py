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
from reprolab.data import compressed, ingest_shared, ingestion, readers
from reprolab.errors import StageError
from reprolab.inference.prediction import Predictor, Recipe
from reprolab.params import FOLDER_FORMATS, MAIL_FORMATS, IngestParams
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
        with io.TextIOWrapper(
            compressed.open_bytes(path, HEADER_BYTES), encoding="utf-8-sig", errors="replace", newline=""
        ) as handle:
            first = handle.readline(HEADER_BYTES)
        if fmt == "csv":
            return next(csv.reader([first]), [])
        record = json.loads(first)
        return list(record) if isinstance(record, dict) else []
    except (OSError, ValueError, csv.Error, pa.ArrowException, StageError):
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


def kind_notice(fmt: str, recipe: Recipe) -> str | None:
    """A warning for records of another kind than the model learnt from (plain texts for a model of
    mails, or mails for a model of texts), else None: its test figures say nothing about them."""
    kind = "mail" if fmt in MAIL_FORMATS else "text"
    if kind == recipe.kind:
        return None
    if recipe.kind == "mail":
        return (
            f"predict: WARNING this model learnt from whole mails ({recipe.source['format']}: a subject line, "
            f"then the body); --input-format {fmt} gives it plain texts, with no subject, unlike anything it "
            "was trained or tested on, so its scores on them may be far off. Give raw mails (a folder or tar "
            "of them) for scores its test figures vouch for (docs/serving.md#what-a-model-expects)."
        )
    return (
        f"predict: WARNING this model learnt from plain texts ({recipe.source['format']}); --input-format "
        f"{fmt} gives it whole mails (subject and body), unlike anything it was trained or tested on."
    )


def input_format(path: str, recipe: Recipe, given: str | None) -> str:
    """The ingest format to read `path` with: as given, else by its extension; a folder or tar is read as
    the model's training source was when that was a folder format, else as a folder of text files."""
    if given:
        return given
    if path == "-":
        return "lines"
    suffix = compressed.table_suffix(path).lstrip(".")  # data.csv.gz: csv
    if suffix in ("csv", "jsonl", "parquet"):
        return suffix
    if Path(path).is_dir() or ".tar" in Path(path).name.lower() or suffix in ("tgz", "tar"):
        return recipe.source["format"] if recipe.source["format"] in FOLDER_FORMATS else "text_dir"
    raise StageError(
        f"{path}: cannot tell its format from the name; give --input-format "
        "(csv, jsonl, parquet, spam_assassin, mail_dir, text_dir, lines)"
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


def score_rows(predictor: Predictor, batch: list[tuple[bool, dict]]) -> tuple[list[dict], np.ndarray, list[dict]]:
    """Ingest's (kept, row) pairs through the model: (the rows scored, their probabilities, the rows
    refused by ingest's rules or clean's, each with its reason and a detail worded for predict)."""
    kept = [row for ok, row in batch if ok]
    refused = [row for ok, row in batch if not ok]
    scored, probs, problems = predictor.score(kept)
    refused += [kept[i] | {"reason": reason, "detail": detail} for i, (reason, detail) in problems.items()]
    return [kept[i] for i in scored], probs, [row | {"detail": for_predict(row["detail"])} for row in refused]


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
    if not predictor.task.served:
        raise StageError(
            f"{predictor.folder}: a {predictor.task.name} model; `reprolab predict` does not tag words yet "
            "(its test predictions are evaluate's, in reports/plots/)"
        )
    check_predict_input(path, fmt)
    fmt = input_format(path, predictor.recipe, fmt)
    if notice := kind_notice(fmt, predictor.recipe):
        print(notice, file=sys.stderr)
    p = predictor.recipe.ingest_params(
        path, fmt if fmt != "lines" else "csv", text_column, label_column, default_id_column(path, fmt, id_column)
    )
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
            scored, probs, refused = score_rows(predictor, batch)
            if scored:
                sink.write(_batch_table(scored, probs, predictor, schema))
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
