"""`reprolab audit <rev | mlflow-run-id>`: re-derive a recorded result from its commit and compare.

The revision is checked out as a detached git worktree outside the working copy, with its own DVC
cache and its own MLflow store, so the user's working copy, cache and tracking history are never
touched. Inputs that git does not hold (the npm corpus, the vendored model) are linked in from the
repository; `.dvc`-tracked inputs come from the user's DVC cache (read only), else from the DVC
remote. Every output the revision committed is removed and every stage re-run (`dvc repro`) on the
CPU kernels the revision recorded (on the portable caps where it recorded none: see
kernel_environment); then the result is compared with what the revision recorded: each output and
dependency hash in its dvc.lock, the params dvc.lock was produced with, each metric in its
reports/metrics.json, and, given a run id, each test metric MLflow recorded. All of it exactly,
unless the weights cannot match bit for bit (CUDA, or other CPU kernels than the recorded ones): the
metrics then decide, within audit.inexact_metric_tolerance. Differences are reported under their
causes (find_causes): the first stage whose output moved, and what is known to differ there.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from reprolab import paths, storage
from reprolab.errors import StageError
from reprolab.params import load_params, parse_audit_params
from reprolab.process_settings import PORTABLE_CPU_KERNELS, portable_caps
from reprolab.records import provenance, tracking
from reprolab.records.provenance import GitError, git_show
from reprolab.records.tracking import MODEL_DIGEST_TAG, flat_metrics

RUN_ID = re.compile(r"[0-9a-f]{32}")
METRICS_FILE = paths.METRICS.as_posix()
TRAIN_REPORT = paths.TRAIN_REPORT.as_posix()
EXPORT_REPORT = paths.EXPORT_REPORT.as_posix()


class AuditError(StageError):
    """The target cannot be audited (unknown, dirty, or without a pipeline)."""


@dataclass
class Check:
    kind: str  # output | dependency | param | metric | export_metric | mlflow_metric | mlflow_input | mlflow_model
    name: str
    recorded: Any
    reproduced: Any
    ok: bool
    detail: str = ""


def resolve_target(repo: Path, target: str) -> tuple[str, Any]:
    """(commit, MLflow run or None) for a git revision or an MLflow run id."""
    if RUN_ID.fullmatch(target):
        mlflow = tracking.connect()
        try:
            run = mlflow.get_run(target)
        except Exception:  # noqa: BLE001 - MLflow raises its own types for unknown ids
            run = None
        if run is not None:
            tags = run.data.tags
            if tags.get("git.dirty") == "true":
                raise AuditError(
                    f"MLflow run {target} was recorded from a dirty tree "
                    f"({tags.get('git.dirty_paths', 'uncommitted changes')}): its code is in no commit"
                )
            if tags.get("git.commit", "unknown") == "unknown":
                raise AuditError(f"MLflow run {target} has no git.commit tag")
            return tags["git.commit"], run
    try:
        return provenance.git(repo, "rev-parse", "--verify", "--quiet", f"{target}^{{commit}}").strip(), None
    except GitError:
        raise AuditError(f"{target!r}: neither a git revision nor a run id in the MLflow store") from None


def recorded_files(repo: Path, commit: str, run: Any = None) -> dict[str, str]:
    """The revision's pipeline files. A run id may point at a commit without dvc.lock (results are
    often committed after the run): MLflow's record is then what the audit compares against."""
    files = {
        name: git_show(repo, commit, name)
        for name in (
            "dvc.yaml",
            "dvc.lock",
            "params.yaml",
            METRICS_FILE,
            TRAIN_REPORT,
            EXPORT_REPORT,
            "requirements.lock",
        )
    }
    if files["dvc.yaml"] is None:
        raise AuditError(f"revision {commit[:12]} has no dvc.yaml: it predates the pipeline")
    if files["dvc.lock"] is None and run is None:
        raise AuditError(f"revision {commit[:12]} has no dvc.lock: no result was recorded there")
    return files


def logged_test_metrics(run: Any) -> dict[str, float]:
    """The test metrics MLflow holds for a run: an evaluate run's own; for a train run, those of the
    latest evaluate run that scored its model."""
    if run.data.tags.get("reprolab.stage") == "train":
        run = tracking.latest_evaluation(run.info.run_id) or run
    return {k[len("test.") :]: v for k, v in run.data.metrics.items() if k.startswith("test.")}


