"""train: fine-tune the pretrained encoder on the token splits -> models/model, reports/train.json.

With `train.num_processes` x `train.num_machines` > 1 the stage relaunches itself under `accelerate
launch` (data-parallel). Checkpoints are written by step count and wall clock, at epoch ends and on
SIGINT/SIGTERM; the next run with the same inputs and params resumes from the last one (see
reprolab.model.checkpoints). Only process 0 of machine 0 tracks the run and writes the outputs
(reprolab.model.fitting).
"""

from reprolab.process_settings import configure_process

configure_process()

from reprolab.encoding import encoder
from reprolab.errors import run_stage
from reprolab.inference import serving
from reprolab.model import fitting, launching, runtime, training
from reprolab.params import load_params
from reprolab.results import figures
from reprolab.tasks import catalog


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
    inputs = training.training_inputs()
    train = runtime.TokenData.read(inputs["train"], inputs["train_augmented"]).sample(p.max_train_samples, p.seed)
    val = runtime.TokenData.read(inputs["val"])
    source = encoder.resolve_model(params.model.name_or_path)
    model = runtime.load_model(task, source, task.label_names(params.ingest.class_names))
    job = fitting.Job(task, model, source, train, val, params, p, inputs)
    fitting.train_in_stage(fitting.TEACHER, accelerator, job, figures.training_curves, serving.log_model)


if __name__ == "__main__":
    run_stage(main)
