"""`reprolab audit --all [--since REV]`: audit every result published on the current branch (of the DVC
project in the working directory: the root's, or examples/ner's).

Every commit on the branch's first-parent history that holds a dvc.lock is audited (reprolab.audit.reproduce),
oldest first, except a commit whose pipeline, params, recorded results and every dependency git holds
are identical to an already audited commit's: its result is the same, and it takes that verdict.
All audits share one scratch DVC cache, so a stage that an earlier commit already ran with the same
code, params and inputs is restored from DVC's run cache instead of computed again. (DVC keeps no
run cache of a stage with an uncached output that is neither a metric nor a plot: in this pipeline
train and evaluate, whose plot data and figures are committed to git as plain outputs, always run.)
The summary (commit, date, verdict, checks matched, cause) is written as audit-history.md and .json
next to each commit's own audit.md, after each commit, so a long audit shows how far it has come.
"""

from __future__ import annotations

import hashlib
import posixpath
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from reprolab import storage
from reprolab.audit.check import AuditError
from reprolab.audit.report import describe_cause
from reprolab.audit.reproduce import audit, project_of
from reprolab.errors import StageError
from reprolab.records import provenance
from reprolab.records.provenance import git_show

IDENTITY_FILES = ("dvc.yaml", "dvc.lock", "params.yaml")


def revision_key(repo: Path, commit: str) -> str | None:
    """What a commit's result depends on and records, as one digest (None: the commit records no
    result): git's ids of its pipeline files and of every dependency its dvc.lock names that git holds.
    `repo` is the DVC project's folder (the repository's root, or one below it, whose dvc.lock names
    paths relative to it: ../../stages/train.py). Dependencies outside git (the corpus, the vendored
    model, a path outside the repository) are named by their hashes in dvc.lock."""
    top, project = project_of(repo)
    lock_text = git_show(repo, commit, "./dvc.lock")  # ./: the project's own, not the root's
    if lock_text is None:
        return None
    lock = yaml.safe_load(lock_text) or {}
    named = set(IDENTITY_FILES) | {
        dep["path"]
        for body in lock.get("stages", {}).values()
        for dep in body.get("deps") or []
        if not Path(dep["path"]).is_absolute()
    }
    in_repository = {posixpath.normpath(posixpath.join(project, path)) for path in named}
    paths = sorted(path for path in in_repository if path != ".." and not path.startswith("../"))
    listing = provenance.git(top, "ls-tree", "--full-tree", commit, "--", *paths)
    return hashlib.sha256(listing.encode()).hexdigest()


def branch_commits(repo: Path, since: str | None) -> list[str]:
    """The current branch's first-parent history, oldest first, from `since` (inclusive) when given."""
    commits = provenance.git(repo, "rev-list", "--first-parent", "--reverse", "HEAD").split()
    if since is None:
        return commits
    try:
        first = provenance.git(repo, "rev-parse", "--verify", "--quiet", f"{since}^{{commit}}").strip()
    except StageError:
        raise AuditError(f"--since {since!r}: not a git revision") from None
    if first not in commits:
        raise AuditError(f"--since {since!r}: {first[:12]} is not on the current branch's first-parent history")
    return commits[commits.index(first) :]


def audit_history(
    repo: Path,
    since: str | None = None,
    out_dir: Path | None = None,
    progress: Callable[[dict], None] = lambda row: None,
) -> dict[str, Any]:
    started = time.perf_counter()
    repo = repo.resolve()
    commits = branch_commits(repo, since)
    scratch = Path(tempfile.mkdtemp(prefix="reprolab-audit-all-"))
    out_dir = out_dir or scratch
    audited: dict[str, dict] = {}
    rows = []
    try:
        for commit in commits:
            key = revision_key(repo, commit)
            if key is None:
                continue
            date, _, subject = provenance.git(repo, "log", "-1", "--format=%cs %s", commit).strip().partition(" ")
            row = {"commit": commit, "date": date, "subject": subject[:72]}
            if key in audited:
                first = audited[key]
                row.update(
                    {name: first[name] for name in ("verdict", "matched", "checks")},
                    cause=f"same pipeline, params, results and dependencies as {first['commit'][:12]}",
                    same_as=first["commit"],
                    seconds=0.0,
                )
            else:
                row.update(_audit_row(repo, commit, out_dir / commit[:12], scratch / "dvc-cache"))
                audited[key] = row
            rows.append(row)
            summary = _write_summary(repo, since, rows, len(audited), started, out_dir)
            progress(row)
    finally:
        shutil.rmtree(scratch / "dvc-cache", ignore_errors=True)  # the results' own reports stay
    if not rows:
        raise AuditError(
            "no commit on the current branch"
            + (f" since {since}" if since else "")
            + " holds a dvc.lock: there is no result to audit"
        )
    return summary


def _write_summary(
    repo: Path, since: str | None, rows: list[dict], audited: int, started: float, out_dir: Path
) -> dict[str, Any]:
    summary = {
        "head": provenance.git(repo, "rev-parse", "HEAD").strip(),
        "since": since,
        "verdict": "pass" if all(row["verdict"] == "pass" for row in rows) else "fail",
        "commits": len(rows),
        "audited": audited,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "rows": rows,
        "report_files": [str(out_dir / "audit-history.json"), str(out_dir / "audit-history.md")],
    }
    storage.write_json(summary, out_dir / "audit-history.json")
    storage.write_text(markdown(summary), out_dir / "audit-history.md")
    return summary


def _audit_row(repo: Path, commit: str, out_dir: Path, cache: Path) -> dict[str, Any]:
    try:
        report = audit(repo, commit, out_dir, cache_dir=cache)
    except StageError as exc:  # a revision whose pipeline cannot run here is a failed audit, not the end
        return {"verdict": "error", "matched": 0, "checks": 0, "cause": str(exc).splitlines()[0], "seconds": None}
    return {
        "verdict": report["verdict"],
        "matched": sum(c["ok"] for c in report["checks"]),
        "checks": len(report["checks"]),
        "cause": "; ".join(describe_cause(c, most=2) for c in report["causes"]),
        "seconds": report["wall_seconds"],
        "reused_stages": report["reused_stages"],
        "report": str(out_dir / "audit.md"),
    }


def markdown(summary: dict[str, Any]) -> str:
    rows = summary["rows"]
    passed = sum(row["verdict"] == "pass" for row in rows)
    lines = [
        f"# Audit of the history of `{summary['head'][:12]}`"
        + (f" since `{summary['since']}`" if summary["since"] else ""),
        "",
        f"- verdict: **{summary['verdict'].upper()}**: {passed} of {len(rows)} commits with results reproduce",
        f"- {summary['audited']} audited, {len(rows) - summary['audited']} identical to an earlier one; "
        f"wall time {summary['wall_seconds']} s",
        "",
        "| commit | date | verdict | checks matched | cause |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| `{row['commit'][:12]}` {_cell(row['subject'])} | {row['date']} | {row['verdict'].upper()} | "
        f"{row['matched']} of {row['checks']} | {_cell(row['cause'])} |"
        for row in rows
    ]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
