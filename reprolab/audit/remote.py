"""The audit's DVC side: `dvc` run in the worktree, inputs git does not hold linked in from the
repository, and `.dvc`-tracked inputs restored from the user's DVC cache (read only) or the
revision's DVC remote. Outputs are never pulled: the audit re-derives them.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from reprolab.audit.check import AuditError
from reprolab.audit.lockfile import output_producers


def link_external_inputs(repo: Path, worktree: Path, lock: dict) -> list[str]:
    """Symlink dependencies git does not hold and no stage makes (registry data, vendored model)."""
    produced = output_producers(lock)
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


def run_dvc(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
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
    # `config --list` prints one `key=value` a line, URLs resolved; `remote list` is a table, which
    # DVC wraps and cuts to the terminal's width.
    settings = run_dvc(worktree, env, "config", "--list").stdout
    for name, url in re.findall(r"^remote\.(.+)\.url=(.*)$", settings, re.MULTILINE):
        if Path(url).resolve().is_relative_to(worktree.resolve()):
            moved = repo / Path(url).resolve().relative_to(worktree.resolve())
            run_dvc(worktree, env, "remote", "modify", "--local", name, "url", str(moved))
    # The user's cache has a remote's layout (files/md5/...), so it can serve as one.
    cache = run_dvc(repo, env, "cache", "dir").stdout.strip()
    if cache and Path(cache).is_dir():
        run_dvc(worktree, env, "remote", "add", "--local", "--force", "reprolab-user-cache", cache)
        if run_dvc(worktree, env, "pull", "--remote", "reprolab-user-cache", *targets).returncode == 0:
            return
    done = run_dvc(worktree, env, "pull", *targets)
    if done.returncode:
        raise AuditError(
            f"cannot restore DVC-tracked inputs {targets}: not in the DVC cache {cache or '(none)'} "
            f"nor in the remote: {done.stderr.strip()[-500:]}"
        )
