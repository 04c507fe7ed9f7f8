"""`reprolab audit <rev | mlflow-run-id>`: re-derive a recorded result from its commit and compare.

The result is that of the DVC project the command runs in: the repository's root (the classification
default) or a project below it (`cd examples/ner` for the token-classification default's).

The revision is checked out as a detached git worktree outside the working copy, with its own DVC
cache and its own MLflow store, so the user's working copy, cache and tracking history are never
touched. Inputs that git does not hold (the npm corpus, the vendored model) are linked in from the
repository; `.dvc`-tracked inputs come from the user's DVC cache (read only), else from the DVC
remote (both done in remote.py). Every output the revision committed is removed and every stage re-run
(`dvc repro`) on the CPU kernels the revision recorded (on the portable caps where it recorded none:
see kernels.kernel_environment); then the result is compared with what the revision recorded: each
output and dependency hash in its dvc.lock, the params dvc.lock was produced with, each metric in its
reports/metrics.json, and, given a run id, each test metric MLflow recorded. All of it exactly,
unless the weights cannot match bit for bit (CUDA, or other CPU kernels than the recorded ones): the
metrics then decide, within audit.inexact_metric_tolerance. Differences are reported under their
causes (causes.find_causes): the first stage whose output moved, and what is known to differ there;
the report is written as audit.json and, rendered by report.markdown, audit.md.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from reprolab import storage
from reprolab.audit.causes import find_causes
from reprolab.audit.check import EXPORT_REPORT, METRICS_FILE, STUDENT_METRICS_FILE, TRAIN_REPORT, AuditError, Check
from reprolab.audit.kernels import inexact_reason, kernel_environment, recorded_kernels
from reprolab.audit.lockfile import downstream_of, lock_entries, lock_params, output_producers
from reprolab.audit.remote import link_external_inputs, pull_tracked_inputs, run_dvc
from reprolab.audit.report import markdown
from reprolab.params import load_params, parse_audit_params
from reprolab.records import provenance, tracking
from reprolab.records.provenance import GitError, git_show
from reprolab.records.tracking import MODEL_DIGEST_TAG, flat_metrics

RUN_ID = re.compile(r"[0-9a-f]{32}")


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


def project_of(folder: Path) -> tuple[Path, str]:
    """(the git repository's top folder, the DVC project's folder under it as git names it: "." for
    the root's pipeline, `examples/ner` for the token-classification default's)."""
    top = Path(provenance.git(folder, "rev-parse", "--show-toplevel").strip()).resolve()
    return top, folder.resolve().relative_to(top).as_posix()


def recorded_files(repo: Path, commit: str, run: Any = None) -> dict[str, str]:
    """The revision's pipeline files: those of the DVC project in folder `repo` (the repository's
    root, or a project below it) and the repository's requirements.lock. A run id may point at a commit
    without dvc.lock (results are often committed after the run): MLflow's record is then what the
    audit compares against."""
    names = ("dvc.yaml", "dvc.lock", "params.yaml", METRICS_FILE, TRAIN_REPORT, EXPORT_REPORT, STUDENT_METRICS_FILE)
    files = {name: git_show(repo, commit, f"./{name}") for name in names}  # ./: relative to `repo`
    files["requirements.lock"] = git_show(project_of(repo)[0], commit, "requirements.lock")
    if files["dvc.yaml"] is None:
        raise AuditError(f"revision {commit[:12]} has no dvc.yaml: it predates the pipeline")
    if files["dvc.lock"] is None and run is None:
        raise AuditError(f"revision {commit[:12]} has no dvc.lock: no result was recorded there")
    return files


def logged_test_metrics(run: Any) -> dict[str, float]:
    """The test metrics MLflow holds for a run: an evaluate run's own; for a train run, those of the
    latest evaluate run that scored its model: the one naming the run, else one that scored the same
    weights (a run that trained byte-identical weights again, which DVC therefore did not evaluate)."""
    if run.data.tags.get("reprolab.stage") == "train":
        run = tracking.latest_evaluation(run.info.run_id) or _evaluation_of_weights(run) or run
    return {k[len("test.") :]: v for k, v in run.data.metrics.items() if k.startswith("test.")}


def _evaluation_of_weights(train_run: Any) -> Any:
    """The latest evaluate run that scored weights with the md5 the train run recorded, or None."""
    model_md5 = train_run.data.tags.get(MODEL_DIGEST_TAG)
    if not model_md5:
        return None
    runs = tracking.connect().search_runs(
        [train_run.info.experiment_id],
        filter_string=f"tags.`{MODEL_DIGEST_TAG}` = '{model_md5}' and tags.`reprolab.stage` = 'evaluate'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
        output_format="list",
    )
    return runs[0] if runs else None


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


def compare_hashes(recorded: dict, reproduced: dict) -> list[Check]:
    checks = []
    for section, kind in (("outs", "output"), ("deps", "dependency")):
        before, after = lock_entries(recorded, section), lock_entries(reproduced, section)
        for name in sorted(before.keys() | after.keys()):
            checks.append(Check(kind, name, before.get(name), after.get(name), before.get(name) == after.get(name)))
    before, after = lock_params(recorded), lock_params(reproduced)
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


# The timed figures an export report held until the timings moved to `make bench`.
RECORDED_TIMINGS = ("latency_ms_p50", "latency_ms_p95", "rows_per_second", "speedup_vs_torch")


def _untimed(report: dict) -> dict:
    return {
        name: {k: v for k, v in row.items() if k not in RECORDED_TIMINGS}
        for name, row in report.get("backends", {}).items()
    }


def compare_export(checks: list[Check], recorded: str | None, reproduced: Path, tolerance: float) -> list[Check]:
    """A revision's export.json that holds timings (recorded before they moved to `make bench`) differs run
    to run: its hash is excused, and its other figures (sizes, macro-F1, agreement) are compared as metrics
    instead. A report without timings is held to its hash like any output."""
    if recorded is None or not reproduced.is_file():
        return []
    recorded_report = json.loads(recorded)
    if not any(RECORDED_TIMINGS[0] in row for row in recorded_report.get("backends", {}).values()):
        return []
    for check in checks:
        if check.kind == "output" and check.name.split(":", 1)[-1] == EXPORT_REPORT and not check.ok:
            check.ok, check.detail = True, "holds timings, which differ run to run: its other figures are compared"
    before, after = (flat_metrics(_untimed(report)) for report in (recorded_report, json.loads(reproduced.read_text())))
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
    """What the trained weights decide: the outputs of train and of every stage downstream of it."""
    decided = downstream_of("train", *locks)
    return {
        entry["path"]
        for lock in locks
        for stage, body in lock.get("stages", {}).items()
        if stage in decided
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


def remove_outputs(worktree: Path, lock: dict) -> None:
    """Outputs committed to git (metrics, plot data) would make their stage look current, and be
    compared with themselves: every output goes before the pipeline re-runs."""
    for path in output_producers(lock):
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
    repo = repo.resolve()  # the DVC project's folder: the repository's root, or examples/ner
    top, project = project_of(repo)
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
    provenance.git(top, "worktree", "add", "--detach", "--quiet", str(worktree), commit)
    here = worktree / project  # the project's folder in the worktree
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
            run_dvc(worktree, env, "cache", "dir", "--local", str(cache_dir.resolve()))
        # Without a lock at the revision, the working copy's says which inputs live outside git.
        current = repo / "dvc.lock"
        fallback = yaml.safe_load(current.read_text()) if current.exists() else {}
        linked = link_external_inputs(repo, here, recorded_lock or fallback)
        pull_tracked_inputs(top, worktree, env)
        remove_outputs(here, recorded_lock or fallback)
        run_started = time.perf_counter()
        done = run_dvc(here, env, "repro")
        (scratch / "repro.log").write_text(done.stdout + done.stderr)
        if done.returncode:
            raise AuditError(
                f"the pipeline failed at {commit[:12]}; log: {scratch / 'repro.log'}\n"
                f"{(done.stdout + done.stderr)[-1500:]}"
            )
        pipeline_seconds = time.perf_counter() - run_started
        reused = re.findall(r"Stage '([^']+)' is cached - skipping run", done.stdout + done.stderr)
        reproduced_lock = yaml.safe_load((here / "dvc.lock").read_text()) or {}
        reproduced_metrics = json.loads((here / METRICS_FILE).read_text())
        reproduced_report = json.loads((here / TRAIN_REPORT).read_text())
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
        # The student's scores, named by their file (its teacher's keys are metrics.json's too).
        if files[STUDENT_METRICS_FILE] and (here / STUDENT_METRICS_FILE).is_file():
            student = (
                flat_metrics(json.loads(text), prefix=f"{STUDENT_METRICS_FILE}:")
                for text in (files[STUDENT_METRICS_FILE], (here / STUDENT_METRICS_FILE).read_text())
            )
            checks += compare_metrics(*student, tolerance)
        checks += compare_export(checks, files[EXPORT_REPORT], here / EXPORT_REPORT, tolerance)
        if run is not None:
            logged = logged_test_metrics(run)
            checks += compare_metrics(logged, flat_metrics(reproduced_metrics), tolerance, "mlflow_metric")
            checks += compare_run_record(run, here)
        if inexact:
            excuse_weights(checks, inexact, trained_paths(recorded_lock, reproduced_lock))
    finally:
        if not keep:
            with contextlib.suppress(GitError):
                provenance.git(top, "worktree", "remove", "--force", str(worktree))
            shutil.rmtree(worktree, ignore_errors=True)
            provenance.git(top, "worktree", "prune")
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
        "project": project,
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
