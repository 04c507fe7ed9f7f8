"""reprolab: a reproducible DVC + MLflow pipeline for fine-tuning transformer text classifiers.

One module per DVC stage (ingest, clean, tokenize, augment, train, evaluate) plus a few shared
modules (params, io, encoding, batching, tracking, provenance) that the stages import.
"""

import os
import platform

# Offline by default: nothing is fetched from a hub at run time. A user with internet who names a
# hub model sets HF_HUB_OFFLINE=0 explicitly.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", os.environ["HF_HUB_OFFLINE"])
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
# An unreachable tracking server should fail in seconds, not minutes of retries: stages then keep
# their record locally (see tracking.StageRun).
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
os.environ.setdefault("MPLBACKEND", "Agg")  # figures are files; no display

# CPU results are bit-identical across x86-64 machines. torch, oneDNN and MKL each pick SIMD kernels at
# run time, and their AVX-512 kernels round differently from the AVX2 ones: a model trained on an
# AVX-512 server did not reproduce, bit for bit, on an AVX2 one, so `reprolab audit` failed across
# machines. Holding all three to AVX2 (every x86-64 server of the last decade has it) makes the trained
# weights and metrics the same everywhere; REPROLAB_CPU_KERNELS=native gives that up for the speed of
# the machine's widest kernels. Read before the first import of torch, which is why it lives here.
PORTABLE_CPU_KERNELS = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2"}
CPU_KERNELS = os.environ.setdefault("REPROLAB_CPU_KERNELS", "portable")
if CPU_KERNELS not in ("portable", "native"):
    raise ImportError(f"REPROLAB_CPU_KERNELS={CPU_KERNELS!r}: expected 'portable' (the default) or 'native'")
if CPU_KERNELS == "portable" and platform.machine().lower() in ("x86_64", "amd64"):
    for _name, _value in PORTABLE_CPU_KERNELS.items():
        os.environ.setdefault(_name, _value)
