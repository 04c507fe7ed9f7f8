"""Where a result came from: git commit and dirty state, DVC experiment, data hashes, packages."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import yaml

# Files a pipeline run rewrites itself: their changes do not make the code or params dirty.
_RUN_OUTPUT_PREFIXES = ("dvc.lock", "reports/")

PACKAGES = (
    "torch", "transformers", "tokenizers", "safetensors", "mlflow", "dvc", "pandas", "pyarrow",
    "numpy", "scikit-learn", "datasketch", "selectolax", "wn", "pydantic",
)


def repo_root() -> Path:
    """The DVC repo root; under `dvc exp run --temp` DVC points DVC_ROOT at the parent repo."""
    return Path(os.environ.get("DVC_ROOT") or os.getcwd()).resolve()


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], capture_output=True, text=True, check=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout


def git_commit() -> str | None:
    head = _git("rev-parse", "HEAD")
    return head.strip() if head else None


def git_dirty_paths() -> list[str]:
    """Tracked files changed against HEAD, outside what a pipeline run rewrites itself."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    if not status:
        return []
    paths = [line[3:] for line in status.splitlines() if line.strip()]  # "XY path"
    return [p for p in paths if not p.startswith(_RUN_OUTPUT_PREFIXES)]


def dvc_experiment() -> dict[str, str]:
    """DVC sets these when a stage runs under `dvc exp run` (workspace, --temp or --queue)."""
    names = {"DVC_EXP_NAME": "dvc.exp_name", "DVC_EXP_BASELINE_REV": "dvc.exp_baseline_rev"}
    return {tag: os.environ[var] for var, tag in names.items() if os.environ.get(var)}


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def cpu_kernels() -> dict[str, str]:
    """Which SIMD kernels the CPU numerics ran on (see stages/__init__.py): portable AVX2 or native."""
    kernels = {"kernels": os.environ.get("REPROLAB_CPU_KERNELS", "portable"), "machine": platform.machine()}
    torch = sys.modules.get("torch")  # only where the stage loaded it: importing torch costs seconds
    if torch is not None:
        kernels["torch_capability"] = torch.backends.cpu.get_cpu_capability()
    return kernels


def lock_hashes(lock_path: str | Path = "dvc.lock") -> dict[str, str]:
    """path -> md5 of every stage output recorded in dvc.lock."""
    path = Path(lock_path)
    if not path.exists():
        return {}
    lock = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    hashes: dict[str, str] = {}
    for stage in (lock.get("stages") or {}).values():
        for out in stage.get("outs") or []:
            if "md5" in out:
                hashes[out["path"]] = out["md5"]
    return hashes
