"""`reprolab predict`: a source of raw records in, one row of predictions per record out, streamed.

The source is read by ingest's own readers (CSV, JSONL, Parquet, a folder or tar of mails or text
files; for a tagger, CoNLL files with or without tags, a table of words or of raw texts), a label
column or folder optional, or one text per line (stdin). Each batch of records is cleaned, encoded and
scored by `prediction.Predictor`; its predictions are written before the next batch is read, so memory
holds one batch (and a digest of each id, to find repeated ids) whatever the source's size. Predictions
go to Parquet, JSONL (strict JSON: null, never NaN) or CSV (a classifier's flat columns only) by the
output's extension (CSV cells guarded as the reports are); records that cannot be scored go to a
rejects Parquet with their reason, as in ingest. Both files appear only when the whole source is done;
rows in = rows predicted + rows rejected. An input with no row predicted, or more rejected than
`max_reject_fraction`, fails and writes neither.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import sys
from collections import Counter
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from reprolab import storage
from reprolab.data import compressed, ingest_shared, ingestion, readers, row_rules
from reprolab.engines import IN_PROCESS, Engine
from reprolab.errors import StageError
from reprolab.inference.prediction import Predictor, Recipe
from reprolab.params import FOLDER_FORMATS, MAIL_FORMATS, IngestParams
from reprolab.tasks import catalog
from reprolab.tasks.base import Task

OUTPUT_FORMATS = (".parquet", ".jsonl", ".csv")
BATCH_ROWS = 1024
TABLE_FORMATS = ("csv", "jsonl", "parquet")
HEADER_BYTES = 1 << 20  # read to find a table's columns: a header line, or a JSONL file's first record
# Ingest's messages name its params; predict's name its own flags or the model.
FOR_PREDICT = {
    "set ingest.text_column / label_column / id_column": "give --text-column / --label-column / --id-column",
    "ingest.labels": "the model's labels",
    "ingest.label_map": "the model's label_map",
    "ingest.max_text_bytes": "predict's text size limit",
    "ingest.tag_scheme": "the model's tag scheme",
}


def for_predict(message: str) -> str:
    for ingest_words, predict_words in FOR_PREDICT.items():
        message = message.replace(ingest_words, predict_words)
    return message


def check_predict_input(path: str, fmt: str | None) -> None:
    """The input exists (stdin aside) before a model is loaded."""
    if path != "-" and not Path(path).exists():
        raise StageError(
            f"{path}: no such file or folder (give a CSV, JSONL, Parquet or CoNLL file, a folder or tar, or -)"
        )
    if fmt == "lines" and path != "-" and not Path(path).is_file():
        raise StageError(f"{path}: --input-format lines reads a file of one text per line (or - for stdin)")


def table_columns(path: Path, fmt: str) -> list[str]:
    """A table's column names, read from its first bytes (Parquet: its schema); [] when unreadable (the
    reader then says why)."""
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


def default_columns(
    path: str, fmt: str, task: Task, text: str | None, label: str | None, row_id: str | None
) -> tuple[str, str, str | None]:
    """The table's (text, label, id) columns, each as given, else the task's: the first of its
    `input_columns` the table has (a tagger's words, else its raw text), its `label_column`, and `id`
    when the table has one, so predictions keep the user's ids. A line is a text. The table's header
    is read once."""
    columns = table_columns(Path(path), fmt) if fmt in TABLE_FORMATS and Path(path).is_file() else []
    if fmt == "lines":
        text = "text"
    return (
        text or next((name for name in task.input_columns if name in columns), task.input_columns[0]),
        label or task.label_column,
        row_id or ("id" if "id" in columns else None),
    )


def output_schema(task: Task, labels: list[str]) -> pa.Schema:
    """id, the record's own label where it has one (else null), then the task's prediction columns."""
    return pa.schema([("id", pa.string()), ("actual", task.actual_type), *task.output_fields(labels)])


def nested(schema: pa.Schema) -> list[str]:
    """The columns of lists or records, which a CSV cell cannot hold."""
    return [field.name for field in schema if pa.types.is_nested(field.type)]


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


class _JsonlSink:
    def __init__(self, handle):
        self.handle, self.rows = handle, 0

    def write(self, table: pa.Table) -> None:
        for row in table.to_pylist():
            try:
                self.handle.write(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n")
            except ValueError:  # a NaN or infinite score: JSON has no such number
                raise StageError(f"row {row['id']!r}: a score that is not a number; the model is broken") from None
        self.rows += table.num_rows


@contextlib.contextmanager
def prediction_sink(dest: Path, schema: pa.Schema) -> Iterator:
    """A streamed Parquet, JSONL or CSV output (by `dest`'s extension), renamed into place when the block
    succeeds."""
    if dest.suffix.lower() == ".parquet":
        with storage.parquet_sink(dest, schema) as sink:
            yield sink
        return
    with storage.atomic_path(dest) as tmp, open(tmp, "w", encoding="utf-8", newline="") as handle:
        yield _JsonlSink(handle) if dest.suffix.lower() == ".jsonl" else _CsvSink(handle, schema)


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
    """The ingest format to read `path` with: as given, else by its extension; for a classifier a folder
    or tar is read as its training source was when that was a folder format, else as a folder of text
    files; for a tagger a folder is one of CoNLL files. A format the model's task cannot read is refused."""
    formats = catalog.task_named(recipe.task).input_formats
    fmt = given or _format_of(path, recipe, formats)
    if fmt not in formats:
        raise StageError(
            f"{path}: a {recipe.task} model cannot read --input-format {fmt}; give one of {', '.join(formats)}"
        )
    return fmt


def _format_of(path: str, recipe: Recipe, formats: tuple[str, ...]) -> str:
    if path == "-":
        return "lines"
    suffix = compressed.table_suffix(path).lstrip(".")  # data.csv.gz: csv
    if suffix in ("csv", "jsonl", "parquet"):
        return suffix
    if "conll" in formats and (f".{suffix}" in readers.CONLL_SUFFIXES or Path(path).is_dir()):
        return "conll"
    if Path(path).is_dir() or ".tar" in Path(path).name.lower() or suffix in ("tgz", "tar"):
        return recipe.source["format"] if recipe.source["format"] in FOLDER_FORMATS else "text_dir"
    raise StageError(f"{path}: cannot tell its format from the name; give --input-format ({', '.join(formats)})")


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


def _batch_table(rows: list[dict], results: list | np.ndarray, predictor: Predictor, schema: pa.Schema) -> pa.Table:
    task = predictor.task
    columns = {"id": [row["id"] for row in rows], "actual": [row[task.label_column] for row in rows]}
    columns |= task.output_columns(results, predictor.labels, rows)
    return pa.table(columns, schema=schema)


def score_rows(
    predictor: Predictor, batch: list[tuple[bool, dict]]
) -> tuple[list[dict], list | np.ndarray, list[dict]]:
    """Ingest's (kept, row) pairs through the model: (the rows scored, their results, the rows refused
    by ingest's rules or clean's, each with its reason and a detail worded for predict)."""
    kept = [row for ok, row in batch if ok]
    refused = [row for ok, row in batch if not ok]
    scored, probs, problems = predictor.score(kept)
    refused += [kept[i] | {"reason": reason, "detail": detail} for i, (reason, detail) in problems.items()]
    return [kept[i] for i in scored], probs, [row | {"detail": for_predict(row["detail"])} for row in refused]


def _batches(rows: Iterator, batch_rows: int) -> Iterator[list]:
    while batch := list(islice(rows, batch_rows)):
        yield batch


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
    text_column: str | None = None,
    label_column: str | None = None,
    id_column: str | None = None,
    batch_rows: int = BATCH_ROWS,
    progress: bool = True,
    max_reject_fraction: float = 1.0,
    engine: Engine = IN_PROCESS,
) -> dict:
    """Predictions for every record of `path` to `dest`, rejects to `rejects_dest`; returns the counts.
    Neither file is written when no row is predicted or more than `max_reject_fraction` are rejected.
    The text and label columns default to the task's (`Task.input_columns`, `Task.label_column`).
    The source is read and the outputs written here; each batch is scored on `engine`, whose workers
    each load their own copy of the predictor's model (one per GPU of a Ray cluster that has GPUs)."""
    task = predictor.task
    schema = output_schema(task, predictor.labels)
    if dest.suffix.lower() not in OUTPUT_FORMATS:
        raise StageError(f"{dest}: the output's extension chooses its format: .parquet, .jsonl or .csv")
    if dest.suffix.lower() == ".csv" and nested(schema):
        raise StageError(
            f"{dest}: a {task.name} model's predictions hold lists ({', '.join(nested(schema))}), which CSV "
            "cannot: write .parquet or .jsonl"
        )
    if rejects_dest.suffix.lower() != ".parquet" or rejects_dest.resolve() == dest.resolve():
        raise StageError(f"{rejects_dest}: the rejects file is a .parquet file beside the output, not the output")
    check_predict_input(path, fmt)
    fmt = input_format(path, predictor.recipe, fmt)
    if notice := kind_notice(fmt, predictor.recipe):
        print(notice, file=sys.stderr)
    p = predictor.recipe.ingest_params(
        path, fmt if fmt != "lines" else "csv", *default_columns(path, fmt, task, text_column, label_column, id_column)
    )
    count = ingest_shared.SourceCount()
    rules = row_rules.ROW_RULES[task.name](p, labelled=False)
    rows = _predict_rows(ingestion.ingest(_records(path, fmt, p, count), p, labelled=False, rules=rules))
    reasons: Counter[str] = Counter()
    with (
        prediction_sink(dest, schema) as sink,
        storage.parquet_sink(rejects_dest, storage.REJECT_SCHEMA) as rejects,
        tqdm(desc="predict", unit=" rows", disable=not progress, file=sys.stderr) as bar,
    ):
        for scored, probs, refused in engine.map_with(
            predictor, score_rows, _batches(rows, batch_rows), per_gpu=predictor.wants_gpu
        ):
            if scored:
                sink.write(_batch_table(scored, probs, predictor, schema))
            if refused:
                rejects.write(storage.rejects_table(refused, "predict"))
            reasons.update(row["reason"] for row in refused)
            bar.update(len(scored) + len(refused))  # every row of the batch
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
