"""Where a result came from: git commit and dirty state, DVC experiment, data hashes, packages."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from reprolab.errors import StageError

# Files a pipeline run rewrites itself: their changes do not make the code or params dirty.
_RUN_OUTPUT_PREFIXES = ("dvc.lock", "reports/")

_REQUIREMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def pipeline_packages() -> tuple[str, ...]:
    """Every distribution the pipeline imports: the installed project's own runtime requirements (extras
    left out), so a dependency added to pyproject.toml is recorded without a second list to keep."""
    requirements = metadata.requires("reprolab") or []
    return tuple(sorted({_REQUIREMENT_NAME.match(r).group(0).lower() for r in requirements if "extra ==" not in r}))


def _dvc_root(folder: Path) -> Path | None:
    """The nearest folder at or above `folder` that holds a DVC repository (`.dvc/`)."""
    return next((up for up in (folder, *folder.parents) if (up / ".dvc").is_dir()), None)


def repo_root() -> Path:
    """The DVC repo root, where the project's records are kept: DVC_ROOT while DVC runs a stage (the
    parent repo under `dvc exp run --temp`), else the repository around the working directory (a
    project below the root, such as examples/ner, keeps its records at the root too)."""
    if os.environ.get("DVC_ROOT"):
        return Path(os.environ["DVC_ROOT"]).resolve()
    cwd = Path.cwd().resolve()
    return _dvc_root(cwd) or cwd


def project() -> str:
    """The DVC project being run, as its folder under the repository's root ("." for the root's own
    pipeline, `examples/ner`): the nearest folder at or above the working directory that holds a
    dvc.yaml (a command run in examples/ner/data is examples/ner's; a temp experiment workspace is a
    copy of the repository, so the folder is the same there)."""
    cwd = Path.cwd().resolve()
    root = _dvc_root(cwd)
    if root is None:
        return "."
    folders = [cwd, *cwd.relative_to(root).parents]  # up to the root, relative parents last
    found = next((folder for folder in folders if (root / folder / "dvc.yaml").is_file()), Path("."))
    return (root / found).resolve().relative_to(root).as_posix()


class GitError(StageError):
    """A git command failed (or git is missing); the message is git's own."""


def git(repo: Path | None, *args: str) -> str:
    """The output of `git -C repo ARGS` (the current directory's repository for None)."""
    where = ["-C", str(repo)] if repo is not None else []
    try:
        done = subprocess.run(["git", *where, *args], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.SubprocessError) as exc:
        raise GitError(f"git {' '.join(args)}: {exc}") from None
    if done.returncode:
        raise GitError(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def git_show(repo: Path, rev: str, path: str) -> str | None:
    """A file's text at a revision, or None where the revision does not hold it."""
    try:
        return git(repo, "show", f"{rev}:{path}")
    except GitError:
        return None


def git_commit() -> str | None:
    try:
        return git(None, "rev-parse", "HEAD").strip()
    except GitError:
        return None


def git_dirty_paths() -> list[str]:
    """Tracked files changed against HEAD, outside what a pipeline run rewrites itself."""
    try:
        status = git(None, "status", "--porcelain", "--untracked-files=no")
    except GitError:
        return []
    paths = [line[3:] for line in status.splitlines() if line.strip()]  # "XY path"
    return [p for p in paths if not p.startswith(_RUN_OUTPUT_PREFIXES)]


def dvc_experiment() -> dict[str, str]:
    """DVC sets these when a stage runs under `dvc exp run` (workspace, --temp or --queue)."""
    names = {"DVC_EXP_NAME": "dvc.exp_name", "DVC_EXP_BASELINE_REV": "dvc.exp_baseline_rev"}
    return {tag: os.environ[var] for var, tag in names.items() if os.environ.get(var)}


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in pipeline_packages():
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def cpu_kernels() -> dict[str, str]:
    """Which SIMD kernels the CPU numerics ran on (see reprolab.process_settings): the mode asked for,
    and what each library that had loaded picked: torch's SIMD level, numpy's widest dispatched
    group (X86_V3 is AVX2, X86_V4 and AVX512_* are AVX-512), OpenBLAS's core."""
    kernels = {"kernels": os.environ.get("REPROLAB_CPU_KERNELS", "portable"), "machine": platform.machine()}
    vendor = cpu_info("vendor_id")
    if vendor:  # MKL takes other code paths on other vendors' CPUs, whatever its CBWR branch
        kernels["cpu_vendor"] = vendor
    torch = sys.modules.get("torch")  # only where the stage loaded it: importing torch costs seconds
    if torch is not None:
        kernels["torch_capability"] = torch.backends.cpu.get_cpu_capability()
    if "numpy" in sys.modules:
        kernels["numpy_simd"] = numpy_simd()
        from threadpoolctl import threadpool_info

        cores = sorted({str(lib.get("architecture")) for lib in threadpool_info() if lib["internal_api"] == "openblas"})
        if cores:
            kernels["blas_core"] = ",".join(cores)
    return kernels


def cpu_info(field: str) -> str | None:
    """A field of the first CPU in /proc/cpuinfo ("vendor_id", "model name"); None where there is none."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                name, _, value = line.partition(":")
                if name.strip() == field:
                    return value.strip()
    except OSError:
        pass
    return None


def numpy_simd() -> str:
    """numpy's widest SIMD group in use ("baseline" when it dispatches to none)."""
    from numpy._core import _multiarray_umath as umath  # where numpy 2 keeps its dispatch tables

    enabled = [group for group in umath.__cpu_dispatch__ if umath.__cpu_features__.get(group)]
    return enabled[-1] if enabled else "baseline"


def process_start_ms() -> int:
    """When this process started (epoch ms): a stage's run spans its imports and setup, not only its end."""
    import psutil

    return int(psutil.Process().create_time() * 1000)


def _start_ticks(pid: int) -> str | None:
    """A process's start in clock ticks since boot (/proc/<pid>/stat's 22nd field; None off Linux).
    Unlike psutil's create_time (boot time read from the wall clock, plus the ticks), no change of the
    wall clock moves it: a VM whose clock was stepped mid-repro gave each stage of one `dvc repro`
    another start time, and so a parent run of its own."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()  # after the command name, which may hold spaces
    return fields[19] if len(fields) > 19 else None


def pipeline_execution() -> dict[str, str | int] | None:
    """The DVC command this stage runs under (`dvc repro`, `dvc exp run`, or `dvc exp exec-run` for one
    queued experiment): its process id and start time name one pipeline execution, which every stage
    it runs shares. None for a stage run by hand."""
    import psutil

    try:
        parents = psutil.Process().parents()
    except psutil.Error:
        return None
    for process in parents:
        try:
            argv, started = process.cmdline(), int(process.create_time() * 1000)
        except psutil.Error:  # a parent this user may not inspect (another user's), or one gone since
            continue
        names = [Path(arg).name for arg in argv[:3]]  # dvc, python .../dvc or python -m dvc
        if "dvc" in names[:2] or names[1:3] == ["-m", "dvc"]:
            at = names.index("dvc")
            return {
                "key": f"{platform.node()}:{process.pid}:{_start_ticks(process.pid) or started}",
                "start_ms": started,
                "command": " ".join(["dvc", *argv[at + 1 : at + 3]]),
            }
    return None
