"""evaluate: the fine-tuned model and the task's baseline (results/baselines.py) on the test split.

Writes reports/metrics.json, per-row predictions and ROC / PR curve points as DVC plot data, and PNG
figures; its MLflow run names the train run of the model it scored.
"""

from reprolab.process_settings import configure_process

configure_process()

from reprolab import paths, storage
from reprolab.errors import run_stage
from reprolab.inference import prediction
from reprolab.model import runtime
from reprolab.params import load_params
from reprolab.records import tracking
from reprolab.results import entity_evaluation, evaluation, headline
from reprolab.tasks import catalog

# Each task's scoring of the test split (params.yaml's `task:`): per text against TF-IDF, or per word
# and entity against a CRF.
BY_TASK = {
    "sequence_classification": evaluation.evaluate_texts,
    "token_classification": entity_evaluation.evaluate_sentences,
}


def main() -> None:
    params = load_params()
    task = catalog.task_named(params.task)
    device = runtime.select_device(params.train.device)
    # The prediction path `reprolab predict` and the MLflow model take, from the token ids on.
    predictor = prediction.Predictor(
        paths.MODEL_DIR,
        device=str(device),
        batch_size=params.evaluate.batch_size,
        bf16=runtime.mixed_precision(params.train.mixed_precision, device) == "bf16",
    )
    result = BY_TASK[params.task](task, params, predictor, paths.EVALUATE_FIGURES)
    model_md5 = storage.file_md5(paths.WEIGHTS)
    # Which weights these are the scores of: `reprolab show` and the pipeline's MLflow run check it.
    metrics = result.metrics | {"weights_md5": model_md5}
    storage.write_json(metrics, paths.METRICS)
    for file, text in result.files.items():
        storage.write_text(text, file)
    for line in headline.headline(task, metrics):
        print(f"evaluate: {line}")

    train_run = tracking.find_run_for_model(model_md5)  # None offline: `reprolab replay` looks again
    with tracking.StageRun.start("evaluate", params, {"test": paths.token_split("test")}) as run:
        link = {tracking.TRAIN_RUN_TAG: train_run} if train_run else {}
        run.set_tags({tracking.MODEL_DIGEST_TAG: model_md5, **link})
        run.log_metrics(tracking.flat_metrics(metrics, prefix="test."))
        for file in [paths.METRICS, *result.files, *result.figures]:
            run.log_artifact(file, str(file.parent))
        run.log_outputs([paths.METRICS], prefix="evaluate")
        run.summarise_pipeline(paths.METRICS, model_md5)


if __name__ == "__main__":
    run_stage(main)
