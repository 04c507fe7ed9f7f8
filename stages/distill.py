"""distill: a student keeping `distill.student_layers` of the encoder's layers, trained through train's
loop on the teacher's softened logits (data/distill/teacher_logits.parquet) and the true labels ->
models/student, reports/distill.json (reprolab.model.distillation).

It trains as train does (seeds, threads, length-grouped batches, checkpoints that `dvc repro` resumes,
early stopping on the task's validation score) with its own epochs and learning rate, in full (no
LoRA), in one process. Its MLflow model is a version of `<experiment>-student`, tagged with the
teacher's train run.
"""

from reprolab.process_settings import configure_process

configure_process()

from reprolab import paths, storage
from reprolab.errors import StageError, run_stage
from reprolab.inference import serving
from reprolab.model import distillation, fitting, runtime, training
from reprolab.params import load_params
from reprolab.records import tracking
from reprolab.results import figures
from reprolab.tasks import catalog


def main() -> None:
    params = load_params()
    d = params.distill
    if d is None:
        raise StageError("params.yaml has no distill section: add one (params.yaml of the project root has one)")
    p = d.train_params(params.train)
    task = catalog.task_named(params.task)
    accelerator = training.make_accelerator(p)
    training.seed_everything(p.seed, accelerator.device, p.num_threads)
    if accelerator.device.type == "cpu":
        runtime.reuse_freed_host_memory()
    inputs = {**training.training_inputs(), "teacher_logits": paths.TEACHER_LOGITS}
    labels = task.label_names(params.ingest.class_names)
    teacher = runtime.load_model(task, str(paths.MODEL_DIR), labels)
    rows = runtime.TokenData.read(inputs["train"], inputs["train_augmented"])
    train = distillation.with_teacher_logits(rows, paths.TEACHER_LOGITS, len(labels)).sample(
        p.max_train_samples, p.seed
    )
    val = runtime.TokenData.read(inputs["val"])
    student = distillation.student(teacher, d, params.model.name_or_path, task)
    teacher_run = tracking.find_run_for_model(storage.file_md5(paths.WEIGHTS))  # None offline
    tags = {tracking.REGISTERED_NAME_TAG: f"{tracking.experiment_name()}-student"}
    if teacher_run:
        tags[tracking.TEACHER_RUN_TAG] = teacher_run
    job = fitting.Job(task, student, str(paths.MODEL_DIR), train, val, params, p, inputs, d, tags)
    fitting.train_in_stage(fitting.STUDENT, accelerator, job, figures.training_curves, serving.log_model)


if __name__ == "__main__":
    run_stage(main)
