"""`reprolab compare <revA> <revB> [...]`: metrics, params and plots of revisions side by side.

Reads each revision's committed reports and params from git (`workspace` for the working tree)
and writes a self-contained report: Markdown plus PNGs, and one HTML file with the PNGs inlined,
so it opens offline (DVC's own HTML plots load their scripts from a CDN). The headline metrics come
first, with the change from the first revision; where two revisions scored the same test rows, a
paired bootstrap interval and a paired test (McNemar's for labels, approximate randomization for a
tagger's entities) say whether the change is real (`significance`, `entity_significance`). Params
are read as written: a revision from before a schema change still compares.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import yaml

from reprolab import paths, storage
from reprolab.errors import StageError
from reprolab.records import provenance
from reprolab.records.provenance import GitError
from reprolab.results.entity_significance import EntityComparison, compare_taggers
from reprolab.results.figures import save_png
from reprolab.results.report import Report, Table
from reprolab.results.significance import PairedComparison, compare_predictions
from reprolab.tasks import catalog
from reprolab.tasks.base import Task

WORKSPACE = "workspace"
METRIC_FILES = tuple(path.as_posix() for path in (paths.METRICS, paths.TRAIN_REPORT, paths.DATA_REPORT))
PREDICTIONS = f"{paths.PLOTS.as_posix()}/test_predictions_{{model}}.csv"
CURVES = {  # figure -> (file per model, x column, y column)
    "roc": (f"{paths.PLOTS.as_posix()}/roc_{{model}}.csv", "fpr", "tpr"),
    "pr": (f"{paths.PLOTS.as_posix()}/pr_{{model}}.csv", "recall", "precision"),
}


def read_at(repo: Path, rev: str, path: str) -> str | None:
    if rev == WORKSPACE:
        file = repo / path
        return file.read_text(encoding="utf-8") if file.exists() else None
    return provenance.git_show(repo, rev, f"./{path}")  # relative to `repo`: the root, or examples/ner


def read_rows_at(repo: Path, rev: str, path: str) -> list[dict[str, str]]:
    """A CSV report's rows at a revision; none where the revision does not hold it."""
    text = read_at(repo, rev, path)
    return list(csv.DictReader(io.StringIO(text))) if text else []


def experiment_refs(repo: Path) -> dict[str, list[tuple[str, str]]]:
    """DVC experiment name -> its (git ref, baseline commit) pairs, from refs/exps/<baseline[:2]>/<baseline[2:]>/<name>
    (one name can recur across baselines)."""
    refs = provenance.git(repo, "for-each-ref", "--format=%(refname)", "refs/exps/").split()
    found = {}
    for ref in refs:
        parts = ref.split("/")
        if len(parts) == 5:
            found.setdefault(parts[4], []).append((ref, parts[2] + parts[3]))
    return found


def resolve(repo: Path, rev: str) -> str:
    """What git reads `rev` from: a revision as given, or a DVC experiment's ref by its name."""
    if rev == WORKSPACE:
        return rev
    try:
        provenance.git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
        return rev
    except GitError:
        pass
    matches = experiment_refs(repo).get(rev, [])
    if len(matches) == 1:
        return matches[0][0]
    if matches:
        raise StageError(
            f"{rev!r}: {len(matches)} DVC experiments have this name (baselines "
            f"{', '.join(base[:7] for _, base in matches)}): name one by its ref"
        )
    raise StageError(f"{rev!r}: neither a git revision nor a DVC experiment name (`dvc exp list`)")


def experiments_of(repo: Path, baseline: str = "HEAD") -> list[str]:
    """The names of the DVC experiments run from `baseline` (`dvc exp run`, `--temp`, `--queue`)."""
    commit = provenance.git(repo, "rev-parse", baseline).strip()
    return sorted(name for name, refs in experiment_refs(repo).items() if any(base == commit for _, base in refs))


