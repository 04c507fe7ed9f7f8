"""The trained model as an MLflow model: a pyfunc that scores raw records through `prediction.Predictor`
(so it cleans and truncates as the pipeline does), with its signature and an input example, registered
in the Model Registry (one registered model per MLflow experiment, one version per train run, tagged with
the commit and the digests of the data it was trained on). `mlflow models serve --env-manager local`
serves it; it loads offline.
"""

from __future__ import annotations

import math
from importlib import metadata
from pathlib import Path

import mlflow.pyfunc
import pandas as pd
import pyarrow as pa

from reprolab.data import validation
from reprolab.inference.prediction import Predictor, Recipe
from reprolab.records.tracking import EXPERIMENT, MODEL_DIGEST_TAG
from reprolab.tasks import catalog
from reprolab.tasks.base import Task

TEXT_COLUMN = "text"
REJECT_COLUMN = "reject"
# A task's output column types (Arrow) in the frame the pyfunc returns and in its MLflow signature.
_PANDAS_TYPES = {pa.string(): "string", pa.float64(): "Float64"}
_MLFLOW_TYPES = {pa.string(): "string", pa.float64(): "double"}
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
    """Input: a column `text`, each a record as the training source held it (a raw mail for a model
    trained on mails). Output: `predicted`, each class's probability, and `reject` (why a record could
    not be scored, as `reprolab predict` would reject it; null otherwise)."""

    def load_context(self, context) -> None:
        self.predictor = Predictor(Path(context.artifacts["model"]))

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        texts = model_input[TEXT_COLUMN].tolist() if isinstance(model_input, pd.DataFrame) else list(model_input)
        return predictions_frame(self.predictor, texts)


def predictions_frame(predictor: Predictor, texts: list) -> pd.DataFrame:
    """The task's prediction columns for each text (null where it was rejected) and the reject reason.

    Each text is validated by ingest's rules as `reprolab predict` validates a JSONL file's text field
    (a number is `wrong_type`, null `missing_text`, over the size limit `text_too_large`), then read as
    the model's training source held its records (a raw mail for a model trained on mails) and cleaned."""
    p = predictor.recipe.ingest_params("request", "jsonl", TEXT_COLUMN)
    matcher = validation.LabelMatcher(p)
    reasons: list[str | None] = [None] * len(texts)
    valid, rows = [], []
    for position, text in enumerate(texts):
        record = _request_record(position, text)
        problem = validation.validate(record, p, matcher, labelled=False)
        if problem:
            reasons[position] = problem[0]
        else:
            valid.append(position)
            rows.append({**record, "raw": record["text"].encode("utf-8"), "kind": predictor.recipe.kind})
    scored, probs, refused = predictor.score(rows)
    for index, (reason, _) in refused.items():
        reasons[valid[index]] = reason
    columns = predictor.task.output_columns(probs, predictor.labels)
    frame = pd.DataFrame(index=range(len(texts)))
    # Nullable columns: a rejected text's cells are null, which MLflow's server writes as JSON null (a
    # float column's NaN it writes as a bare NaN, which strict JSON parsers refuse).
    for name, kind in predictor.task.output_fields(predictor.labels):
        full = [None] * len(texts)
        for index, value in zip(scored, columns[name], strict=True):
            full[valid[index]] = value
        frame[name] = pd.Series(full, dtype=_PANDAS_TYPES[kind])
    frame[REJECT_COLUMN] = pd.Series(reasons, dtype="string")
    return frame


def _request_record(position: int, text) -> dict:
    """A request's cell as a record of an unlabelled JSONL file (pandas holds a missing cell as NaN)."""
    missing = text is None or text is pd.NA or (isinstance(text, float) and math.isnan(text))
    return {
        "id": str(position),
        "source": f"request:{position}",
        "group": "request",
        "label": None,
        "kind": "text",
        "text": None if missing else text,
        "checksum_status": "absent",
    }


def signature(task: Task, labels: list[str]):
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    outputs = [
        *[ColSpec(_MLFLOW_TYPES[kind], name, required=False) for name, kind in task.output_fields(labels)],
        ColSpec("string", REJECT_COLUMN, required=False),
    ]
    return ModelSignature(inputs=Schema([ColSpec("string", TEXT_COLUMN)]), outputs=Schema(outputs))


def log_model(mlflow, model_dir: Path) -> None:
    """Log the model folder as the active run's pyfunc model and register it as a new version of the
    model named after the experiment (a `tracking.ModelLogger`)."""
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
    tags = {key: run.data.tags[key] for key in ("git.commit", "git.dirty", MODEL_DIGEST_TAG) if key in run.data.tags}
    tags |= {f"data.{item.dataset.name}": item.dataset.digest for item in run.inputs.dataset_inputs}
    mlflow.register_model(info.model_uri, EXPERIMENT, tags=tags)
