"""The audit's worktree gets a revision's `.dvc`-tracked inputs from the user's DVC cache, else from
the DVC remote (a relative remote URL meaning the repository's), never touching the user's cache."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from reprolab.audit.check import AuditError
from reprolab.audit.remote import pull_tracked_inputs
from tests.conftest import commit, env_for, make_project, run

ROWS = "id,label,text\n1,spam,win a prize\n2,ham,lunch at noon\n"


@pytest.fixture
def tracked(tmp_path) -> tuple[Path, dict[str, str]]:
    """A project whose own data is `dvc add`ed and committed (never pushed)."""
    repo = make_project(tmp_path / "repo", {})
    (repo / "data/own").mkdir(parents=True)
    (repo / "data/own/mail.csv").write_text(ROWS)
    run(["dvc", "add", "data/own/mail.csv"], repo)
    commit(repo, "own data")
    return repo, env_for(repo)


def worktree(repo: Path, where: Path) -> Path:
    run(["git", "worktree", "add", "--detach", "--quiet", str(where), "HEAD"], repo)
    assert not (where / "data/own/mail.csv").exists()  # git holds only the .dvc file
    return where


def cache_files(repo: Path) -> list[Path]:
    return sorted(p for p in (repo / ".dvc/cache").rglob("*") if p.is_file())


def test_inputs_come_from_the_users_cache_without_a_remote(tracked, tmp_path):
    repo, env = tracked
    before = cache_files(repo)
    assert not (repo / ".dvc-remote").exists()  # nothing was pushed: only the cache has the data
    tree = worktree(repo, tmp_path / "audit")
    pull_tracked_inputs(repo, tree, env)
    assert (tree / "data/own/mail.csv").read_text() == ROWS
    assert cache_files(repo) == before
    assert not (repo / ".dvc/config.local").exists()  # the remote settings went to the worktree only


def test_inputs_come_from_the_remote_when_the_cache_lacks_them(tracked, tmp_path):
    repo, env = tracked
    run(["dvc", "push"], repo)
    shutil.rmtree(repo / ".dvc/cache")
    tree = worktree(repo, tmp_path / "audit")  # .dvc/config says ../.dvc-remote: the repository's
    # On a narrow terminal: DVC's `remote list` table wraps its long paths (read from it, the remote's
    # URL came back cut, as under pytest-xdist's longer temporary paths).
    pull_tracked_inputs(repo, tree, {**env, "COLUMNS": "40"})
    assert (tree / "data/own/mail.csv").read_text() == ROWS


def test_inputs_in_neither_place_are_a_clear_error(tracked, tmp_path):
    repo, env = tracked
    shutil.rmtree(repo / ".dvc/cache")
    tree = worktree(repo, tmp_path / "audit")
    with pytest.raises(AuditError, match=r"cannot restore DVC-tracked inputs \['data/own/mail.csv.dvc'\]"):
        pull_tracked_inputs(repo, tree, env)
