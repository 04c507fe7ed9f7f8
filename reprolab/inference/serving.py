"""The trained model as an MLflow model: a pyfunc that scores raw records through `prediction.Predictor`
(so it cleans and encodes as the pipeline does), with its signature and an input example, registered in
the Model Registry (one registered model per MLflow experiment, one version per train run, tagged with
the commit and the digests of the data it was trained on). `mlflow models serve --env-manager local`
serves it; it loads offline. A classifier takes a column `text`; a tagger a column `tokens` (words) or
`text` (a raw text its recipe's pre-tokenizer splits), row by row, and answers its words' tags and the
entity spans, as `reprolab predict` writes them.
"""

from __future__ import annotations

import math
from importlib import metadata
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pyarrow as pa

from reprolab.data import row_rules
from reprolab.inference.prediction import Predictor, Recipe
from reprolab.records.tracking import MODEL_DIGEST_TAG, REGISTERED_NAME_TAG, TEACHER_RUN_TAG, experiment_name
from reprolab.tasks import catalog
from reprolab.tasks.base import Task

TEXT_COLUMN = "text"
REJECT_COLUMN = "reject"
# A task's flat output column types (Arrow) in the frame the pyfunc returns; lists stay Python objects.
_PANDAS_TYPES = {pa.string(): "string", pa.float64(): "Float64"}
# What the model needs at load time: the packages the prediction path imports.
REQUIREMENTS = (
    "torch",
    "transformers",
    "tokenizers",
    "safetensors",
    "numpy",
    "pandas",
    "pyarrow",
    "pydantic",
    "datasketch",
    "selectolax",
    "scikit-learn",
    "charset-normalizer",
    "pyyaml",
    "tqdm",
)
_EXAMPLE = {
    "mail": "Subject: Minutes of Tuesday's meeting\n\nHi all, the minutes are attached; the next meeting "
    "is on Friday at 10.\n\nThanks, Anna",
    "text": "Minutes of Tuesday's meeting: the next meeting is on Friday at 10.",
}


class ReprolabClassifier(mlflow.pyfunc.PythonModel):
    """Input: the task's columns (a classifier's `text`: each a record as the training source held it, a
    raw mail for a model trained on mails; a tagger's `tokens` or `text`). Output: the task's prediction
    columns (`Task.output_fields`) and `reject` (why a record could not be scored, as `reprolab predict`
    would reject it; null otherwise). The name is the first task's: logged models refer to it."""

    def load_context(self, context) -> None:
        self.predictor = Predictor(Path(context.artifacts["model"]))

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return predictions_frame(self.predictor, model_input)


def predictions_frame(predictor: Predictor, model_input: pd.DataFrame | list) -> pd.DataFrame:
    """The task's prediction columns for each request row (null where it was rejected) and the reject reason.

    Each row's input is its first non-missing cell of the task's `input_columns` (a tagger's words, with
    the text they came from when the row gives it too), validated by ingest's
    rules as `reprolab predict` validates a JSONL file's field (a number is `wrong_type`, null
    `missing_text`, over the size limit `text_too_large`), then read as the model's training source held
    its records (a raw mail for a model trained on mails) and cleaned."""
    task = predictor.task
    if not isinstance(model_input, pd.DataFrame):
        model_input = pd.DataFrame({TEXT_COLUMN: list(model_input)})
    columns = [name for name in task.input_columns if name in model_input.columns]
    p = predictor.recipe.ingest_params("request", "jsonl", columns[0] if columns else task.input_columns[0])
    rules = row_rules.ROW_RULES[task.name](p, labelled=False)
    size = len(model_input)
    reasons: list[str | None] = [None] * size
    valid, rows = [], []
    for position in range(size):
        cells = [_cell(model_input[name].iloc[position]) for name in columns]
        given = [cell for cell in cells if cell is not None]
        record = _request_record(position, given[0] if given else None)
        if len(given) > 1:  # a tagger's words with the text they came from: offsets in that text
            record["words_text"] = given[1]
        problem = rules.problem(record)
        if problem:
            reasons[position] = problem[0]
        else:
            valid.append(position)
            rows.append(rules.row(record) | {"kind": predictor.recipe.kind})  # a mail, for a model of mails
    scored, results, refused = predictor.score(rows)
    for index, (reason, _) in refused.items():
        reasons[valid[index]] = reason
    values = task.output_columns(results, predictor.labels, [rows[i] for i in scored])
    frame = pd.DataFrame(index=range(size))
    # Nullable columns: a rejected row's cells are null, which MLflow's server writes as JSON null (a
    # float column's NaN it writes as a bare NaN, which strict JSON parsers refuse).
    for name, kind in task.output_fields(predictor.labels):
        full = [None] * size
        for index, value in zip(scored, values[name], strict=True):
            full[valid[index]] = value
        frame[name] = pd.Series(full, dtype=_PANDAS_TYPES.get(kind, object))
    frame[REJECT_COLUMN] = pd.Series(reasons, dtype="string")
    return frame