def compare_run_record(run: Any, worktree: Path) -> list[Check]:
    """The run's own record: its input digests and the md5 of the model it trained."""
    checks = []
    for item in run.inputs.dataset_inputs:
        path = worktree / item.dataset.name
        reproduced = storage.file_md5(path) if path.is_file() else None
        checks.append(
            Check("mlflow_input", item.dataset.name, item.dataset.digest, reproduced, item.dataset.digest == reproduced)
        )
    model_md5 = run.data.tags.get(MODEL_DIGEST_TAG)
    if model_md5:
        weights = worktree / "models/model/model.safetensors"
        reproduced = storage.file_md5(weights) if weights.is_file() else None
        checks.append(
            Check("mlflow_model", "models/model/model.safetensors", model_md5, reproduced, model_md5 == reproduced)
        )
    return checks


def _lock_entries(lock: dict, section: str) -> dict[str, str]:
    return {
        f"{stage}:{entry['path']}": entry.get("md5")
        for stage, body in lock.get("stages", {}).items()
        for entry in body.get(section) or []
    }


def _lock_params(lock: dict) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for body in lock.get("stages", {}).values():
        for values in (body.get("params") or {}).values():
            flat.update({key: _number(value) for key, value in values.items()})
    return flat


def _number(value: Any) -> Any:
    """YAML 1.1 reads `5e-05` (no dot) as text; a param is the same number either way."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def link_external_inputs(repo: Path, worktree: Path, lock: dict) -> list[str]:
    """Symlink dependencies git does not hold and no stage makes (registry data, vendored model)."""
    produced = _producers(lock)
    linked = []
    for body in lock.get("stages", {}).values():
        for dep in body.get("deps") or []:
            path = dep["path"]
            if os.path.isabs(path) or path in produced or (worktree / path).exists():
                continue
            if (repo / path).exists():
                (worktree / path).parent.mkdir(parents=True, exist_ok=True)
                (worktree / path).symlink_to((repo / path).resolve())
                linked.append(path)
    return linked


def _dvc(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["dvc", *args], cwd=cwd, env=env, capture_output=True, text=True)


def pull_tracked_inputs(repo: Path, worktree: Path, env: dict[str, str]) -> None:
    """`.dvc`-tracked inputs, restored into the worktree's own cache: from the user's DVC cache where
    it holds them (read only, no network), else from the revision's DVC remote. Outputs are
    re-derived, never pulled."""
    targets = [
        str(p.relative_to(worktree))
        for p in worktree.rglob("*.dvc")
        if p.is_file() and ".dvc" not in p.relative_to(worktree).parts[:-1]
    ]
    if not targets:
        return
    # DVC resolves a relative remote URL against the worktree, which holds no data: it means the
    # same place in the repository.
    remotes = _dvc(worktree, env, "remote", "list").stdout
    for name, url in re.findall(r"^(\S+)\s+(.+?)(?:\s+\(default\))?\s*$", remotes, re.MULTILINE):
        if Path(url).resolve().is_relative_to(worktree.resolve()):
            moved = repo / Path(url).resolve().relative_to(worktree.resolve())
            _dvc(worktree, env, "remote", "modify", "--local", name, "url", str(moved))
    # The user's cache has a remote's layout (files/md5/...), so it can serve as one.
    cache = _dvc(repo, env, "cache", "dir").stdout.strip()
    if cache and Path(cache).is_dir():
        _dvc(worktree, env, "remote", "add", "--local", "--force", "reprolab-user-cache", cache)
        if _dvc(worktree, env, "pull", "--remote", "reprolab-user-cache", *targets).returncode == 0:
            return
    done = _dvc(worktree, env, "pull", *targets)
    if done.returncode:
        raise AuditError(
            f"cannot restore DVC-tracked inputs {targets}: not in the DVC cache {cache or '(none)'} "
            f"nor in the remote: {done.stderr.strip()[-500:]}"
        )


def compare_hashes(recorded: dict, reproduced: dict) -> list[Check]:
    checks = []
    for section, kind in (("outs", "output"), ("deps", "dependency")):
        before, after = _lock_entries(recorded, section), _lock_entries(reproduced, section)
        for name in sorted(before.keys() | after.keys()):
            checks.append(Check(kind, name, before.get(name), after.get(name), before.get(name) == after.get(name)))
    before, after = _lock_params(recorded), _lock_params(reproduced)
    for name in sorted(before.keys() | after.keys()):
        if before.get(name) != after.get(name):
            checks.append(
                Check(
                    "param",
                    name,
                    before.get(name),
                    after.get(name),
                    False,
                    "dvc.lock was produced with other params than the revision's params.yaml",
                )
            )
    return checks


def compare_metrics(
    recorded: dict[str, float], reproduced: dict[str, float], tolerance: float, kind: str = "metric"
) -> list[Check]:
    checks = []
    for name in sorted(recorded.keys() | reproduced.keys()):
        a, b = recorded.get(name), reproduced.get(name)
        ok = a is not None and b is not None and math.isclose(a, b, rel_tol=0, abs_tol=tolerance)
        detail = "" if a is None or b is None else f"difference {b - a:+.6g}"
        checks.append(Check(kind, name, a, b, ok, detail))
    return checks


def compare_export(checks: list[Check], recorded: str | None, reproduced: Path, tolerance: float) -> list[Check]:
    """export.json holds timings, which differ run to run: its hash is excused, and its other figures
    (sizes, macro-F1, agreement) are compared as metrics instead."""
    from reprolab.inference.onnx_export import measured_on_this_run

    if recorded is None or not reproduced.is_file():
        return []
    for check in checks:
        if check.kind == "output" and check.name.split(":", 1)[-1] == EXPORT_REPORT and not check.ok:
            check.ok, check.detail = True, "holds timings, which differ run to run: its other figures are compared"
    before, after = (
        flat_metrics(measured_on_this_run(json.loads(text), keep=False)) for text in (recorded, reproduced.read_text())
    )
    return compare_metrics(before, after, tolerance, "export_metric")


def _pins(requirements: str | None) -> dict[str, str]:
    pins = {}
    for line in (requirements or "").splitlines():
        name, sep, version = line.partition("==")
        if sep and not line.startswith("#"):
            pins[name.strip().lower()] = version.strip()
    tracked = provenance.pipeline_packages()
    return {k: v for k, v in pins.items() if k in tracked}


def trained_paths(*locks: dict) -> set[str]:
    """What the trained weights decide: the train, evaluate and export stages' outputs."""
    return {
        entry["path"]
        for lock in locks
        for stage, body in lock.get("stages", {}).items()
        if stage in ("train", "evaluate", "export")
        for entry in body.get("outs") or []
    }


