"""Data-parallel jobs through `accelerate launch` (torchrun underneath): one command per machine.

`train.num_processes` x `train.num_machines` > 1 makes the train stage replace itself with
`accelerate launch`, which starts `num_processes` copies of the stage on this machine and joins them
with the other machines' at `main_process_ip:main_process_port` (gloo on the CPU, NCCL on GPUs). The
user still runs plain `dvc repro` (machine 0) or the stage itself (the other machines).
"""

from __future__ import annotations

import os
import sys

from reprolab.params import TrainParams


def launched() -> bool:
    """Whether this process is one of a launched job's (torchrun sets these for every worker)."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def launch_command(module: str, p: TrainParams) -> list[str]:
    """The `accelerate launch` command line that runs `python -m module` as this machine's part of the job.

    Every setting is given on the command line, so a user's accelerate config file cannot change the
    job; `--multi_gpu` is accelerate's name for torchrun, on CPUs too (each process then asks for gloo).
    """
    argv = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        f"--num_processes={p.world_size}",
        f"--num_machines={p.num_machines}",
        f"--machine_rank={p.machine_rank}",
        f"--main_process_ip={p.main_process_ip}",
        f"--main_process_port={p.main_process_port}",
        "--mixed_precision=no",
        "--dynamo_backend=no",
    ]
    return [*argv, "--module", module]


def relaunch(module: str, p: TrainParams) -> None:
    """Replace this process with `accelerate launch` running `module`.

    exec, not a child: signals from DVC or the shell (SIGINT/SIGTERM) reach the launcher, which passes
    them to every worker, and each takes part in the checkpoint before exiting.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    argv = launch_command(module, p)
    os.execv(argv[0], argv)
