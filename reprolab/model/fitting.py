"""A training stage's run, for train (the fine-tuned teacher) and distill (its student): training
checkpointed and stopped cleanly by SIGINT/SIGTERM under the stage's MLflow run, then the model
folder, report, history CSVs, curves and logged model where the stage's `Layout` puts them.

Only process 0 of machine 0 tracks the run and writes the outputs. The stage hands in what lives
above this package (the curves figure, the MLflow model logger), so the model layer imports neither.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from reprolab import paths, storage
from reprolab.model import checkpoints, loop, runtime, training
from reprolab.params import DistillParams, Params, TrainParams
from reprolab.records import provenance, tracking
from reprolab.tasks.base import Task

# (steps, history, score key, score title, PNG path) -> the PNG's path: results.figures.training_curves
CurvesDrawer = Callable[[list, list, str, str, Path], Path]


@dataclass(frozen=True)
class Layout:
    """Where a training stage writes: its stage name (MLflow's, the messages'), its model folder,
    report, per-epoch and per-step CSVs, figures folder and checkpoints."""

    stage: str
    model_dir: Path
    report: Path
    history: Path
    steps: Path
    figures: Path
    checkpoints: Path

    @property
    def weights(self) -> Path:
        return self.model_dir / paths.WEIGHTS.name


TEACHER = Layout(
    "train",
    paths.MODEL_DIR,
    paths.TRAIN_REPORT,
    paths.TRAIN_HISTORY,
    paths.TRAIN_STEPS,
    paths.TRAIN_FIGURES,
    paths.CHECKPOINT_ROOT,
)
STUDENT = Layout(
    "distill",
    paths.STUDENT_DIR,
    paths.DISTILL_REPORT,
    paths.DISTILL_HISTORY,
    paths.DISTILL_STEPS,
    paths.DISTILL_FIGURES,
    paths.DISTILL_CHECKPOINTS,
)


@dataclass(frozen=True)
class Job:
    """What a training stage trains: the model (with the folder its tokenizer comes from), on which
    rows, with which settings, and what its MLflow run records."""

    task: Task
    model: object
    source: str  # the tokenizer's folder, saved beside the weights
    train: runtime.TokenData
    val: runtime.TokenData
    params: Params
    p: TrainParams  # the run's train settings (a student's: train's with its own epochs and rate)
    inputs: Mapping[str, Path]  # MLflow input context -> file, and the checkpoint's fingerprint
    distill: DistillParams | None = None
    tags: Mapping[str, str] = field(default_factory=dict)  # more MLflow tags for the run (and model version)


def train_in_stage(
    layout: Layout, accelerator, job: Job, draw_curves: CurvesDrawer, log_model: tracking.ModelLogger
) -> None:
    """Train `job.model` (resuming this very run's checkpoint, if one is there) and write its outputs.
    On SIGINT/SIGTERM a checkpoint is saved and the process exits with 128 + the signal's number (as a
    shell reports a process that signal ended), after saying how to resume."""
    p = job.p
    checkpointer = checkpoints.Checkpointer(
        training.checkpoint_dir(job.params, dict(job.inputs), p, layout.checkpoints, job.distill),
        p.checkpoint_every_steps,
        p.checkpoint_every_minutes,
        layout.stage,
    )
    previous = checkpointer.peek()
    checkpointer.stop_on_signals()
    tracked = (
        tracking.StageRun.start(layout.stage, job.params, job.inputs, resume_run_id=previous and previous.run_id)
        if accelerator.is_main_process
        else nullcontext()
    )
    with tracked as run:
        if run is not None:
            run.set_tags({f"{layout.stage}.device": str(accelerator.device), **job.tags})
        try:
            result = training.train_model(
                accelerator,
                job.task,
                job.model,
                job.train,
                job.val,
                p,
                job.model.config.pad_token_id or 0,
                job.params.tokenize.max_length,
                on_step=None
                if run is None
                else (lambda step, values: run.log_metrics({f"step/{k}": v for k, v in values.items()}, step)),
                checkpointer=checkpointer,
                run_id=None if run is None else run.run_id,
                distill=job.distill,
            )
        except checkpoints.TrainingInterrupted as stop:
            signal_name = signal.Signals(checkpointer.stop_requested).name
            print(
                f"{layout.stage}: stopped by {signal_name}; {stop} in {checkpointer.directory}. "
                "Run `dvc repro` to resume.",
                file=sys.stderr,
            )
            if run is not None:
                run.close("KILLED")
            sys.exit(128 + checkpointer.stop_requested)
        if run is not None:
            write_outputs(layout, run, job, accelerator.device, result, draw_curves, log_model)
        accelerator.wait_for_everyone()  # every machine keeps its checkpoint until the outputs are written
        checkpointer.clear(accelerator)
    accelerator.end_training()


def write_outputs(
    layout: Layout,
    run: tracking.StageRun,
    job: Job,
    device,
    result: loop.TrainResult,
    draw_curves: CurvesDrawer,
    log_model: tracking.ModelLogger,
) -> None:
    task = job.task
    # Per-epoch values under their own keys: beside the per-step ones they would draw as one line.
    for row in result.history:
        run.log_metrics({f"epoch/{k}": v for k, v in row.items() if k not in ("epoch", "step")}, step=int(row["epoch"]))
    training.save_model(job.model, job.source, job.params, layout.model_dir)
    report = training.train_report(result, device, len(job.train), provenance.cpu_kernels())
    storage.write_json(report, layout.report)
    storage.write_text(training.history_csv(result.history, training.history_fields(task)), layout.history)
    storage.write_text(training.history_csv(result.steps, training.STEP_FIELDS), layout.steps)
    curves = draw_curves(
        result.steps, result.history, task.selection_score, task.score_title, layout.figures / "training_curves.png"
    )
    for artifact in (layout.history, layout.steps, curves):
        run.log_artifact(artifact, f"reports/{layout.stage}")
    throughput = result.samples_seen / result.seconds
    run.log_metrics(
        {
            "train_samples_per_second": throughput,
            "train_seconds": result.seconds,
            **{k: v for k, v in report.items() if k.startswith("best_")},
        }
    )
    weights_md5 = storage.file_md5(layout.weights)
    run.set_tags({tracking.MODEL_DIGEST_TAG: weights_md5})
    run.log_model(layout.model_dir, log_model)
    # The pipeline's headline stays the teacher's test metrics (byte-identical teacher weights leave
    # evaluate skipped: the committed ones are this model's).
    teacher_md5 = weights_md5 if layout.weights == paths.WEIGHTS else storage.file_md5(paths.WEIGHTS)
    run.summarise_pipeline(paths.METRICS, teacher_md5)
    print(
        f"{layout.stage}: best epoch {result.best_epoch}, validation {task.score_title} "
        f"{report[f'best_{task.selection_score}']:.4f}, "
        f"{throughput:.1f} samples/s on {device}, MLflow run {run.run_id or 'spooled'}"
    )
