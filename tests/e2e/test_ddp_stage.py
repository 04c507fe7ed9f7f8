"""The user's way to data-parallel training: `train.num_processes: 2` and `dvc repro`, which relaunches
the train stage under torchrun."""

import json

from tests.conftest import ran_stages, run, update_params


def test_stage_relaunches_under_torchrun_and_lands_near_one_process(project):
    single = json.loads((project / "reports/train.json").read_text())
    update_params(project, {"train": {"num_processes": 2, "num_threads": 1}})
    output = run(["dvc", "repro", "train"], project)  # train alone: evaluate adds nothing this test checks
    assert "launching 2 data-parallel processes with torchrun" in output
    assert ran_stages(output) == ["train"]
    ddp = json.loads((project / "reports/train.json").read_text())
    assert ddp["train_rows"] == single["train_rows"] and ddp["epochs_run"] == single["epochs_run"]
    # Dropout masks differ between one process and two, so the runs agree within noise only.
    assert abs(ddp["best_val_macro_f1"] - single["best_val_macro_f1"]) <= 0.15