def _cell(value):
    """A request's cell as JSON gave it: None where missing (pandas holds a missing cell as NaN or NA),
    a list where MLflow's schema made an array of it."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def _request_record(position: int, value) -> dict:
    """A request's input as a record of an unlabelled JSONL file."""
    return {
        "id": str(position),
        "source": f"request:{position}",
        "group": "request",
        "label": None,
        "kind": "text",  # validated as a JSONL file's text field is
        "text": value,
        "checksum_status": "absent",
    }


def _mlflow_type(kind: pa.DataType):
    """The MLflow signature type of an Arrow type of the prediction columns."""
    from mlflow.types.schema import Array, Object, Property

    if pa.types.is_list(kind):
        return Array(_mlflow_type(kind.value_type))
    if pa.types.is_struct(kind):
        return Object([Property(field.name, _mlflow_type(field.type)) for field in kind])
    return {pa.string(): "string", pa.float64(): "double", pa.int64(): "long"}[kind]


def signature(task: Task, labels: list[str]):
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema
    from mlflow.types.schema import AnyType

    alone = len(task.input_columns) == 1  # else each row gives one of them
    # The text column is text; any other (a tagger's list of words) is declared as any type: MLflow's
    # check of an array column casts numbers in it to text and refuses a whole request where a row
    # lacks it, where the pyfunc's own rules, predict's, reject such a row with its reason.
    inputs = [
        ColSpec("string" if name == TEXT_COLUMN else AnyType(), name, required=alone) for name in task.input_columns
    ]
    outputs = [
        *[ColSpec(_mlflow_type(kind), name, required=False) for name, kind in task.output_fields(labels)],
        ColSpec("string", REJECT_COLUMN, required=False),
    ]
    return ModelSignature(inputs=Schema(inputs), outputs=Schema(outputs))


def log_model(mlflow, model_dir: Path) -> None:
    """Log the model folder as the active run's pyfunc model and register it as a new version of the
    model the run's tags name (a student's: `<experiment>-student`), else of the one named after the
    experiment (a `tracking.ModelLogger`)."""
    recipe = Recipe.read(model_dir)
    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=ReprolabClassifier(),
        artifacts={"model": str(model_dir)},
        code_paths=[str(Path(__file__).parents[1])],  # the whole reprolab package
        signature=signature(catalog.task_named(recipe.task), recipe.labels),
        input_example=pd.DataFrame({TEXT_COLUMN: [_EXAMPLE[recipe.kind]]}),
        pip_requirements=[f"{pkg}=={metadata.version(pkg)}" for pkg in REQUIREMENTS],
    )
    run = mlflow.get_run(mlflow.active_run().info.run_id)
    copied = ("git.commit", "git.dirty", MODEL_DIGEST_TAG, TEACHER_RUN_TAG)
    tags = {key: run.data.tags[key] for key in copied if key in run.data.tags}
    tags |= {f"data.{item.dataset.name}": item.dataset.digest for item in run.inputs.dataset_inputs}
    mlflow.register_model(info.model_uri, run.data.tags.get(REGISTERED_NAME_TAG, experiment_name()), tags=tags)