def excuse_weights(checks: list[Check], reason: str, trained: set[str]) -> None:
    """Where the weights cannot match bit for bit, their hashes may differ wherever they appear (as an
    output, as the next stage's dependency, in MLflow's record): the metrics decide instead."""
    for check in checks:
        weights = check.kind == "mlflow_model" or (
            check.kind in ("output", "dependency") and check.name.split(":", 1)[-1] in trained
        )
        if weights and not check.ok:
            check.ok, check.detail = True, f"differs {reason}; metrics decide"


def recorded_kernels(train_report: dict, run: Any) -> dict[str, str] | None:
    """The CPU kernels a result was trained on: its train.json says, else its MLflow run's tags."""
    if "cpu_kernels" in train_report:
        return train_report["cpu_kernels"]
    tags = run.data.tags if run is not None else {}
    return {k.removeprefix("cpu."): v for k, v in tags.items() if k.startswith("cpu.")} or None


# What ran, library by library (provenance.cpu_kernels), and how a reader knows each.
KERNEL_FIELDS = {
    "machine": "machine",
    "cpu_vendor": "CPU vendor (MKL's code path)",
    "torch_capability": "torch SIMD",
    "numpy_simd": "numpy SIMD dispatch",
    "blas_core": "OpenBLAS core",
}


