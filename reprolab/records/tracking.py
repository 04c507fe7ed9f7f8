"""MLflow tracking for the stages and the `reprolab` verbs.

Default store: sqlite in the repo root (`DVC_ROOT` under `dvc exp run`, so temp experiment
workspaces do not lose their runs), artifacts beside it; `MLFLOW_TRACKING_URI` overrides it. Each DVC
project of the repository (the root's pipeline, examples/ner) has its own experiment and registered
model there (`experiment_name`).
One pipeline execution (a `dvc repro`, or one experiment of `dvc exp run`) is one parent run, named
after the command and spanning it, with every param; each stage it runs is a nested child run from the
stage process's start to its end. Whatever DVC skipped, the parent holds the test metrics of the model
the execution leaves in the workspace (`StageRun.summarise_pipeline`) and names the evaluate run that
computed them (`reprolab.test_metrics_run`); when DVC skipped evaluate and the store has no run for
those weights, an evaluate child made from the stage's committed outputs stands in for it. Each stage
run carries the git commit and dirty state, the DVC experiment, package versions, every param, and the
DVC md5 of each input as its MLflow dataset digest (MLflow's own digest hashes only the first rows).
The train run holds the training curves and the model; the evaluate run holds the test metrics and
figures and names the train run of the model it scored (`reprolab.train_run_id`, found by the weights' hash).

A tracking outage never costs a run: `StageRun` writes through to MLflow while it answers and
otherwise keeps the whole record in a local spool (`.reprolab/spool/`), which `reprolab replay`
sends to the store later.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from reprolab import paths, storage
from reprolab.params import Params
from reprolab.records import provenance

MODEL_DIGEST_TAG = "reprolab.model_md5"
PIPELINE_TAG = "reprolab.pipeline"  # on the parent run: which DVC command execution it stands for
TRAIN_RUN_TAG = "reprolab.train_run_id"  # on an evaluate run: the train run of the model it scored
TEACHER_RUN_TAG = "reprolab.teacher_run_id"  # on a distill run and its model version: the teacher's train run
REGISTERED_NAME_TAG = "reprolab.registered_model"  # the registered model a run's model is a version of
# On the parent run: the evaluate run whose test metrics it copies.
TEST_METRICS_TAG = "reprolab.test_metrics_run"
# The UI opens an experiment of this kind on its runs table, not on the GenAI overview (traces, prompts).
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


def experiment_name() -> str:
    """The MLflow experiment, and registered model, of the project being run: REPROLAB_EXPERIMENT, else
    `reprolab` for the repository's root pipeline and `reprolab-<folder>` for a project below it
    (reprolab-examples-ner), so that a classifier's and a tagger's runs and model versions stay apart."""
    if os.environ.get("REPROLAB_EXPERIMENT"):
        return os.environ["REPROLAB_EXPERIMENT"]
    project = provenance.project()
    return "reprolab" if project == "." else "reprolab-" + project.replace("/", "-")


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{provenance.repo_root() / 'mlflow.db'}"


def spool_dir() -> Path:
    return provenance.repo_root() / ".reprolab" / "spool"


def connect():
    """The mlflow module pointed at the store and the experiment (created on first use)."""
    import mlflow

    uri = tracking_uri()
    chosen = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    # mlflow mirrors the URI into MLFLOW_TRACKING_URI; put back what the user chose, so that a later call
    # for another repository in this process (a notebook, the tests) resolves that repository's store.
    if chosen is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    experiment = mlflow.get_experiment_by_name(experiment_name())
    if experiment is None:
        location = None
        if uri.startswith("sqlite:"):
            # Absolute, beside the store: MLflow's default (./mlruns) would land in the cwd.
            location = (provenance.repo_root() / "mlartifacts").as_uri()
        mlflow.create_experiment(experiment_name(), artifact_location=location, tags=EXPERIMENT_TAGS)
    elif any(experiment.tags.get(key) != value for key, value in EXPERIMENT_TAGS.items()):
        for key, value in EXPERIMENT_TAGS.items():  # an experiment made before the tag
            mlflow.MlflowClient().set_experiment_tag(experiment.experiment_id, key, value)
    mlflow.set_experiment(experiment_name())
    return mlflow


# MLflow takes word characters, `.`, `-`, space and `/` in names (also `:` off Windows); spaces are
# written as `_` here, and a slash in a key would read as a path.
_METRIC_NAME_REFUSED = re.compile(r"[^\w.\-]")


def flat_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Nested metrics -> dotted numeric leaves (lists and text are not MLflow metrics). Keys come from
    data too (class names, skip rules): a character MLflow refuses in a name, or a slash, becomes `_`."""
    flat = storage.flatten(metrics, numbers_only=True)
    return {prefix + _METRIC_NAME_REFUSED.sub("_", name): float(value) for name, value in flat.items()}


