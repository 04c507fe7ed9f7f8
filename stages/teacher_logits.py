"""teacher_logits: the fine-tuned model's logits of the rows train learned from (the training split,
then the augmented rows) -> data/distill/teacher_logits.parquet, which distill reads.

Computed once per teacher: the student's epochs, and its experiments on temperature, alpha or layers,
never run the teacher again.
"""

from reprolab.process_settings import configure_process

configure_process()

from reprolab import paths, storage
from reprolab.errors import run_stage
from reprolab.model import distillation, runtime, training
from reprolab.params import load_params
from reprolab.records import tracking
from reprolab.tasks import catalog


def main() -> None:
    params = load_params()
    p = params.train
    task = catalog.task_named(params.task)
    device = runtime.select_device(p.device)
    training.seed_everything(p.seed, device, p.num_threads)
    inputs = training.training_inputs()
    rows = runtime.TokenData.read(inputs["train"], inputs["train_augmented"])
    teacher = runtime.load_model(task, str(paths.MODEL_DIR), task.label_names(params.ingest.class_names)).to(device)
    storage.write_parquet(distillation.teacher_logits(teacher, rows, p.eval_batch_size, device), paths.TEACHER_LOGITS)
    print(f"teacher_logits: {len(rows)} rows, {teacher.config.num_labels} classes, on {device.type}")
    tracking.log_stage(
        "teacher_logits",
        params,
        outputs=[paths.TEACHER_LOGITS],
        metrics={"rows": len(rows)},
        inputs={"train": inputs["train"], "train_augmented": inputs["train_augmented"], "teacher": paths.WEIGHTS},
    )


if __name__ == "__main__":
    run_stage(main)
