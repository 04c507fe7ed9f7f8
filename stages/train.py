"""train: fine-tune the pretrained encoder on the token splits -> models/model, reports/train.json.

With `train.num_processes` x `train.num_machines` > 1 the stage relaunches itself under `accelerate
launch` (data-parallel). Checkpoints are written by step count and wall clock, at epoch ends and on
SIGINT/SIGTERM; the next run with the same inputs and params resumes from the last one (see
reprolab.model.checkpoints). Only process 0 of machine 0 tracks the run and writes the outputs.
"""

from reprolab.process_settings import configure_process

configure_process()

import signal
import sys
from contextlib import nullcontext

from reprolab import paths, storage
from reprolab.encoding import encoder
from reprolab.errors import run_stage
from reprolab.inference import serving
from reprolab.model import checkpoints, launching, loop, runtime, training
from reprolab.params import Params, load_params
from reprolab.records import provenance, tracking
from reprolab.results import figures
from reprolab.tasks import catalog
from reprolab.tasks.base import Task


def main() -> None:
    params = load_params()
    p = params.train
    task = catalog.task_named(params.task)
    if p.world_size > 1 and not launching.launched():
        print(
            f"train: launching {p.num_processes} data-parallel process(es) on machine {p.machine_rank} of "
            f"{p.num_machines} with accelerate",
            flush=True,
        )
        launching.relaunch("stages.train", p)
    accelerator = training.make_accelerator(p)
    training.seed_everything(p.seed, accelerator.device, p.num_threads)
    if accelerator.device.type == "cpu":
        runtime.reuse_freed_host_memory()
    inputs = {"train": paths.token_split("train"), "train_augmented": paths.AUGMENTED, "val": paths.token_split("val")}
    train = runtime.TokenData.read(inputs["train"], inputs["train_augmented"]).sample(p.max_train_samples, p.seed)
    val = runtime.TokenData.read(inputs["val"])
    source = encoder.resolve_model(params.model.name_or_path)
    model = runtime.load_model(task, source, task.label_names(params.ingest.class_names))
    checkpointer = checkpoints.Checkpointer(
        training.checkpoint_dir(params, inputs), p.checkpoint_every_steps, p.checkpoint_every_minutes
    )
    previous = checkpointer.peek()
    checkpointer.stop_on_signals()
    # Only the job's main process tracks and writes outputs; the others train and leave.
    tracked = (
        tracking.StageRun.start("train", params, inputs, resume_run_id=previous and previous.run_id)
        if accelerator.is_main_process
        else nullcontext()
    )
    with tracked as run:
        if run is not None:
            run.set_tags({"train.device": str(accelerator.device)})
        try:
            result = training.train_model(
                accelerator,
                task,
                model,
                train,
                val,
                p,
                model.config.pad_token_id or 0,
                params.tokenize.max_length,
                on_step=None
                if run is None
                else (lambda step, values: run.log_metrics({f"step/{k}": v for k, v in values.items()}, step)),
                checkpointer=checkpointer,
                run_id=None if run is None else run.run_id,
            )
        except checkpoints.TrainingInterrupted as stop:
            signal_name = signal.Signals(checkpointer.stop_requested).name
            print(
                f"train: stopped by {signal_name}; {stop} in {checkpointer.directory}. Run `dvc repro` to resume.",
                file=sys.stderr,
            )
            if run is not None:
                run.close("KILLED")
            sys.exit(128 + checkpointer.stop_requested)
        if run is not None:
            write_outputs(run, task, model, source, params, len(train), accelerator.device, result)
        accelerator.wait_for_everyone()  # every machine keeps its checkpoint until the outputs are written
        checkpointer.clear(accelerator)
    accelerator.end_training()


def write_outputs(
    run: tracking.StageRun,
    task: Task,
    model,
    source: str,
    params: Params,
    train_rows: int,
    device,
    result: loop.TrainResult,
) -> None:
    # Per-epoch values under their own keys: beside the per-step ones they would draw as one line.
    for row in result.history:
        run.log_metrics({f"epoch/{k}": v for k, v in row.items() if k not in ("epoch", "step")}, step=int(row["epoch"]))
    training.save_model(model, source, params)
    report = training.train_report(result, device, train_rows, provenance.cpu_kernels())
    storage.write_json(report, paths.TRAIN_REPORT)
    storage.write_text(training.history_csv(result.history, training.history_fields(task)), paths.TRAIN_HISTORY)
    storage.write_text(training.history_csv(result.steps, training.STEP_FIELDS), paths.TRAIN_STEPS)
    curves = figures.training_curves(
        result.steps,
        result.history,
        task.selection_score,
        task.score_title,
        paths.TRAIN_FIGURES / "training_curves.png",
    )
    for artifact in (paths.TRAIN_HISTORY, paths.TRAIN_STEPS, curves):
        run.log_artifact(artifact, "reports/train")
    throughput = result.samples_seen / result.seconds
    run.log_metrics(
        {
            "train_samples_per_second": throughput,
            "train_seconds": result.seconds,
            **{k: v for k, v in report.items() if k.startswith("best_")},
        }
    )
    weights_md5 = storage.file_md5(paths.WEIGHTS)
    run.set_tags({tracking.MODEL_DIGEST_TAG: weights_md5})
    run.log_model(paths.MODEL_DIR, serving.log_model)
    # Byte-identical weights leave evaluate skipped: the committed test metrics are this model's.
    run.summarise_pipeline(paths.METRICS, weights_md5)
    print(
        f"train: best epoch {result.best_epoch}, validation {task.score_title} "
        f"{report[f'best_{task.selection_score}']:.4f}, "
        f"{throughput:.1f} samples/s on {device}, MLflow run {run.run_id or 'spooled'}"
    )


if __name__ == "__main__":
    run_stage(main)
