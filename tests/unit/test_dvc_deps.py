"""dvc.yaml names, for each stage, exactly the project modules the stage runs: the stage file and every
library module it imports, directly or through another (a package's __init__.py too, once it holds
more than a docstring). A module missing there would let a code change leave a stale result looking
current; one listed but not run would re-run the stage for nothing."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

STAGES = ("ingest", "clean", "tokenize", "augment", "train", "evaluate", "export")
# The distilled student: the teacher's logits of the training rows, the student.
STUDENT_STAGES = ("teacher_logits", "distill")
# The student's evaluate and export: the teacher's stage modules, run with `--model student`.
STUDENT_SCORING = ("evaluate_student", "export_student")
# The classification default's back-translation (off by default).
BACK_TRANSLATION = ("back_translate",)
# Stages that are not one of the seven: a library module run as a script.
CHECKS = ("check_params",)
PACKAGES = ("reprolab", "stages")


def module_file(root: Path, name: str) -> Path | None:
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def runs_code(init: Path) -> bool:
    """Whether a package's __init__.py holds anything besides its docstring."""
    body = ast.parse(init.read_text()).body
    return any(not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)) for node in body)


def imported_modules(root: Path, source: Path) -> set[Path]:
    """Every project file that running `source` can execute: imports at any depth (inside functions too),
    followed transitively; `import a.b` runs a/__init__.py and a/b.py."""
    seen: set[Path] = set()
    todo = [source]
    while todo:
        file = todo.pop()
        if file in seen:
            continue
        seen.add(file)
        for node in ast.walk(ast.parse(file.read_text(), str(file))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            for name in names:
                parts = name.split(".")
                if parts[0] not in PACKAGES:
                    continue
                for depth in range(1, len(parts) + 1):
                    found = module_file(root, ".".join(parts[:depth]))
                    if found is not None:
                        todo.append(found)
    return {f for f in seen if f.name != "__init__.py" or runs_code(f)}


def declared_code_deps(root: Path, stage: str, project: str = ".") -> set[Path]:
    """The .py deps of a stage of `project`'s dvc.yaml (a folder of `root`), as paths under `root`."""
    deps = yaml.safe_load((root / project / "dvc.yaml").read_text())["stages"][stage]["deps"]
    return {(root / project / dep).resolve() for dep in deps if dep.endswith(".py")}


def entry_point(root: Path, stage: str, project: str = ".") -> Path:
    """The file a stage's `python -m <module>` command runs (after any `VAR=value` settings and the
    dvc.yaml's own `vars`)."""
    spec = yaml.safe_load((root / project / "dvc.yaml").read_text())
    command = spec["stages"][stage]["cmd"]
    for entry in spec.get("vars", []):
        for name, value in entry.items():
            command = command.replace(f"${{{name}}}", value)
    words = command.split()
    while "=" in words[0]:
        words.pop(0)
    assert words[:2] == ["python", "-m"], f"{stage}: {command}"
    return module_file(root, words[2])


def missing_and_extra(root: Path, stage: str, project: str = ".") -> tuple[set[str], set[str]]:
    root = root.resolve()
    runs = {p.relative_to(root).as_posix() for p in imported_modules(root, entry_point(root, stage, project))}
    declared = {p.relative_to(root).as_posix() for p in declared_code_deps(root, stage, project)}
    return runs - declared, declared - runs


# Each DVC project of the repository and its stages: the classification default, the NER default.
PROJECTS = {
    ".": STAGES + BACK_TRANSLATION + STUDENT_STAGES + STUDENT_SCORING + CHECKS,
    "examples/ner": STAGES + STUDENT_STAGES + STUDENT_SCORING + CHECKS,
}


@pytest.mark.parametrize(
    ("project", "stage"), [(project, stage) for project, stages in PROJECTS.items() for stage in stages]
)
def test_dvc_yaml_lists_exactly_the_modules_each_stage_runs(project, stage):
    missing, extra = missing_and_extra(REPO, stage, project)
    assert not missing, f"{project}/dvc.yaml: stage {stage} runs {sorted(missing)} but does not depend on them"
    assert not extra, f"{project}/dvc.yaml: stage {stage} depends on {sorted(extra)} but never runs them"


def test_a_removed_dependency_and_a_new_import_are_both_caught(tmp_path):
    """The check on a copy of the project: drop one module from a stage's deps, or make a library module
    import one more, and the stage is reported."""
    import shutil

    for item in ("dvc.yaml", "stages", "reprolab"):
        copy = shutil.copytree if (REPO / item).is_dir() else shutil.copy
        copy(REPO / item, tmp_path / item)
    assert missing_and_extra(tmp_path, "evaluate") == (set(), set())
    dvc_yaml = (tmp_path / "dvc.yaml").read_text()
    evaluation_figures = "      - reprolab/results/evaluation_figures.py\n"
    figures = "      - reprolab/results/figures.py\n"  # evaluate's only, after evaluation_figures.py
    (tmp_path / "dvc.yaml").write_text(dvc_yaml.replace(evaluation_figures + figures, evaluation_figures))
    assert missing_and_extra(tmp_path, "evaluate") == ({"reprolab/results/figures.py"}, set())
    (tmp_path / "dvc.yaml").write_text(dvc_yaml)
    figures = tmp_path / "reprolab/results/figures.py"
    figures.write_text(figures.read_text() + "\n\ndef later():\n    from reprolab.data import augmentation\n")
    assert missing_and_extra(tmp_path, "evaluate") == ({"reprolab/data/augmentation.py"}, set())
    (tmp_path / "reprolab/__init__.py").write_text('"""docstring"""\nSETTING = 1\n')
    assert "reprolab/__init__.py" in missing_and_extra(tmp_path, "evaluate")[0]


def test_the_stages_folder_holds_the_stages_and_nothing_else():
    modules = {p.stem for p in (REPO / "stages").glob("*.py")} - {"__init__"}
    assert modules == set(STAGES + BACK_TRANSLATION + STUDENT_STAGES)
    assert set(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]) == set(PROJECTS["."])


def test_no_library_module_shadows_the_standard_library():
    """(`stages/tokenize.py` keeps the stage's name: run as `python -m stages.tokenize`, it shadows nothing.)"""
    import sys

    names = {p.stem for p in (REPO / "reprolab").glob("*.py")}
    assert not names & sys.stdlib_module_names