def kernel_environment(recorded: dict | None, env: dict[str, str]) -> tuple[dict[str, str], str]:
    """The environment a revision's stages run in, on the kernels it was made with, and a line saying
    which. A result from before kernels were recorded was made on the AVX2 machines of that time: it
    runs under the portable caps, which give those machines' kernels. A cap the user set explicitly
    stays (it stands for a smaller machine, and the kernels it gives are recorded and compared)."""
    env = dict(env)
    mode = recorded.get("kernels", "portable") if recorded else "portable"
    env["REPROLAB_CPU_KERNELS"] = mode
    if mode == "native":
        for name in PORTABLE_CPU_KERNELS:
            env.pop(name, None)
        return env, "native kernels, as recorded"
    for name, value in portable_caps().items():
        env.setdefault(name, value)
    if not recorded:
        return env, (
            "kernels not recorded (a result from before they were): run under the portable AVX2 caps, "
            "the kernels of the AVX2 machines that made results then"
        )
    unrecorded = [KERNEL_FIELDS[field] for field in ("numpy_simd", "blas_core") if field not in recorded]
    return env, "portable kernels, as recorded" + (
        f" ({' and '.join(unrecorded)} not recorded then: held to AVX2 with the rest)" if unrecorded else ""
    )


def kernel_differences(recorded: dict | None, reproduced: dict | None) -> list[str]:
    """What ran differently, compared by what ran (native on an AVX2 machine is AVX2), field by field."""
    if not recorded or not reproduced:
        return []
    return [
        f"{label} {reproduced[field]} here, {recorded[field]} recorded"
        for field, label in KERNEL_FIELDS.items()
        if field in recorded and field in reproduced and recorded[field] != reproduced[field]
    ]


def inexact_reason(recorded_device: str, reproduced_device: str, recorded: dict | None, reproduced: dict | None) -> str:
    """Why the trained weights cannot match bit for bit ("" when they must)."""
    if "cuda" in recorded_device or "cuda" in reproduced_device:
        return "on CUDA (bf16 and atomics are not bit-stable)"
    if kernel_differences(recorded, reproduced):
        return f"across CPU kernels ({describe_kernels(recorded)} recorded, {describe_kernels(reproduced)} here)"
    return ""


def describe_kernels(kernels: dict | None) -> str:
    if not kernels:
        return "not recorded"
    extra = "".join(
        f", {KERNEL_FIELDS[field]} {kernels[field]}"
        for field in ("cpu_vendor", "numpy_simd", "blas_core")
        if field in kernels
    )
    return f"{kernels.get('machine')} {kernels.get('torch_capability', '?')} ({kernels.get('kernels')}){extra}"


def _stage(lock: dict, stage: str) -> dict:
    return lock.get("stages", {}).get(stage) or {}


def _producers(*locks: dict) -> dict[str, str]:
    return {
        entry["path"]: stage
        for lock in locks
        for stage, body in lock.get("stages", {}).items()
        for entry in body.get("outs") or []
    }


def find_causes(recorded_lock: dict, reproduced_lock: dict, checks: list[Check], known: dict[str, Any]) -> list[dict]:
    """The failed checks grouped by the first stage whose output moved upstream of each, and what is
    known to differ between the two runs at that stage: its params, code and inputs (from the two
    dvc.lock files), package versions, CPU kernels, device (`known`: the two sides of each)."""
    stages = list(recorded_lock.get("stages", {})) or list(reproduced_lock.get("stages", {}))
    producers = _producers(recorded_lock, reproduced_lock)
    failed = [c for c in checks if not c.ok]
    moved = {c.name.split(":", 1)[0] for c in failed if c.kind == "output"}
    deps = {
        stage: [
            entry["path"]
            for lock in (recorded_lock, reproduced_lock)
            for entry in _stage(lock, stage).get("deps") or []
        ]
        for stage in stages
    }

    def origin(stage: str) -> str:
        """The first moved stage upstream of a moved stage (itself when nothing upstream moved)."""
        for path in deps.get(stage, []):
            upstream = producers.get(path)
            if upstream and upstream != stage and upstream in moved:
                return origin(upstream)
        return stage

    def producer_of(path: str) -> str | None:
        """The stage whose output holds `path` (an output, or a file inside an output folder)."""
        holders = [out for out in producers if path == out or path.startswith(out.rstrip("/") + "/")]
        return producers[max(holders, key=len)] if holders else None

    def stage_of(check: Check) -> str:
        """A difference in a stage's own record (code, input, param) is that stage's; a moved output is
        its first moved stage's."""
        if check.kind in ("output", "dependency"):
            stage, path = check.name.split(":", 1)
            if check.kind == "dependency":
                if path not in producers:
                    return stage
                stage = producers[path]
        elif check.kind == "param":
            return next(
                (
                    s
                    for s in stages
                    if any(
                        check.name in values
                        for lock in (recorded_lock, reproduced_lock)
                        for values in _stage(lock, s).get("params", {}).values()
                    )
                ),
                stages[0],
            )
        else:  # metrics come from the metrics file, MLflow's model and inputs from their stages' outputs
            stage = producer_of(METRICS_FILE if check.kind in ("metric", "mlflow_metric") else check.name) or stages[-1]
        return origin(stage) if stage in moved else stage

    groups: dict[str, list[Check]] = {}
    for check in failed:
        groups.setdefault(stage_of(check), []).append(check)
    order = {stage: i for i, stage in enumerate(stages)}
    return [
        {
            "stage": stage,
            "differences": [f"{c.kind} {c.name}" for c in group],
            "known": _known_differences(stage, group, producers, known),
            "metric_change": _metric_change(group),
        }
        for stage, group in sorted(groups.items(), key=lambda item: order.get(item[0], len(order)))
    ]


