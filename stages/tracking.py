"""MLflow tracking shared by the stages.

Default store: sqlite in the repo root (`DVC_ROOT` under `dvc exp run`, so temp experiment
workspaces do not lose their runs), artifacts beside it; `MLFLOW_TRACKING_URI` overrides it.
Each stage run carries the git commit and dirty state, the DVC experiment, package versions, every
param, and the DVC md5 of each input as its MLflow dataset digest (MLflow's own digest hashes only
the first rows). Evaluate logs into the train run that produced the model it scores, found by the
model's weights hash, so one run holds params, training curves, test metrics and the model.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from stages import io, provenance
from stages.params import Params, flatten

EXPERIMENT = os.environ.get("REPROLAB_EXPERIMENT", "reprolab")
MODEL_DIGEST_TAG = "reprolab.model_md5"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{provenance.repo_root() / 'mlflow.db'}"


def _mlflow():
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    if mlflow.get_experiment_by_name(EXPERIMENT) is None:
        location = None
        if tracking_uri().startswith("sqlite:"):
            # Absolute, beside the store: MLflow's default (./mlruns) would land in the cwd.
            location = (provenance.repo_root() / "mlartifacts").as_uri()
        mlflow.create_experiment(EXPERIMENT, artifact_location=location)
    mlflow.set_experiment(EXPERIMENT)
    return mlflow


def flat_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Nested metrics -> dotted numeric leaves (lists and text are not MLflow metrics)."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flat_metrics(value, f"{name}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[name.replace(" ", "_")] = float(value)
    return flat


def run_tags(stage: str) -> dict[str, str]:
    dirty = provenance.git_dirty_paths()
    tags = {
        "reprolab.stage": stage,
        "git.commit": provenance.git_commit() or "unknown",
        "git.dirty": str(bool(dirty)).lower(),
        **provenance.dvc_experiment(),
        **{f"version.{k}": v for k, v in provenance.package_versions().items()},
    }
    if dirty:
        tags["git.dirty_paths"] = ",".join(dirty)[:4900]
    return tags


def _log_inputs(mlflow, inputs: Mapping[str, Path]) -> None:
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    for context, path in inputs.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            source = resolve_dataset_source(Path(path).resolve().as_uri())
        dataset = MetaDataset(source=source, name=str(path), digest=io.file_md5(path))
        mlflow.log_input(dataset, context=context)


@contextlib.contextmanager
def stage_run(
    stage: str, params: Params, inputs: Mapping[str, Path] | None = None, run_id: str | None = None
) -> Iterator[Any]:
    """An MLflow run for one stage execution (or the existing run `run_id`, resumed)."""
    mlflow = _mlflow()
    with mlflow.start_run(run_id=run_id, run_name=None if run_id else stage) as run:
        if run_id is None:
            mlflow.set_tags(run_tags(stage))
            mlflow.log_params(flatten(params))
        if inputs:
            _log_inputs(mlflow, inputs)
        yield run


def log_outputs(mlflow, outputs: list[Path], prefix: str = "output") -> None:
    mlflow.set_tags({f"{prefix}.{path}": io.file_md5(path) for path in outputs if path.is_file()})


def log_stage(
    stage: str,
    params: Params,
    outputs: list[Path],
    metrics: Mapping[str, Any],
    inputs: Mapping[str, Path] | None = None,
) -> None:
    """Record a data stage: its params, inputs, output hashes and report."""
    with stage_run(stage, params, inputs):
        import mlflow

        mlflow.log_metrics(flat_metrics(metrics))
        log_outputs(mlflow, outputs)
        for path in outputs:
            if path.suffix == ".json":
                mlflow.log_artifact(str(path), artifact_path="reports")


def find_run_for_model(model_md5: str) -> str | None:
    """The latest train run whose saved weights have this md5."""
    mlflow = _mlflow()
    runs = mlflow.search_runs(
        filter_string=f"tags.`{MODEL_DIGEST_TAG}` = '{model_md5}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
        output_format="list",
    )
    return runs[0].info.run_id if runs else None


def log_model(mlflow, model_dir: Path) -> None:
    """The fine-tuned model as an MLflow transformers pipeline, reloadable offline.

    Requirements are given explicitly: MLflow's inference imports packages this project lacks.
    """
    from transformers import pipeline

    versions = provenance.package_versions()
    classifier = pipeline("text-classification", model=str(model_dir), device="cpu")
    mlflow.transformers.log_model(
        transformers_model=classifier,
        name="model",
        pip_requirements=[f"{pkg}=={versions[pkg]}" for pkg in ("torch", "transformers", "tokenizers")],
    )
