"""The headline of a result: the scored models ranked by the task's test score, the paired verdict, and what
the exported backends weigh and lose. evaluate prints it when it runs; `reprolab show` prints it from
the reports whatever DVC skipped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from reprolab.errors import StageError
from reprolab.tasks.base import Task


def headline(
    task: Task, metrics: dict[str, Any], export: dict[str, Any] | None = None, pair: tuple[str, str] | None = None
) -> list[str]:
    """Lines for a terminal: the leaderboard first, then the difference and its verdict, then the export.
    `pair`: the scored model and its reference (default the task's fine-tuned model and baseline)."""
    model, reference = pair or task.scored
    ranked = sorted(
        (name for name in (model, reference) if name in metrics), key=lambda name: -metrics[name][task.score]
    )
    lines = [
        f"{rank}. {name}: test {task.score_title} {metrics[name][task.score]:.4f}, accuracy "
        f"{metrics[name][task.accuracy]:.4f}"
        for rank, name in enumerate(ranked, 1)
    ]
    versus = metrics.get(f"{model}_vs_{reference}")
    if versus:
        p_key, p_name = task.paired_test
        lines.append(
            f"{model} - {reference} {task.score_title} {versus[f'{task.score}_difference']:+.4f}, "
            f"95% interval [{versus['interval_low']:+.4f}, {versus['interval_high']:+.4f}], {p_name} "
            f"{versus[p_key]:.3g}: {versus['verdict']} ({metrics['test_rows']} test rows)"
        )
    for backend, row in sorted((export or {}).get("backends", {}).items()):
        agreement = ", ".join(
            f"{key.removesuffix('_with_torch').replace('_', ' ')} with torch {value:.4f}"
            for key, value in row.items()
            if key.endswith("agreement_with_torch")
        )
        lines.append(
            f"export {backend}: {row['size_mb']} MB ({row['size_vs_torch']}x torch), {task.score_title} "
            f"{row[task.score]:.4f}, {agreement}"
        )
    return lines


def show(root: Path) -> list[str]:
    """`reprolab show`: the headline of `root`'s reports (the distilled student's after the teacher's,
    where it has been scored), and a warning wherever they scored other weights than the workspace's
    model (evaluate has not run on it yet)."""
    from reprolab import paths, storage
    from reprolab.params import load_params
    from reprolab.tasks import catalog

    if not (root / paths.METRICS).is_file():
        raise StageError(f"{root / paths.METRICS}: no test metrics yet: run `dvc repro`")
    task = catalog.task_named(load_params(root / "params.yaml", check_paths=False).task)
    lines = []
    for files, pair in (
        (paths.SCORED_MODELS["model"], task.scored),
        (paths.SCORED_MODELS["student"], task.student_scored),
    ):
        metrics_file, export_file, weights = root / files.metrics, root / files.export_report, root / files.weights
        if not metrics_file.is_file():
            continue
        metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
        export = json.loads(export_file.read_text(encoding="utf-8")) if export_file.is_file() else None
        if not files.is_fine_tuned:
            lines.append(f"{pair[0]} ({files.model_dir}):")
        lines += headline(task, metrics, export, pair)
        scored = metrics.get("weights_md5")
        if scored and weights.is_file() and storage.file_md5(weights) != scored:
            lines.append(f"WARNING: these scored other weights than {files.weights} holds: run `dvc repro` to score it")
    return lines