def _metric_change(group: list[Check]) -> float | None:
    """How far the group's metrics moved at most: whether different bits mean a different result."""
    moves = [
        abs(c.reproduced - c.recorded)
        for c in group
        if c.kind in ("metric", "mlflow_metric")
        and isinstance(c.recorded, float | int)
        and isinstance(c.reproduced, float | int)
    ]
    return max(moves) if moves else None


def _known_differences(stage: str, group: list[Check], producers: dict[str, str], known: dict[str, Any]) -> list[str]:
    found, stale_code = [], []
    for check in group:
        path = check.name.split(":", 1)[-1]
        if check.kind == "dependency" and path not in producers:
            if path.endswith(".py"):
                stale_code.append(path)
            else:
                found.append(f"input {path}: {_short(check.reproduced)} here, {_short(check.recorded)} in dvc.lock")
        elif check.kind == "param":
            found.append(f"param {check.name} {check.reproduced} here, {check.recorded} in dvc.lock")
    if stale_code:  # the revision's code is not what produced its dvc.lock: committed without a re-run
        found.insert(0, f"code changed after dvc.lock was written: {', '.join(stale_code)}")
    packages, tracked = known["packages"], provenance.pipeline_packages()
    found += [
        f"{name} {packages['reproduced'].get(name, 'absent')} here, {packages['recorded'][name]} recorded"
        for name in sorted(packages["recorded"])
        if name in tracked and packages["recorded"][name] != packages["reproduced"].get(name)
    ]
    found += kernel_differences(known["kernels"]["recorded"], known["kernels"]["reproduced"])
    devices = known["devices"]
    if stage in ("train", "evaluate") and devices["recorded"] != devices["reproduced"]:
        found.append(f"device {devices['reproduced']} here, {devices['recorded']} recorded")
    return found


def _short(value: Any) -> str:
    return str(value)[:12] if value else "absent"


def describe_cause(cause: dict, most: int | None = None) -> str:
    """One line: the stage, how many differences, what is known to differ there (the first `most`)."""
    shown = cause["known"][:most]
    hidden = len(cause["known"]) - len(shown)
    known = "; ".join(shown + ([f"{hidden} more"] if hidden else [])) or (
        "nothing recorded differs (code, inputs, params, packages, kernels, device): a factor the record "
        "does not hold, such as the CPU model beyond its SIMD level or a non-deterministic operation"
    )
    count = len(cause["differences"])
    moved = "" if cause.get("metric_change") is None else f"; metrics moved by at most {cause['metric_change']:.3g}"
    return f"{cause['stage']} ({count} difference{'s' if count != 1 else ''}): {known}{moved}"


def remove_outputs(worktree: Path, lock: dict) -> None:
    """Outputs committed to git (metrics, plot data) would make their stage look current, and be
    compared with themselves: every output goes before the pipeline re-runs."""
    for path in _producers(lock):
        target = worktree / path
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()


