"""Process-wide settings that must be in place before the libraries that read them are imported.

Each entry point (every `stages/<name>.py`, the `reprolab` command) calls `configure_process()` as its
first statement, before anything imports torch: the CPU kernel caps below are read once, when torch,
oneDNN and MKL load. Library modules never call it, so importing them changes nothing.

- Offline by default: nothing is fetched from a hub at run time. A user with internet who names a hub
  model sets HF_HUB_OFFLINE=0 explicitly.
- An unreachable tracking server fails in seconds, not minutes of retries: stages then keep their
  record locally (see tracking.StageRun).
- Figures are files: matplotlib never looks for a display.
- CPU results are bit-identical across x86-64 machines. torch, oneDNN and MKL each pick SIMD kernels
  at run time, and their AVX-512 kernels round differently from the AVX2 ones: a model trained on an
  AVX-512 server did not reproduce, bit for bit, on an AVX2 one. Holding all three to AVX2 (every
  x86-64 server of the last decade has it) makes the trained weights and metrics the same everywhere;
  REPROLAB_CPU_KERNELS=native gives that up for the speed of the machine's widest kernels.

Every setting is a default: a variable the user set already wins.
"""

from __future__ import annotations

import os
import platform
import sys

DEFAULTS = {
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    "MPLBACKEND": "Agg",
}
PORTABLE_CPU_KERNELS = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2"}
KERNEL_MODES = ("portable", "native")


def configure_process() -> None:
    """Apply the defaults above to os.environ. A REPROLAB_CPU_KERNELS value other than `portable` (the
    default) or `native` ends the process with status 2 and one line saying so. Called after torch
    was imported, the kernel caps could no longer take effect: that is a programming error."""
    if "torch" in sys.modules and os.environ.get("REPROLAB_CPU_KERNELS") is None:
        raise RuntimeError("configure_process() must run before torch is imported (CPU kernel caps)")
    for name, value in DEFAULTS.items():
        os.environ.setdefault(name, value)
    os.environ.setdefault("TRANSFORMERS_OFFLINE", os.environ["HF_HUB_OFFLINE"])
    mode = os.environ.setdefault("REPROLAB_CPU_KERNELS", "portable")
    if mode not in KERNEL_MODES:
        print(f"error: REPROLAB_CPU_KERNELS={mode!r}: expected 'portable' (the default) or 'native'",
              file=sys.stderr)
        sys.exit(2)
    if mode == "portable" and platform.machine().lower() in ("x86_64", "amd64"):
        for name, value in PORTABLE_CPU_KERNELS.items():
            os.environ.setdefault(name, value)