def mlflow_params(params: Params) -> dict[str, str]:
    """Dotted keys -> string values, for MLflow (which caps a param value at 250 characters)."""
    flat = {key: "null" if value is None else str(value) for key, value in storage.flatten(params.model_dump()).items()}
    return {key: text if len(text) <= 250 else text[:240] + "...[cut]" for key, text in flat.items()}


def run_tags(stage: str) -> dict[str, str]:
    dirty = provenance.git_dirty_paths()
    tags = {
        "reprolab.stage": stage,
        "git.commit": provenance.git_commit() or "unknown",
        "git.dirty": str(bool(dirty)).lower(),
        **provenance.dvc_experiment(),
        **{f"cpu.{k}": v for k, v in provenance.cpu_kernels().items()},
        **{f"version.{k}": v for k, v in provenance.package_versions().items()},
    }
    if dirty:
        tags["git.dirty_paths"] = ",".join(dirty)[:4900]
    return tags


def _dataset(path: str, digest: str):
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        source = resolve_dataset_source(Path(path).resolve().as_uri())
    return MetaDataset(source=source, name=path, digest=digest)


def pipeline_parent(
    mlflow, pipeline: Mapping[str, Any], tags: Mapping[str, str], params: Mapping[str, str] | None = None
) -> str:
    """The parent run of a pipeline execution: found by its key, else created, starting when the DVC
    command started, with every param (one execution runs under one params.yaml)."""
    client = mlflow.MlflowClient()
    experiment_id = mlflow.get_experiment_by_name(experiment_name()).experiment_id
    found = client.search_runs(
        [experiment_id], filter_string=f"tags.`{PIPELINE_TAG}` = '{pipeline['key']}'", max_results=1
    )
    if found:
        return found[0].info.run_id
    name = " ".join([pipeline["command"], *([tags["dvc.exp_name"]] if tags.get("dvc.exp_name") else [])])
    run = client.create_run(
        experiment_id,
        start_time=pipeline["start_ms"],
        run_name=name,
        tags={**tags, "reprolab.stage": "pipeline", PIPELINE_TAG: pipeline["key"]},
    )
    _log_params(client, run.info.run_id, params or {})
    return run.info.run_id


def _log_params(client, run_id: str, params: Mapping[str, str]) -> None:
    from mlflow.entities import Param

    items = [Param(key, value) for key, value in params.items()]
    for start in range(0, len(items), 100):  # MLflow's cap on params per batch
        client.log_batch(run_id, params=items[start : start + 100])


def extend_parent(mlflow, parent_id: str, status: str, end_ms: int) -> None:
    """The parent ends with its latest-ending child, in that child's status."""
    client = mlflow.MlflowClient()
    if end_ms >= (client.get_run(parent_id).info.end_time or 0):
        client.set_terminated(parent_id, status, end_time=end_ms)