def audit(
    repo: Path, target: str, out_dir: Path | None = None, keep: bool = False, cache_dir: Path | None = None
) -> dict[str, Any]:
    """Re-derive `target` and compare. `cache_dir`: a DVC cache shared with other audits (`audit_history`),
    whose run cache gives a stage already computed there, with the same code, params and inputs, its
    outputs instead of computing them again; by default the audit's own, empty cache."""
    started = time.perf_counter()
    repo = repo.resolve()
    commit, run = resolve_target(repo, target)
    files = recorded_files(repo, commit, run)
    recorded_lock = yaml.safe_load(files["dvc.lock"] or "{}") or {}
    recorded_report = json.loads(files[TRAIN_REPORT] or "{}")
    kernels = {"recorded": recorded_kernels(recorded_report, run)}
    audit_params = (
        parse_audit_params(yaml.safe_load(files["params.yaml"] or "{}"), f"{commit[:12]}:params.yaml")
        or load_params(repo / "params.yaml", check_paths=False).audit
    )
    scratch = Path(tempfile.mkdtemp(prefix=f"reprolab-audit-{commit[:8]}-"))
    worktree = scratch / "worktree"
    provenance.git(repo, "worktree", "add", "--detach", "--quiet", str(worktree), commit)
    env, kernels["audited_on"] = kernel_environment(
        kernels["recorded"],
        {
            **os.environ,
            "MLFLOW_TRACKING_URI": f"sqlite:///{scratch / 'mlflow.db'}",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": str(worktree),
        },
    )
    env.pop("DVC_ROOT", None)
    try:
        if cache_dir is not None:
            _dvc(worktree, env, "cache", "dir", "--local", str(cache_dir.resolve()))
        # Without a lock at the revision, the working copy's says which inputs live outside git.
        current = repo / "dvc.lock"
        fallback = yaml.safe_load(current.read_text()) if current.exists() else {}
        linked = link_external_inputs(repo, worktree, recorded_lock or fallback)
        pull_tracked_inputs(repo, worktree, env)
        remove_outputs(worktree, recorded_lock or fallback)
        run_started = time.perf_counter()
        done = _dvc(worktree, env, "repro")
        (scratch / "repro.log").write_text(done.stdout + done.stderr)
        if done.returncode:
            raise AuditError(
                f"the pipeline failed at {commit[:12]}; log: {scratch / 'repro.log'}\n"
                f"{(done.stdout + done.stderr)[-1500:]}"
            )
        pipeline_seconds = time.perf_counter() - run_started
        reused = re.findall(r"Stage '([^']+)' is cached - skipping run", done.stdout + done.stderr)
        reproduced_lock = yaml.safe_load((worktree / "dvc.lock").read_text()) or {}
        reproduced_metrics = json.loads((worktree / METRICS_FILE).read_text())
        reproduced_report = json.loads((worktree / TRAIN_REPORT).read_text())
        devices = {
            "recorded": (
                recorded_report.get("device")
                or (run.data.tags.get("train.device") if run is not None else None)
                or "cpu"
            ),
            "reproduced": reproduced_report.get("device", "cpu"),
        }
        kernels["reproduced"] = reproduced_report.get("cpu_kernels")
        inexact = inexact_reason(devices["recorded"], devices["reproduced"], kernels["recorded"], kernels["reproduced"])
        tolerance = audit_params.inexact_metric_tolerance if inexact else 0.0
        checks = compare_hashes(recorded_lock, reproduced_lock) if recorded_lock else []
        if files[METRICS_FILE]:
            recorded_metrics = flat_metrics(json.loads(files[METRICS_FILE]))
            checks += compare_metrics(recorded_metrics, flat_metrics(reproduced_metrics), tolerance)
        checks += compare_export(checks, files[EXPORT_REPORT], worktree / EXPORT_REPORT, tolerance)
        if run is not None:
            logged = logged_test_metrics(run)
            checks += compare_metrics(logged, flat_metrics(reproduced_metrics), tolerance, "mlflow_metric")
            checks += compare_run_record(run, worktree)
        if inexact:
            excuse_weights(checks, inexact, trained_paths(recorded_lock, reproduced_lock))
    finally:
        if not keep:
            with contextlib.suppress(GitError):
                provenance.git(repo, "worktree", "remove", "--force", str(worktree))
            shutil.rmtree(worktree, ignore_errors=True)
            provenance.git(repo, "worktree", "prune")
    environment = {
        "recorded": (
            {k[len("version.") :]: v for k, v in run.data.tags.items() if k.startswith("version.")}
            if run is not None
            else _pins(files["requirements.lock"])
        ),
        "reproduced": provenance.package_versions(),
    }
    report = {
        "target": target,
        "commit": commit,
        "run_id": run.info.run_id if run is not None else None,
        "verdict": "pass" if all(c.ok for c in checks) else "fail",
        "metric_tolerance": tolerance,
        "inexact": inexact,
        "devices": devices,
        "cpu_kernels": kernels,
        "linked_inputs": linked,
        "reused_stages": reused,
        "pipeline_seconds": round(pipeline_seconds, 1),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "environment": environment,
        "causes": find_causes(
            recorded_lock, reproduced_lock, checks, {"packages": environment, "kernels": kernels, "devices": devices}
        ),
        "checks": [asdict(c) for c in checks],
        "scratch": str(scratch),
    }
    out_dir = out_dir or scratch
    storage.write_json(report, out_dir / "audit.json")
    storage.write_text(markdown(report), out_dir / "audit.md")
    report["report_files"] = [str(out_dir / "audit.json"), str(out_dir / "audit.md")]
    return report


