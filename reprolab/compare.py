"""`reprolab compare <revA> <revB> [...]`: metrics, params and plots of revisions side by side.

Reads each revision's committed reports and params from git (`workspace` for the working tree)
and writes a self-contained report: Markdown plus PNGs, and one HTML file with the PNGs inlined,
so it opens offline (DVC's own HTML plots load their scripts from a CDN).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import yaml

from reprolab import paths, provenance, storage
from reprolab.errors import StageError
from reprolab.figures import save_png
from reprolab.params import flatten, parse_params
from reprolab.provenance import GitError
from reprolab.tracking import flat_metrics

WORKSPACE = "workspace"
METRIC_FILES = tuple(path.as_posix() for path in (paths.METRICS, paths.TRAIN_REPORT, paths.DATA_REPORT))
CURVES = {  # figure -> (file per model, x column, y column)
    "roc": ("reports/plots/roc_{model}.csv", "fpr", "tpr"),
    "pr": ("reports/plots/pr_{model}.csv", "recall", "precision"),
}


def read_at(repo: Path, rev: str, path: str) -> str | None:
    if rev == WORKSPACE:
        file = repo / path
        return file.read_text(encoding="utf-8") if file.exists() else None
    return provenance.git_show(repo, rev, path)


def snapshot(repo: Path, rev: str) -> dict[str, Any]:
    if rev != WORKSPACE:
        try:
            provenance.git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
        except GitError:
            raise StageError(f"{rev!r}: not a git revision") from None
    params_text = read_at(repo, rev, "params.yaml")
    if params_text is None:
        raise StageError(f"{rev}: no params.yaml: the revision predates the pipeline")
    metrics: dict[str, float] = {}
    for path in METRIC_FILES:
        text = read_at(repo, rev, path)
        if text:
            metrics.update(flat_metrics(json.loads(text), prefix=f"{Path(path).stem}."))
    curves = {}
    for figure, (pattern, x, y) in CURVES.items():
        for model in ("transformer", "baseline"):
            text = read_at(repo, rev, pattern.format(model=model))
            if text:
                rows = list(csv.DictReader(io.StringIO(text)))
                curves[(figure, model)] = ([float(r[x]) for r in rows], [float(r[y]) for r in rows])
    history_text = read_at(repo, rev, "reports/plots/train_history.csv")
    history = list(csv.DictReader(io.StringIO(history_text))) if history_text else []
    params = flatten(parse_params(yaml.safe_load(params_text), f"{rev}:params.yaml"))
    return {"rev": rev, "params": params, "metrics": metrics, "curves": curves, "history": history}


def _figure(snapshots: list[dict], figure: str, out: Path) -> Path | None:
    _, x_name, y_name = CURVES[figure]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    drawn = False
    for snap in snapshots:
        for model in ("transformer", "baseline"):
            if (figure, model) in snap["curves"]:
                x, y = snap["curves"][(figure, model)]
                ax.plot(x, y, label=f"{snap['rev']} {model}", linestyle="-" if model == "transformer" else "--")
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
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for snap in snapshots:
        epochs = [int(r["epoch"]) for r in snap["history"]]
        ax.plot(epochs, [float(r["val_macro_f1"]) for r in snap["history"]], marker="o", label=snap["rev"])
    ax.set(xlabel="epoch", ylabel="validation macro-F1", title="Training")
    ax.legend(fontsize=8)
    return save_png(fig, out / "train_history.png")


def _table(snapshots: list[dict], key: str, only_different: bool) -> list[list[str]]:
    names = sorted(set().union(*(s[key] for s in snapshots)))
    rows = []
    for name in names:
        values = [s[key].get(name) for s in snapshots]
        if only_different and len(set(map(str, values))) == 1:
            continue
        rows.append([name] + ["-" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v)) for v in values])
    return rows


def compare(repo: Path, revs: list[str], out: Path) -> dict[str, Path]:
    if len(revs) < 2:
        raise StageError("compare needs at least two revisions (use `workspace` for the working tree)")
    snapshots = [snapshot(repo, rev) for rev in revs]
    figures = [f for f in (_figure(snapshots, "roc", out), _figure(snapshots, "pr", out),
                           _history_figure(snapshots, out)) if f]
    metric_rows = _table(snapshots, "metrics", only_different=False)
    param_rows = _table(snapshots, "params", only_different=True)
    header = ["name", *revs]

    def md_table(rows):
        lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])

    markdown = "\n\n".join([
        f"# Comparison: {' vs '.join(revs)}",
        "## Metrics", md_table(metric_rows),
        "## Params that differ", md_table(param_rows) if param_rows else "(none)",
        "## Plots", "\n".join(f"![{f.stem}]({f.name})" for f in figures),
    ]) + "\n"

    def html_table(rows):
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
        return f"<table><tr>{head}</tr>{body}</table>"

    images = "".join(
        f'<img alt="{f.stem}" src="data:image/png;base64,{base64.b64encode(f.read_bytes()).decode()}">'
        for f in figures
    )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>reprolab compare</title><style>"
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}td:first-child{text-align:left}"
        "img{max-width:32%;margin:4px}</style></head><body>"
        f"<h1>Comparison: {html.escape(' vs '.join(revs))}</h1><h2>Metrics</h2>{html_table(metric_rows)}"
        f"<h2>Params that differ</h2>{html_table(param_rows) if param_rows else '<p>(none)</p>'}"
        f"<h2>Plots</h2>{images}</body></html>\n"
    )
    storage.write_text(markdown, out / "compare.md")
    storage.write_text(page, out / "compare.html")
    return {"markdown": out / "compare.md", "html": out / "compare.html", **{f.stem: f for f in figures}}