def snapshot(repo: Path, rev: str) -> dict[str, Any]:
    """A revision's task, params, metrics, curves, history and test predictions; `rev` is shown as given."""
    shown, rev = rev, resolve(repo, rev)
    params_text = read_at(repo, rev, "params.yaml")
    if params_text is None:
        raise StageError(f"{shown}: no params.yaml: the revision predates the pipeline")
    params_tree = yaml.safe_load(params_text) or {}
    # A revision from before the `task` key trained the default: its params do not differ from one naming it.
    params_tree.setdefault("task", catalog.DEFAULT)
    task = catalog.task_named(params_tree["task"])
    metrics: dict[str, Any] = {}
    for path in METRIC_FILES:
        text = read_at(repo, rev, path)
        if text:
            metrics.update(storage.flatten(json.loads(text), f"{Path(path).stem}.", numbers_only=True))
    curves = {}
    for figure, (pattern, x, y) in CURVES.items():
        for model in task.scored:
            if rows := read_rows_at(repo, rev, pattern.format(model=model)):
                curves[(figure, model)] = ([float(r[x]) for r in rows], [float(r[y]) for r in rows])
    history = read_rows_at(repo, rev, paths.TRAIN_HISTORY.as_posix())
    predictions = {}
    for model in task.scored:
        if rows := read_rows_at(repo, rev, PREDICTIONS.format(model=model)):
            predictions[model] = PREDICTION_ROWS[task.name](rows)
    params = {key: "null" if value is None else str(value) for key, value in storage.flatten(params_tree).items()}
    return {
        "rev": shown,
        "task": task,
        "params": params,
        "metrics": metrics,
        "curves": curves,
        "history": history,
        "predictions": predictions,
    }


def sentence_rows(rows: list[dict[str, str]]) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """A tagger's per-word predictions (id, position, actual, predicted) as id -> (true tags, tags)."""
    words: dict[str, list[tuple[int, str, str]]] = {}
    for row in rows:
        words.setdefault(row["id"], []).append((int(row["position"]), row["actual"], row["predicted"]))
    return {
        sentence: (tuple(a for _, a, _ in sorted(found)), tuple(p for _, _, p in sorted(found)))
        for sentence, found in words.items()
    }


# Each task's test predictions as compared: id -> (truth, prediction), a text's label or a sentence's tags;
# and the paired test of two models' predictions of the same ids (truth, a, b), as evaluate runs it.
PREDICTION_ROWS = {
    "sequence_classification": lambda rows: {row["id"]: (row["actual"], row["predicted"]) for row in rows},
    "token_classification": sentence_rows,
}
PAIRED_TESTS = {
    "sequence_classification": compare_predictions,
    "token_classification": lambda truth, a, b: compare_taggers(
        [list(t) for t in truth], [list(t) for t in a], [list(t) for t in b]
    ),
}

Comparison = PairedComparison | EntityComparison


def compare_rows(task: Task, a: dict | None, b: dict | None) -> Comparison | None:
    """Two prediction files of the task (id -> (truth, predicted)) compared row by row (sentence by
    sentence for a tagger); None unless both scored the same test rows."""
    if not a or not b or a.keys() != b.keys():
        return None
    ids = sorted(a)
    if any(a[i][0] != b[i][0] for i in ids):
        return None  # the same ids with other labels: not the same test set
    return PAIRED_TESTS[task.name]([a[i][0] for i in ids], [a[i][1] for i in ids], [b[i][1] for i in ids])


def paired(snapshots: list[dict]) -> list[tuple[str, str, Comparison]]:
    """(model, revision, comparison with the first revision) wherever both scored the same test rows."""
    found = []
    first = snapshots[0]
    for snap in snapshots[1:]:
        if snap["task"] is not first["task"]:
            continue  # a tagger and a classifier score different things
        for model in snap["task"].scored:
            if result := compare_rows(snap["task"], first["predictions"].get(model), snap["predictions"].get(model)):
                found.append((model, snap["rev"], result))
    return found


