"""`reprolab trace`: what a tracked result came from, following each input back to the run that wrote it."""

from __future__ import annotations

from typing import Any

from reprolab.errors import StageError
from reprolab.records.tracking import MODEL_DIGEST_TAG, TEST_METRICS_TAG, connect, tracking_uri


def trace(run_id: str) -> dict[str, Any]:
    """What a tracked result came from, following each input back to the stage run that wrote it."""
    mlflow = connect()
    try:
        run = mlflow.get_run(run_id)
    except Exception as exc:  # noqa: BLE001 - MLflow raises its own types for unknown ids
        raise StageError(f"no MLflow run {run_id!r} in {tracking_uri()}") from exc
    tags = run.data.tags
    inputs = []
    for item in run.inputs.dataset_inputs:
        name, digest = item.dataset.name, item.dataset.digest
        producer = mlflow.search_runs(
            experiment_ids=[run.info.experiment_id],
            filter_string=f"tags.`output.{name}` = '{digest}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
            output_format="list",
        )
        inputs.append(
            {
                "context": next((t.value for t in item.tags if t.key == "mlflow.data.context"), ""),
                "path": name,
                "md5": digest,
                "produced_by": (
                    f"{producer[0].data.tags.get('reprolab.stage')} run {producer[0].info.run_id}"
                    if producer
                    else "not found in this store"
                ),
            }
        )
    return {
        "run_id": run.info.run_id,
        "stage": tags.get("reprolab.stage"),
        "status": run.info.status,
        "commit": tags.get("git.commit"),
        "dirty": tags.get("git.dirty"),
        "dirty_paths": tags.get("git.dirty_paths", ""),
        "dvc_experiment": tags.get("dvc.exp_name", ""),
        "dvc_baseline": tags.get("dvc.exp_baseline_rev", ""),
        "model_md5": tags.get(MODEL_DIGEST_TAG, ""),
        "test_metrics_from": tags.get(TEST_METRICS_TAG, ""),
        "inputs": inputs,
        "outputs": {k[len("output.") :]: v for k, v in tags.items() if k.startswith("output.")},
        "params": dict(sorted(run.data.params.items())),
        "metrics": dict(sorted(run.data.metrics.items())),
        "versions": {k[len("version.") :]: v for k, v in sorted(tags.items()) if k.startswith("version.")},
    }


def format_trace(info: dict[str, Any]) -> str:
    lines = [
        f"run {info['run_id']} ({info['stage']}, {info['status']})",
        f"commit:  {info['commit']}  dirty: {info['dirty']} {info['dirty_paths']}".rstrip(),
    ]
    if info["dvc_experiment"]:
        lines.append(f"dvc experiment: {info['dvc_experiment']} (baseline {info['dvc_baseline']})")
    if info["model_md5"]:
        lines.append(f"model:   models/model/model.safetensors md5 {info['model_md5']}")
    if info["test_metrics_from"]:
        lines.append(f"test metrics from: {info['test_metrics_from']}")
    lines.append("inputs (DVC md5):")
    lines += [f"  {i['context']:<16} {i['path']}  {i['md5']}  <- {i['produced_by']}" for i in info["inputs"]]
    if info["outputs"]:
        lines.append("outputs (DVC md5):")
        lines += [f"  {path}  {md5}" for path, md5 in sorted(info["outputs"].items())]
    lines.append("params:")
    lines += [f"  {k} = {v}" for k, v in info["params"].items()]
    lines.append("metrics:")
    lines += [f"  {k} = {v:.6g}" for k, v in info["metrics"].items()]
    lines.append("versions: " + ", ".join(f"{k}=={v}" for k, v in info["versions"].items()))
    return "\n".join(lines)
