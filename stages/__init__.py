"""reprolab: a reproducible DVC + MLflow pipeline for fine-tuning transformer text classifiers.

One module per DVC stage (ingest, clean, tokenize, augment, train, evaluate) plus a few shared
modules (params, io, encoding, batching, tracking, provenance) that the stages import.
"""

import os

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