def _begin(mlflow, record: Mapping[str, Any]):
    """(active run, parent run id or None) for a stage's record: the run it resumes (a resumed train run
    stays where it began), else a new run from the stage process's start, nested under its pipeline's."""
    if record["resume_run_id"]:
        return mlflow.start_run(run_id=record["resume_run_id"]), None
    parent_id = (
        pipeline_parent(mlflow, record["pipeline"], record.get("pipeline_tags", {}), record.get("params"))
        if record.get("pipeline")
        else None
    )
    experiment_id = mlflow.get_experiment_by_name(experiment_name()).experiment_id
    created = mlflow.MlflowClient().create_run(
        experiment_id,
        start_time=record.get("start_ms") or int(time.time() * 1000),
        run_name=record["stage"],
        tags={"mlflow.parentRunId": parent_id} if parent_id else {},
    )
    return mlflow.start_run(run_id=created.info.run_id), parent_id


# How a model folder becomes the run's MLflow model: (mlflow module, model folder) -> None. The caller
# gives it (`reprolab.inference.serving.log_model`), so the stages that never log a model do not run its code.
ModelLogger = Callable[[Any, Path], None]


class StageRun:
    """One stage's MLflow run that survives a tracking outage.

    Every call is recorded locally and written through to MLflow. The first MLflow failure (server
    down, sqlite locked) switches the run to offline: the user is told, and at `close()` the whole
    record, artifacts included, goes to the spool for `reprolab replay`.
    """

    def __init__(self, stage: str, record: dict[str, Any] | None = None):
        self.stage = stage
        self.record = record or {
            "stage": stage,
            "resume_run_id": None,
            "tags": {},
            "params": {},
            "metrics": [],
            "inputs": [],
            "artifacts": [],
            "model_dir": None,
            "start_ms": provenance.process_start_ms(),
            "end_ms": None,
            "status": None,
            "pipeline": provenance.pipeline_execution(),
            "pipeline_tags": {},
            "pipeline_summary": None,
        }
        self.spool = spool_dir() / f"{time.strftime('%Y%m%dT%H%M%S')}-{stage}-{uuid.uuid4().hex[:8]}"
        self.mlflow = None
        self.run_id: str | None = None
        self.parent_id: str | None = None
        self.offline_reason: str | None = None

    @classmethod
    def start(
        cls,
        stage: str,
        params: Params | None = None,
        inputs: Mapping[str, Path] | None = None,
        resume_run_id: str | None = None,
    ) -> StageRun:
        run = cls(stage)
        run.record["resume_run_id"] = resume_run_id
        if run.record["pipeline"]:
            run.record["pipeline_tags"] = run_tags("pipeline")
        if resume_run_id is None and params is not None:
            run.record["params"] = mlflow_params(params)  # the parent, created on opening, takes them too
        run._call(run._open)
        if resume_run_id is None:
            run.set_tags(run_tags(stage))
            if params is not None:
                run.log_params(run.record["params"])
        for context, path in (inputs or {}).items():
            run.log_input(str(path), storage.file_md5(path), context)
        return run

    def _open(self) -> None:
        self.mlflow = connect()
        active, self.parent_id = _begin(self.mlflow, self.record)
        self.run_id = active.info.run_id

    def _call(self, action, *args) -> None:
        if self.offline_reason is not None:
            return
        try:
            action(*args)
        except Exception as exc:  # noqa: BLE001 - any store failure means: keep the record locally
            self.offline_reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
            print(
                f"tracking: WARNING the MLflow store {tracking_uri()} failed ({self.offline_reason}). "
                f"The stage goes on; its record is kept in {self.spool} - send it later with "
                "`reprolab replay`.",
                file=sys.stderr,
            )

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self.record["tags"].update(tags)
        self._call(lambda: self.mlflow.set_tags(dict(tags)))

    def log_params(self, params: Mapping[str, str]) -> None:
        self.record["params"].update(params)
        self._call(lambda: self.mlflow.log_params(dict(params)))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        now = int(time.time() * 1000)
        self.record["metrics"] += [[k, float(v), step, now] for k, v in metrics.items()]
        self._call(lambda: self.mlflow.log_metrics(dict(metrics), step=step))

    def log_input(self, path: str, digest: str, context: str) -> None:
        self.record["inputs"].append({"path": path, "digest": digest, "context": context})
        self._call(lambda: self.mlflow.log_input(_dataset(path, digest), context=context))

    def log_artifact(self, path: Path, artifact_path: str) -> None:
        self.record["artifacts"].append([str(path), artifact_path])
        self._call(lambda: self.mlflow.log_artifact(str(path), artifact_path=artifact_path))

    def log_outputs(self, outputs: list[Path], prefix: str = "output") -> None:
        self.set_tags({f"{prefix}.{path}": storage.file_md5(path) for path in outputs if path.is_file()})

    def log_model(self, model_dir: Path, log: ModelLogger) -> None:
        self.record["model_dir"] = str(model_dir)
        self._call(lambda: log(self.mlflow, model_dir))

    def digest_of(self, path: Path) -> str:
        """The md5 this run logged for an input, else the file's md5 now."""
        logged = [item["digest"] for item in self.record["inputs"] if item["path"] == str(path)]
        return logged[0] if logged else storage.file_md5(path)

    def summarise_pipeline(self, metrics_file: Path, weights_md5: str) -> None:
        """Give the parent run the test metrics in `metrics_file` when they scored the weights with this
        md5 (metrics.json names the weights it scored), and the evaluate run that computed them. A `dvc
        repro` that skips evaluate (its model came out byte-identical) still gets an evaluate child: one
        made from the outputs dvc.lock holds for that stage (`_record_skipped_evaluate`)."""
        if not self.record["pipeline"] or not metrics_file.is_file():
            return
        metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
        if metrics.get("weights_md5") != weights_md5:
            return  # they scored other weights: evaluate has yet to run on these
        self.record["pipeline_summary"] = {
            "metrics": flat_metrics(metrics, prefix="test."),
            "weights_md5": weights_md5,
            "evaluate_tags": run_tags("evaluate"),
            "evaluate_artifacts": [[str(path), str(path.parent)] for path in stage_output_files("evaluate")],
        }
        self._call(lambda: _summarise_parent(self.mlflow, self.parent_id, self.record))

    def close(self, status: str = "FINISHED") -> None:
        self.record["end_ms"], self.record["status"] = int(time.time() * 1000), status

        def end() -> None:
            self.mlflow.end_run(status=status)
            # At the recorded end, as a replayed run ends: end_run's own clock may be a millisecond later,
            # and the parent, extended to the recorded end, would end before its last child.
            self.mlflow.MlflowClient().set_terminated(self.run_id, status, end_time=self.record["end_ms"])
            if self.parent_id:
                extend_parent(self.mlflow, self.parent_id, status, self.record["end_ms"])

        self._call(end)
        if self.offline_reason is not None:
            self._write_spool()

    def _write_spool(self) -> None:
        """The record plus copies of its artifacts and model, so later edits cannot change them."""
        files = self.spool / "files"
        files.mkdir(parents=True, exist_ok=True)
        summary = self.record["pipeline_summary"] or {}
        for artifacts in (self.record["artifacts"], summary.get("evaluate_artifacts", [])):
            for i, (path, artifact_path) in enumerate(artifacts):
                copy = files / f"{uuid.uuid4().hex[:8]}-{Path(path).name}"
                shutil.copy2(path, copy)
                artifacts[i] = [str(copy), artifact_path]
        if self.record["model_dir"]:
            copy = files / "model"
            shutil.copytree(self.record["model_dir"], copy)
            self.record["model_dir"] = str(copy)
        self.record["offline_reason"] = self.offline_reason
        storage.write_json(self.record, self.spool / "record.json")

    def __enter__(self) -> StageRun:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close("FINISHED" if exc_type is None else "FAILED")