def _figure(snapshots: list[dict], figure: str, out: Path) -> Path | None:
    _, x_name, y_name = CURVES[figure]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    drawn = False
    for snap in snapshots:
        for model in snap["task"].scored:
            if (figure, model) in snap["curves"]:
                x, y = snap["curves"][(figure, model)]
                fine_tuned = model == snap["task"].model_name
                ax.plot(x, y, label=f"{snap['rev']} {model}", linestyle="-" if fine_tuned else "--")
                drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set(xlabel=x_name, ylabel=y_name, title={"roc": "ROC", "pr": "Precision-recall"}[figure])
    ax.legend(fontsize=8)
    return save_png(fig, out / f"{figure}.png")


def _history_figure(snapshots: list[dict], out: Path) -> Path | None:
    if not any(s["history"] for s in snapshots):
        return None
    task = snapshots[0]["task"]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for snap in snapshots:
        rows = [r for r in snap["history"] if task.selection_score in r]
        ax.plot(
            [int(r["epoch"]) for r in rows],
            [float(r[task.selection_score]) for r in rows],
            marker="o",
            label=snap["rev"],
        )
    ax.set(xlabel="epoch", ylabel=f"validation {task.score_title}", title="Training")
    ax.legend(fontsize=8)
    return save_png(fig, out / "train_history.png")


