"""`reprolab audit --all` in a DVC project below the repository's root (examples/ner): a commit's result
is known by the project's own dvc.lock and the files it names relative to the project (../../stages/...),
never by the root's pipeline."""

from __future__ import annotations

import yaml

from reprolab.audit.history import revision_key
from tests.conftest import commit, run


def lock(*deps: str) -> str:
    return yaml.safe_dump({"schema": "2.0", "stages": {"train": {"cmd": "x", "deps": [{"path": d} for d in deps]}}})


def test_a_projects_result_is_known_by_its_own_lock_and_the_code_it_names(tmp_path):
    root, project = tmp_path, tmp_path / "examples/ner"
    project.mkdir(parents=True)
    run(["git", "init", "-q"], root)
    (root / "stages").mkdir()
    (root / "stages/train.py").write_text("print(1)\n")
    (root / "dvc.lock").write_text(lock("stages/train.py"))
    (project / "params.yaml").write_text("train: {}\n")
    before_results = commit(root, "no result in the project yet")
    assert revision_key(project, before_results) is None  # the root's dvc.lock is not the project's
    (project / "dvc.lock").write_text(lock("../../stages/train.py", "data/external/wnut16.conll"))
    published = commit(root, "the project's result")
    key = revision_key(project, published)
    (root / "dvc.lock").write_text(lock("stages/train.py", "stages/other.py"))
    (root / "README.md").write_text("notes\n")
    assert revision_key(project, commit(root, "the root's pipeline and notes change")) == key
    (root / "stages/train.py").write_text("print(2)\n")
    assert revision_key(project, commit(root, "the project's training code changes")) != key
