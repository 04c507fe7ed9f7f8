"""evaluate: the fine-tuned model and the task's baseline (results/baselines.py) on the test split; with
`--model student` (stage evaluate_student), the distilled student and its teacher.

Writes the metrics (reports/metrics.json; the student's reports/student/metrics.json), per-row
predictions and ROC / PR curve points as DVC plot data, and PNG figures; its MLflow run names the run
that trained the model it scored.
"""

import sys

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


def main(files: paths.ScoredModel) -> None:
    stage = files.stage("evaluate")
    params = load_params()
    task = catalog.task_named(params.task)
    device = runtime.select_device(params.train.device)

    def predictor_of(folder):  # the prediction path `reprolab predict` and the MLflow model take
        bf16 = runtime.mixed_precision(params.train.mixed_precision, device) == "bf16"
        return prediction.Predictor(folder, device=str(device), batch_size=params.evaluate.batch_size, bf16=bf16)

    contenders = evaluation.contenders_for(task, files, predictor_of)
    result = BY_TASK[params.task](task, params, contenders, files)
    model_md5 = storage.file_md5(files.weights)
    # Which weights these are the scores of: `reprolab show` and the pipeline's MLflow run check it.
    metrics = result.metrics | {"weights_md5": model_md5}
    storage.write_json(metrics, files.metrics)
    for file, text in result.files.items():
        storage.write_text(text, file)
    for line in headline.headline(task, metrics, pair=(contenders.name, contenders.reference)):
        print(f"{stage}: {line}")

    trained_by = tracking.find_run_for_model(model_md5, files.trained_by)  # None offline: `replay` looks again
    with tracking.StageRun.start(stage, params, {"test": paths.token_split("test")}) as run:
        link = {tracking.TRAIN_RUN_TAG: trained_by} if trained_by else {}
        run.set_tags({tracking.MODEL_DIGEST_TAG: model_md5, **link})
        run.log_metrics(tracking.flat_metrics(metrics, prefix="test."))
        for file in [files.metrics, *result.files, *result.figures]:
            run.log_artifact(file, str(file.parent))
        run.log_outputs([files.metrics], prefix=stage)
        if files.is_fine_tuned:  # the pipeline's headline
            run.summarise_pipeline(files.metrics, model_md5)


if __name__ == "__main__":
    chosen = paths.scored_model(sys.argv[1:])
    run_stage(lambda: main(chosen), name=chosen.stage("evaluate"))
