"""Process-wide settings that must be in place before the libraries that read them are imported.

Each entry point (every `stages/<name>.py`, the `reprolab` command) calls `configure_process()` as its
first statement, before anything imports torch or numpy: the CPU kernel caps below are read once, when
each library loads. Library modules never call it, so importing them changes nothing.

- Offline by default: nothing is fetched from a hub at run time. A user with internet who names a hub
  model sets HF_HUB_OFFLINE=0 explicitly.
- An unreachable tracking server fails in seconds, not minutes of retries: stages then keep their
  record locally (see tracking.StageRun).
- Figures are files: matplotlib never looks for a display.
- CPU results are bit-identical across x86-64 machines. Every numeric library in the stack picks its
  SIMD kernels at run time, and the AVX-512 kernels round (or order ties) differently from the AVX2
  ones: a model trained on an AVX-512 server did not reproduce, bit for bit, on an AVX2 one, and
  numpy's AVX-512 sort ordered the baseline's tied terms differently. So all of them are held to
  AVX2 (every x86-64 server of the last decade has it): torch, oneDNN and MKL (the transformer);
  numpy's own SIMD loops (exp, log, power, sort: the baseline and every numpy op); OpenBLAS, which
  numpy and scikit-learn call for dense products; and Arrow's compute kernels. tokenizers also
  dispatches by CPU, but only in exact string search (its outputs are integers); it needs no cap.
  REPROLAB_CPU_KERNELS=native gives all that up for the speed of the machine's widest kernels.

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
PORTABLE_CPU_KERNELS = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_CBWR": "AVX2",
    # The pinned numpy (2.4) dispatches to X86_V3 (AVX2) and three AVX-512 groups. It ignores a name it
    # does not dispatch (older numpy's AVX512F, ...) with a warning Python hides, so these must be its own.
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
    "OPENBLAS_CORETYPE": "Haswell",  # OpenBLAS's AVX2 kernels; a forced core is not checked against the CPU
    "ARROW_USER_SIMD_LEVEL": "AVX2",
}
KERNEL_MODES = ("portable", "native")


def configure_process() -> None:
    """Apply the defaults above to os.environ. A REPROLAB_CPU_KERNELS value other than `portable` (the
    default) or `native` ends the process with status 2 and one line saying so. Called after torch
    or numpy was imported, the kernel caps could no longer take effect: that is a programming error."""
    if {"torch", "numpy"} & sys.modules.keys() and os.environ.get("REPROLAB_CPU_KERNELS") is None:
        raise RuntimeError("configure_process() must run before torch or numpy is imported (CPU kernel caps)")
    for name, value in DEFAULTS.items():
        os.environ.setdefault(name, value)
    os.environ.setdefault("TRANSFORMERS_OFFLINE", os.environ["HF_HUB_OFFLINE"])
    mode = os.environ.setdefault("REPROLAB_CPU_KERNELS", "portable")
    if mode not in KERNEL_MODES:
        print(f"error: REPROLAB_CPU_KERNELS={mode!r}: expected 'portable' (the default) or 'native'", file=sys.stderr)
        sys.exit(2)
    if mode == "portable":
        for name, value in portable_caps().items():
            os.environ.setdefault(name, value)


def portable_caps() -> dict[str, str]:
    """The caps `portable` sets on this machine: none off x86-64, where other kernels are the only ones."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return {}
    return {name: value for name, value in PORTABLE_CPU_KERNELS.items() if name != "OPENBLAS_CORETYPE" or _has_avx2()}


def _has_avx2() -> bool:
    """Whether this CPU runs AVX2 code. The other caps are ceilings, which a smaller CPU simply stays
    under; a forced OpenBLAS core is not, and would stop the process with an illegal instruction."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            return any(line.startswith("flags") and " avx2" in line for line in cpuinfo)
    except OSError:
        return False
