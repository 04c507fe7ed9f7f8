"""Data-parallel training the user's way: `train.num_processes: 2` and `dvc repro`, which relaunches the
train stage under `accelerate launch`; and two "machines" (two launchers, one process each, two
checkouts) meeting on 127.0.0.1, as two real machines would on their network."""

import json
import math
import subprocess
import sys
from pathlib import Path

from safetensors.torch import load_file

from reprolab import storage
from reprolab.model import runtime
from reprolab.tasks.sequence_classification import SequenceClassification
from tests.conftest import (
    REDUCED_MODEL,
    copy_project,
    env_for,
    free_port,
    ran_stages,
    run,
    update_params,
)

SEQUENCE_CLASSIFICATION = SequenceClassification()


def l2_distance(a: dict, b: dict) -> float:
    return sum(((a[k].double() - b[k].double()) ** 2).sum() for k in a).sqrt().item()


def initial_weights(project: Path) -> dict:
    """The weights the train stage starts from: the reduced project's tiny spam filter, its head included."""
    return runtime.load_model(SEQUENCE_CLASSIFICATION, str(project / REDUCED_MODEL), ["ham", "spam"]).state_dict()


def test_two_processes_then_two_machines_on_loopback_train_the_same_model(project, tmp_path):
    single = json.loads((project / "reports/train.json").read_text())
    job = {"num_processes": 2, "num_threads": 1, "main_process_port": free_port()}
    update_params(project, {"train": job})
    output = run(["dvc", "repro", "train"], project)  # train alone: evaluate adds nothing this test checks
    assert "launching 2 data-parallel process(es) on machine 0 of 1 with accelerate" in output
    assert "train: 2 process(es) on cpu, fp32" in output
    assert ran_stages(output) == ["train"]
    two_processes = json.loads((project / "reports/train.json").read_text())
    assert two_processes["train_rows"] == single["train_rows"] and two_processes["epochs_run"] == single["epochs_run"]
    # Each process takes whole batches of the epoch's order: a step sees twice the rows, so the epoch
    # takes half the optimizer steps (the last logged one, every 2 steps, within one of the end).
    batches = math.ceil(single["train_rows"] / 8)
    last_logged = int((project / "reports/plots/train_steps.csv").read_text().splitlines()[-1].split(",")[0])
    assert math.ceil(batches / 2) - 1 <= last_logged <= math.ceil(batches / 2)
    on_one_machine = load_file(project / "models/model/model.safetensors")

    # The same job as two machines of one process each: machine 1 from its own checkout.
    other = copy_project(project, tmp_path / "machine-1")
    copied = storage.file_md5(other / "models/model/model.safetensors")
    machines = {"num_processes": 1, "num_machines": 2, "main_process_port": free_port()}
    update_params(project, {"train": {**machines, "machine_rank": 0}})
    update_params(other, {"train": {**machines, "machine_rank": 1}})
    worker = subprocess.Popen(
        [sys.executable, "-m", "stages.train"],
        cwd=other,
        env=env_for(other),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    main = subprocess.run(
        [sys.executable, "-m", "stages.train"],
        cwd=project,
        env=env_for(project),
        capture_output=True,
        text=True,
        timeout=1200,
    )
    worker_output, _ = worker.communicate(timeout=300)
    assert main.returncode == 0, main.stdout[-2000:] + main.stderr[-3000:]
    assert worker.returncode == 0, worker_output[-3000:]
    assert "on machine 1 of 2" in worker_output
    assert storage.file_md5(other / "models/model/model.safetensors") == copied  # only machine 0 writes
    on_two_machines = load_file(project / "models/model/model.safetensors")

    moved = l2_distance(on_one_machine, initial_weights(project))
    differ = l2_distance(on_one_machine, on_two_machines)
    # The tiny model moves by hundredths in these 8 steps, far above the float order's last bits.
    assert moved > 0.01, "training did not move the weights: the comparison would prove nothing"
    # The tolerance of the data-parallel tests: float summation order may differ, nothing else.
    assert differ < 1e-3 * moved, f"two machines differ from two processes by {differ:.2e} (moved {moved:.2e})"