def log_stage(
    stage: str,
    params: Params,
    outputs: list[Path],
    metrics: Mapping[str, Any],
    inputs: Mapping[str, Path] | None = None,
    test_metrics_of: tuple[Path, Path] | None = None,
) -> None:
    """Record a data stage: its params, inputs, output hashes and report (and, given (metrics file,
    weights), the pipeline's test metrics: `StageRun.summarise_pipeline`)."""
    with StageRun.start(stage, params, inputs) as run:
        run.log_metrics(flat_metrics(metrics))
        run.log_outputs(outputs)
        for path in outputs:
            if path.suffix == ".json":
                run.log_artifact(path, "reports")
        if test_metrics_of:
            metrics_file, weights = test_metrics_of
            run.summarise_pipeline(metrics_file, run.digest_of(weights))


def stage_output_files(stage: str) -> list[Path]:
    """The files of a stage's outputs as dvc.lock records them (a folder output: the files in it)."""
    import yaml

    lock = Path("dvc.lock")  # the stage's workspace (a temp one under `dvc exp run --temp`), not DVC_ROOT
    if not lock.is_file():
        return []
    outs = ((yaml.safe_load(lock.read_text(encoding="utf-8")) or {}).get("stages", {}).get(stage) or {}).get("outs", [])
    files = []
    for out in outs:
        path = Path(out["path"])
        files += (
            sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path] if path.is_file() else []
        )
    return files