def _cell(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def _change(first: Any, last: Any) -> str:
    if not isinstance(first, int | float) or not isinstance(last, int | float) or first == last:
        return "" if first == last else "-"
    return f"{last - first:+d}" if isinstance(first, int) and isinstance(last, int) else f"{last - first:+.4f}"


def _table(
    snapshots: list[dict], key: str, names: list[str] | None = None, only_different: bool = False, change: bool = False
) -> list[list[str]]:
    """One row per name: its value in each revision and, with `change`, last minus first."""
    rows = []
    for name in names if names is not None else sorted(set().union(*(s[key] for s in snapshots))):
        values = [s[key].get(name) for s in snapshots]
        if only_different and len(set(map(str, values))) == 1:
            continue
        rows.append([name, *map(_cell, values)] + ([_change(values[0], values[-1])] if change else []))
    return rows


def _test_cells(c: Comparison) -> list[str]:
    """The rows only one side got right and the paired test's p: McNemar's for labels; for tags, the
    approximate-randomization test, which counts no rows."""
    if isinstance(c, EntityComparison):
        return ["-", "-", f"{c.randomization_p:.3g}"]
    return [str(c.only_a_right), str(c.only_b_right), f"{c.mcnemar_p:.3g}"]


def _verdict_rows(comparisons: list[tuple[str, str, Comparison]], first: str) -> list[list[str]]:
    rows = []
    for model, rev, c in comparisons:
        rows.append(
            [
                model,
                f"{rev} vs {first}",
                str(c.rows),
                f"{c.difference:+.4f}",
                f"[{c.interval[0]:+.4f}, {c.interval[1]:+.4f}]",
                *_test_cells(c),
                c.verdict_for(first, rev),
            ]
        )
    return rows


def selected_by(task: Task) -> str:
    """Shown beside the test score ranked by: choosing a configuration by its test score would tune to the test set."""
    return f"train.best_{task.selection_score}"


def headline(task: Task) -> list[str]:
    return [f"metrics.{model}.{name}" for name in (task.score, task.accuracy) for model in task.scored]


def ranked_by(task: Task) -> str:
    return f"metrics.{task.model_name}.{task.score}"


def versus_baseline(snap: dict) -> str:
    """Within one revision, the fine-tuned model's test score minus the baseline's on the same test rows,
    with the paired verdict ("-" where the revision lacks either's predictions)."""
    task = snap["task"]
    c = compare_rows(task, snap["predictions"].get(task.baseline_name), snap["predictions"].get(task.model_name))
    if c is None:
        return "-"
    verdict = c.verdict_for(task.baseline_title, task.model_name)
    return f"{c.difference:+.4f} [{c.interval[0]:+.4f}, {c.interval[1]:+.4f}] {verdict}"


def ranking(snapshots: list[dict], comparisons: list[tuple[str, str, Comparison]]) -> list[list[str]]:
    """Every revision by the fine-tuned model's test score (`Task.score`), best first, with its validation one
    (the score to choose by), its change from the first revision, the paired verdict against it, how it
    stands against the baseline of the same revision, and the params it changed."""
    first = snapshots[0]
    key = ranked_by(first["task"])
    verdicts = {
        rev: c.verdict.replace("B better", "better").replace("A better", "worse")
        for model, rev, c in comparisons
        if model == first["task"].model_name
    }
    rows = []
    for snap in sorted(snapshots, key=lambda s: -s["metrics"].get(key, float("-inf"))):
        changed = [f"{k}={v}" for k, v in sorted(snap["params"].items()) if first["params"].get(k) != v]
        rows.append(
            [
                snap["rev"],
                _cell(snap["metrics"].get(key)),
                _cell(snap["metrics"].get(selected_by(first["task"]))),
                _change(first["metrics"].get(key), snap["metrics"].get(key)),
                "baseline" if snap is first else verdicts.get(snap["rev"], "-"),
                versus_baseline(snap),
                "; ".join(changed) or "-",
            ]
        )
    return [[str(rank), *row] for rank, row in enumerate(rows, start=1)]


def verdict_header(task: Task) -> list[str]:
    return [
        "model",
        "revisions",
        "test rows",
        f"{task.score_title} change",
        "95% paired bootstrap interval",
        "only the first right",
        "only the other right",
        task.paired_test[1],
        "verdict",
    ]


def compare(repo: Path, revs: list[str], out: Path, rank: bool = False) -> dict[str, Path]:
    """The report of `revs` (the first is what the others are compared with); with `rank`, a table of
    all of them by the fine-tuned model's test score comes first."""
    if len(revs) < 2:
        raise StageError("compare needs at least two revisions (use `workspace` for the working tree)")
    snapshots = [snapshot(repo, rev) for rev in revs]
    task = snapshots[0]["task"]
    figures = [
        f for f in (_figure(snapshots, "roc", out), _figure(snapshots, "pr", out), _history_figure(snapshots, out)) if f
    ]
    change = f"change ({revs[-1]} - {revs[0]})"
    comparisons = paired(snapshots)
    shown = [n for n in headline(task) if any(n in s["metrics"] for s in snapshots)]
    metric_rows = _table(snapshots, "metrics", change=True)
    tables = [
        Table("Headline", ["metric", *revs, change], _table(snapshots, "metrics", shown, change=True)),
        Table(
            "Is the change real?",
            verdict_header(task),
            _verdict_rows(comparisons, revs[0]),
            empty="(no two revisions scored the same test rows)",
        ),
        Table("Params that differ", ["name", *revs], _table(snapshots, "params", only_different=True)),
        Table(f"All metrics ({len(metric_rows)})", ["name", *revs, change], metric_rows, folded=True),
    ]
    if rank:
        header = ["rank", "revision", task.score_title, f"val {task.score_title}", "change", "verdict"]
        header += [f"vs {task.baseline_title} (95% interval)", "params changed"]
        title = f"Ranked by the {task.model_name}'s test {task.score_title} (against {revs[0]})"
        tables.insert(0, Table(title, header, ranking(snapshots, comparisons)))
    report = Report(f"Comparison: {' vs '.join(revs)}", tables, figures, "reprolab compare")
    storage.write_text(report.markdown(), out / "compare.md")
    storage.write_text(report.html(), out / "compare.html")
    return {"markdown": out / "compare.md", "html": out / "compare.html", **{f.stem: f for f in figures}}
