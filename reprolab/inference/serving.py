"""The trained model as an MLflow model: a pyfunc that scores raw records through `prediction.Predictor`
(so it cleans and truncates as the pipeline does), with its signature and an input example, registered
in the Model Registry (one registered model per MLflow experiment, one version per train run, tagged with
the commit and the digests of the data it was trained on). `mlflow models serve --env-manager local`
serves it; it loads offline.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd

from reprolab.inference.prediction import Predictor, Recipe, probability_column
from reprolab.records.tracking import EXPERIMENT, MODEL_DIGEST_TAG

TEXT_COLUMN = "text"
REJECT_COLUMN = "reject"
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
    not be scored, as clean would reject it; null otherwise)."""

    def load_context(self, context) -> None:
        self.predictor = Predictor(Path(context.artifacts["model"]))

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        texts = model_input[TEXT_COLUMN].tolist() if isinstance(model_input, pd.DataFrame) else list(model_input)
        return predictions_frame(self.predictor, texts)


def predictions_frame(predictor: Predictor, texts: list[str]) -> pd.DataFrame:
    scored, probs, rejected = predictor.score([predictor.text_record(str(text)) for text in texts])
    labels = predictor.labels
    full = np.full((len(texts), len(labels)), np.nan)
    full[scored] = probs
    predicted = np.array([None] * len(texts), dtype=object)
    predicted[scored] = [labels[i] for i in probs.argmax(axis=1)]
    return pd.DataFrame(
        {
            "predicted": predicted,
            **{probability_column(label): full[:, i] for i, label in enumerate(labels)},
            REJECT_COLUMN: [rejected[i][0] if i in rejected else None for i in range(len(texts))],
        }
    )


def signature(labels: list[str]):
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    outputs = [
        ColSpec("string", "predicted", required=False),
        *[ColSpec("double", probability_column(label), required=False) for label in labels],
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
        signature=signature(recipe.labels),
        input_example=pd.DataFrame({TEXT_COLUMN: [_EXAMPLE[recipe.kind]]}),
        pip_requirements=[f"{pkg}=={metadata.version(pkg)}" for pkg in REQUIREMENTS],
    )
    run = mlflow.get_run(mlflow.active_run().info.run_id)
    tags = {key: run.data.tags[key] for key in ("git.commit", "git.dirty", MODEL_DIGEST_TAG) if key in run.data.tags}
    tags |= {f"data.{item.dataset.name}": item.dataset.digest for item in run.inputs.dataset_inputs}
    mlflow.register_model(info.model_uri, EXPERIMENT, tags=tags)