def _log_metric_batches(client, run_id: str, metrics) -> None:
    for start in range(0, len(metrics), 1000):  # MLflow's cap on metrics per batch
        client.log_batch(run_id, metrics=metrics[start : start + 1000])


def _summarise_parent(mlflow, parent_id: str | None, record: Mapping[str, Any]) -> None:
    from mlflow.entities import Metric

    if parent_id is None:
        return
    summary = record["pipeline_summary"]
    client = mlflow.MlflowClient()
    experiment_id = client.get_run(parent_id).info.experiment_id
    if record["stage"] == "evaluate":  # it ran after all: a stand-in an earlier stage made is wrong
        children = client.search_runs([experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'")
        for child in children:
            if SKIPPED_TAG in child.data.tags:
                client.delete_run(child.info.run_id)
    evaluated = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{MODEL_DIGEST_TAG}` = '{summary['weights_md5']}' and tags.`reprolab.stage` = 'evaluate'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    source = evaluated[0].info.run_id if evaluated else _record_skipped_evaluate(mlflow, parent_id, record)
    now = int(time.time() * 1000)
    _log_metric_batches(client, parent_id, [Metric(key, value, now, 0) for key, value in summary["metrics"].items()])
    client.set_tag(parent_id, TEST_METRICS_TAG, source)


# On an evaluate run that DVC did not run: where its metrics and files came from.
SKIPPED_TAG = "reprolab.evaluate.skipped"


def _record_skipped_evaluate(mlflow, parent_id: str, record: Mapping[str, Any]) -> str:
    """An evaluate child for an execution whose model came out with the weights the committed test
    metrics scored, so that DVC skips evaluate: the run holds the stage's outputs as dvc.lock lists them
    and says so; it starts and ends now. Should evaluate run after all (other inputs of it changed), its
    own run deletes this stand-in (`_summarise_parent`)."""
    from mlflow.entities import Metric

    summary = record["pipeline_summary"]
    client = mlflow.MlflowClient()
    train_run = find_run_for_model(summary["weights_md5"])
    run_id = client.create_run(
        client.get_run(parent_id).info.experiment_id,
        run_name="evaluate",
        tags={
            **summary["evaluate_tags"],
            "mlflow.parentRunId": parent_id,
            MODEL_DIGEST_TAG: summary["weights_md5"],
            SKIPPED_TAG: "DVC skipped the stage: these weights are the ones its committed outputs scored",
            **({TRAIN_RUN_TAG: train_run} if train_run else {}),
        },
    ).info.run_id
    _log_params(client, run_id, record["params"])
    now = int(time.time() * 1000)
    _log_metric_batches(client, run_id, [Metric(key, value, now, 0) for key, value in summary["metrics"].items()])
    for path, artifact_path in summary["evaluate_artifacts"]:
        client.log_artifact(run_id, path, artifact_path=artifact_path)
    client.set_terminated(run_id, "FINISHED")
    return run_id


def find_run_for_model(model_md5: str, stage: str = "train") -> str | None:
    """The latest run of `stage` (train, or distill for a student) whose saved weights have this md5
    (None when the store is unreachable)."""
    try:
        mlflow = connect()
        runs = mlflow.search_runs(
            filter_string=f"tags.`{MODEL_DIGEST_TAG}` = '{model_md5}' and tags.`reprolab.stage` = '{stage}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
            output_format="list",
        )
    except Exception:  # noqa: BLE001 - the evaluate record then goes to the spool on its own
        return None
    return runs[0].info.run_id if runs else None


def latest_evaluation(train_run_id: str):
    """The latest evaluate run that scored this train run's model, or None."""
    mlflow = connect()
    runs = mlflow.search_runs(
        filter_string=f"tags.`{TRAIN_RUN_TAG}` = '{train_run_id}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
        output_format="list",
    )
    return runs[0] if runs else None


# The stage whose run trained the model each evaluate stage scores (the teacher's, the student's).
TRAINER_OF_EVALUATED = {files.stage("evaluate"): files.trained_by for files in paths.SCORED_MODELS.values()}


def replay(log_model: ModelLogger, spool: Path | None = None) -> list[str]:
    """Send every spooled record to the tracking store, each under its pipeline's parent run with its
    own start and end, a model through `log_model`; each one sent is removed from the spool."""
    spool = spool or spool_dir()
    sent = []
    for record_file in sorted(spool.glob("*/record.json")):
        record = json.loads(record_file.read_text(encoding="utf-8"))
        tags = {**record["tags"], f"reprolab.replayed.{record['stage']}": record_file.parent.name}
        trained_by = TRAINER_OF_EVALUATED.get(record["stage"])
        if trained_by and TRAIN_RUN_TAG not in tags and tags.get(MODEL_DIGEST_TAG):
            train_run = find_run_for_model(tags[MODEL_DIGEST_TAG], trained_by)
            tags.update({TRAIN_RUN_TAG: train_run} if train_run else {})
        mlflow = connect()
        resume = record["resume_run_id"]
        # Joining an existing run adds to it; its own tags and params stay as they are.
        existing = mlflow.get_run(resume).data if resume else None
        active, parent_id = _begin(mlflow, record)
        with active:
            mlflow.set_tags({k: v for k, v in tags.items() if existing is None or k not in existing.tags})
            params = {k: v for k, v in record["params"].items() if existing is None or k not in existing.params}
            if params:
                mlflow.log_params(params)
            from mlflow.entities import Metric

            metrics = [Metric(key, value, timestamp, step or 0) for key, value, step, timestamp in record["metrics"]]
            _log_metric_batches(mlflow.MlflowClient(), active.info.run_id, metrics)
            for item in record["inputs"]:
                mlflow.log_input(_dataset(item["path"], item["digest"]), context=item["context"])
            for path, artifact_path in record["artifacts"]:
                mlflow.log_artifact(path, artifact_path=artifact_path)
            if record["model_dir"]:
                log_model(mlflow, Path(record["model_dir"]))
            if record.get("pipeline_summary"):
                _summarise_parent(mlflow, parent_id, record)
            sent.append(active.info.run_id)
        if record.get("end_ms"):  # the run's own end and status, not the replay's
            mlflow.MlflowClient().set_terminated(active.info.run_id, record["status"], end_time=record["end_ms"])
            if parent_id:
                extend_parent(mlflow, parent_id, record["status"], record["end_ms"])
        shutil.rmtree(record_file.parent)
    return sent
