"""train: fine-tune the pretrained encoder on the token splits -> models/model, reports/train.json.

With `train.num_processes` > 1 the stage relaunches itself under torchrun (data-parallel). Checkpoints
are written every `train.checkpoint_every_steps` steps and on SIGINT/SIGTERM; the next run with the
same inputs and params resumes from the last one (see reprolab.training).
"""

from reprolab.process_settings import configure_process

configure_process()

import signal
import sys
from contextlib import nullcontext

from reprolab import (
    distributed,
    encoding,
    figures,
    modeling,
    paths,
    provenance,
    serving,
    storage,
    tracking,
    training,
)
from reprolab.errors import run_stage
from reprolab.params import Params, load_params


def main() -> None:
    params = load_params()
    p = params.train
    if p.num_processes > 1 and not distributed.launched_by_torchrun():
        print(f"train: launching {p.num_processes} data-parallel processes with torchrun", flush=True)
        distributed.relaunch_with_torchrun("stages.train", p.num_processes)
    device = modeling.select_device(p.device)
    context = distributed.init(device.type)
    try:
        train_stage(params, distributed.process_device(device, context), context)
    finally:
        distributed.shutdown(context)


def train_stage(params: Params, device, context: distributed.Context) -> None:
    p = params.train
    training.seed_everything(p.seed, device, p.num_threads)
    if device.type == "cpu":
        modeling.reuse_freed_host_memory()
    inputs = {"train": paths.token_split("train"), "train_augmented": paths.AUGMENTED,
              "val": paths.token_split("val")}
    train = modeling.TokenData.read(inputs["train"], inputs["train_augmented"]).sample(p.max_train_samples, p.seed)
    val = modeling.TokenData.read(inputs["val"])
    source = encoding.resolve_model(params.model.name_or_path)
    model = modeling.load_classifier(source, params.ingest.class_names).to(device)
    checkpointer = training.Checkpointer(training.checkpoint_dir(params, inputs), p.checkpoint_every_steps, context)
    previous = checkpointer.peek()
    training.stop_on_signals(checkpointer)
    # Under DDP only rank 0 tracks and writes outputs; the other processes train and leave.
    tracked = tracking.StageRun.start("train", params, inputs, resume_run_id=previous and previous.run_id) \
        if context.is_main else nullcontext()
    with tracked as run:
        if run is not None:
            run.set_tags({"train.device": str(device)})
        try:
            result = training.train_model(
                model, train, val, p, model.config.pad_token_id or 0, params.tokenize.max_length, device,
                on_step=None if run is None else (
                    lambda step, values: run.log_metrics({f"step/{k}": v for k, v in values.items()}, step)),
                checkpointer=checkpointer, run_id=None if run is None else run.run_id, context=context)
        except training.TrainingInterrupted as stop:
            signal_name = signal.Signals(checkpointer.stop_requested).name
            print(f"train: stopped by {signal_name}; {stop} in {checkpointer.directory}. "
                  "Run `dvc repro` to resume.", file=sys.stderr)
            if run is not None:
                run.close("KILLED")
            sys.exit(128 + checkpointer.stop_requested)
        if run is not None:
            write_outputs(run, model, source, params, len(train), device, result)
            checkpointer.clear()


def write_outputs(run: tracking.StageRun, model, source: str, params: Params, train_rows: int, device,
                  result: training.TrainResult) -> None:
    # Per-epoch values under their own keys: beside the per-step ones they would draw as one line.
    for row in result.history:
        run.log_metrics({f"epoch/{k}": v for k, v in row.items() if k != "epoch"}, step=int(row["epoch"]))
    training.save_model(model, source, params)
    report = training.train_report(result, device, train_rows, provenance.cpu_kernels())
    storage.write_json(report, paths.TRAIN_REPORT)
    storage.write_text(training.history_csv(result.history), paths.TRAIN_HISTORY)
    storage.write_text(training.history_csv(result.steps, training.STEP_FIELDS), paths.TRAIN_STEPS)
    curves = figures.training_curves(result.steps, result.history, paths.TRAIN_FIGURES / "training_curves.png")
    for artifact in (paths.TRAIN_HISTORY, paths.TRAIN_STEPS, curves):
        run.log_artifact(artifact, "reports/train")
    throughput = result.samples_seen / result.seconds
    run.log_metrics({"train_samples_per_second": throughput, "train_seconds": result.seconds,
                     **{k: v for k, v in report.items() if k.startswith("best_")}})
    run.set_tags({tracking.MODEL_DIGEST_TAG: storage.file_md5(paths.MODEL_DIR / "model.safetensors")})
    run.log_model(paths.MODEL_DIR, serving.log_model)
    print(f"train: best epoch {result.best_epoch}, val macro-F1 {report['best_val_macro_f1']:.4f}, "
          f"{throughput:.1f} samples/s on {device}, MLflow run {run.run_id or 'spooled'}")


if __name__ == "__main__":
    run_stage(main)