def markdown(report: dict[str, Any]) -> str:
    checks = report["checks"]
    failed = [c for c in checks if not c["ok"]]
    lines = [
        f"# Audit of {report['target']}",
        "",
        f"- commit: `{report['commit']}`" + (f" (MLflow run `{report['run_id']}`)" if report["run_id"] else ""),
        f"- verdict: **{report['verdict'].upper()}**: {len(checks) - len(failed)} of {len(checks)} checks match",
        f"- devices: recorded {report['devices']['recorded']}, reproduced {report['devices']['reproduced']}; "
        f"CPU kernels: recorded {describe_kernels(report['cpu_kernels']['recorded'])}, "
        f"reproduced {describe_kernels(report['cpu_kernels']['reproduced'])}; "
        f"the stages ran on {report['cpu_kernels']['audited_on']}",
        f"- metric tolerance {report['metric_tolerance']}"
        + (f": bits cannot match {report['inexact']}" if report["inexact"] else ": every bit must match"),
        f"- pipeline re-run: {report['pipeline_seconds']} s"
        + (
            f" (outputs of {', '.join(report['reused_stages'])} from an earlier audit's run cache)"
            if report["reused_stages"]
            else ""
        )
        + f"; audit wall time {report['wall_seconds']} s",
        "",
    ]
    if report["causes"]:
        lines += [
            "## Causes",
            "",
            "Each difference under the first stage whose output moved upstream of it, with what "
            "is known to differ between the two runs there.",
            "",
        ]
        lines += [
            f"- **{describe_cause(cause)}**: " + ", ".join(f"`{name}`" for name in cause["differences"])
            for cause in report["causes"]
        ]
        lines.append("")
    if failed:
        lines += [
            "## What differed",
            "",
            "| kind | name | recorded | reproduced | detail |",
            "| --- | --- | --- | --- | --- |",
        ]
        lines += [
            f"| {c['kind']} | `{c['name']}` | {c['recorded']} | {c['reproduced']} | {c['detail']} |" for c in failed
        ]
        lines.append("")
    lines += ["## What matched", "", "| kind | name | value |", "| --- | --- | --- |"]
    lines += [
        f"| {c['kind']} | `{c['name']}` | {c['reproduced']} |"
        for c in checks
        if c["ok"] and c["recorded"] == c["reproduced"]
    ]
    excused = [c for c in checks if c["ok"] and c["recorded"] != c["reproduced"]]
    if excused:
        lines += [
            "",
            "## What differed within what this audit allows",
            "",
            "| kind | name | recorded | reproduced | detail |",
            "| --- | --- | --- | --- | --- |",
        ]
        lines += [
            f"| {c['kind']} | `{c['name']}` | {c['recorded']} | {c['reproduced']} | {c['detail']} |" for c in excused
        ]
    env = report["environment"]
    lines += ["", "## Environment", "", "| package | recorded | audit |", "| --- | --- | --- |"]
    for name in sorted(env["recorded"].keys() | env["reproduced"].keys()):
        lines.append(f"| {name} | {env['recorded'].get(name, '')} | {env['reproduced'].get(name, '')} |")
    return "\n".join(lines) + "\n"
