"""evaluate: the fine-tuned model and the task's baseline (results/baselines.py) on the test split.

Writes reports/metrics.json, per-row predictions and ROC / PR curve points as DVC plot data, and PNG
figures; its MLflow run names the train run of the model it scored.
"""

from reprolab.process_settings import configure_process

configure_process()

from reprolab import paths, storage
from reprolab.errors import StageError, run_stage
from reprolab.inference import prediction
from reprolab.model import runtime
from reprolab.params import load_params
from reprolab.records import tracking
from reprolab.results import baselines, evaluation, evaluation_figures, headline
from reprolab.tasks import catalog


def main() -> None:
    params = load_params()
    task = catalog.task_named(params.task)
    names = params.ingest.class_names
    test = runtime.TokenData.read(paths.token_split("test"))
    clean_train = storage.read_parquet(paths.clean_split("train"), ["label", "text"]).to_pydict()
    clean_test = storage.read_parquet(paths.clean_split("test"), ["id", "text"]).to_pydict()
    if clean_test["id"] != test.ids:
        raise StageError(
            f"{paths.token_split('test')} and {paths.clean_split('test')} hold different rows: "
            "run `dvc repro` to bring them in step"
        )
    device = runtime.select_device(params.train.device)
    # The prediction path `reprolab predict` and the MLflow model take, from the token ids on.
    predictor = prediction.Predictor(
        paths.MODEL_DIR,
        device=str(device),
        batch_size=params.evaluate.batch_size,
        bf16=runtime.mixed_precision(params.train.mixed_precision, device) == "bf16",
    )
    results = {
        task.model_name: predictor.probabilities(test.sequences),
        task.baseline_name: baselines.baseline_probs(
            task,
            clean_train["text"],
            [names.index(label) for label in clean_train["label"]],
            clean_test["text"],
            params.evaluate.baseline,
            names,
            params.train.class_weights,
        ),
    }
    model_md5 = storage.file_md5(paths.WEIGHTS)
    # Which weights these are the scores of: `reprolab show` and the pipeline's MLflow run check it.
    metrics = evaluation.scores(task, test.labels, results, names) | {"weights_md5": model_md5}
    storage.write_json(metrics, paths.METRICS)
    plot_files = []
    for name, text in evaluation.plot_data(task, test.ids, test.labels, results, names).items():
        storage.write_text(text, paths.PLOTS / name)
        plot_files.append(paths.PLOTS / name)
    drawn = evaluation_figures.test_figures(test.labels, results, names, paths.EVALUATE_FIGURES)
    for line in headline.headline(task, metrics):
        print(f"evaluate: {line}")

    train_run = tracking.find_run_for_model(model_md5)  # None offline: `reprolab replay` looks again
    with tracking.StageRun.start("evaluate", params, {"test": paths.token_split("test")}) as run:
        link = {tracking.TRAIN_RUN_TAG: train_run} if train_run else {}
        run.set_tags({tracking.MODEL_DIGEST_TAG: model_md5, **link})
        run.log_metrics(tracking.flat_metrics(metrics, prefix="test."))
        for file in [paths.METRICS, *plot_files, *drawn]:
            run.log_artifact(file, str(file.parent))
        run.log_outputs([paths.METRICS], prefix="evaluate")
        run.summarise_pipeline(paths.METRICS, model_md5)


if __name__ == "__main__":
    run_stage(main)
