"""`reprolab compare` on revisions read from the working tree: headline first, changes as changes,
counts as counts, a verdict where two revisions scored the same test rows, any params schema."""

import json

import pytest

from reprolab.results.compare import compare, paired, ranking, snapshot
from reprolab.storage import csv_text

TRUTH = ["ham"] * 60 + ["spam"] * 40


def write_revision(root, predicted: list[str], params: str, baseline: list[str] | None = None) -> None:
    (root / "reports/plots").mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(params)
    right = sum(p == t for p, t in zip(predicted, TRUTH, strict=True))
    (root / "reports/metrics.json").write_text(
        json.dumps(
            {"transformer": {"macro_f1": right / len(TRUTH), "accuracy": right / len(TRUTH)}, "test_rows": len(TRUTH)}
        )
    )
    rows = [[f"m{i}", t, p, 0.9] for i, (t, p) in enumerate(zip(TRUTH, predicted, strict=True))]
    (root / "reports/plots/test_predictions_transformer.csv").write_text(
        csv_text(["id", "actual", "predicted", "score"], rows)
    )
    if baseline:
        rows = [[f"m{i}", t, p, 0.9] for i, (t, p) in enumerate(zip(TRUTH, baseline, strict=True))]
        (root / "reports/plots/test_predictions_baseline.csv").write_text(
            csv_text(["id", "actual", "predicted", "score"], rows)
        )


def test_params_of_any_schema_are_read_as_written(tmp_path):
    """An old revision's params lack today's keys or hold retired ones: shown, never validated (one from
    before the `task` key trained the default task)."""
    write_revision(tmp_path, TRUTH, "train:\n  learning_rate: 5.0e-05\n  retired_knob: 3\nnew_section: {a: null}\n")
    snap = snapshot(tmp_path, "workspace")
    assert snap["params"] == {
        "train.learning_rate": "5e-05",
        "train.retired_knob": "3",
        "new_section.a": "null",
        "task": "sequence_classification",
    }
    assert snap["metrics"]["metrics.test_rows"] == 100 and isinstance(snap["metrics"]["metrics.test_rows"], int)


def test_a_real_improvement_gets_its_verdict_and_the_report_leads_with_it(tmp_path):
    before = ["spam" if i % 4 == 0 and i < 60 else t for i, t in enumerate(TRUTH)]  # 15 ham rows wrong
    write_revision(tmp_path / "a", before, "train: {learning_rate: 5.0e-05}\n")
    write_revision(tmp_path / "b", TRUTH, "train: {learning_rate: 1.0e-04}\n")
    snaps = [snapshot(tmp_path / name, "workspace") | {"rev": name} for name in ("a", "b")]
    ((model, rev, result),) = paired(snaps)
    assert (model, rev, result.only_a_right, result.only_b_right, result.verdict) == (
        "transformer",
        "b",
        0,
        15,
        "B better",
    )


def test_report_sections_and_cells(tmp_path):
    write_revision(tmp_path, TRUTH, "train: {learning_rate: 5.0e-05}\n")
    compare(tmp_path, ["workspace", "workspace"], tmp_path / "out")
    markdown = (tmp_path / "out/compare.md").read_text()
    titles = [line for line in markdown.splitlines() if line.startswith("## ")]
    assert titles == ["## Headline", "## Is the change real?", "## Params that differ", "## Plots"]
    assert "| metrics.transformer.macro_f1 | 1.0000 | 1.0000 |  |" in markdown  # no change: blank
    assert "| metrics.test_rows | 100 | 100 |  |" in markdown  # a count stays a count
    assert "| transformer | workspace vs workspace | 100 | +0.0000 |" in markdown and "within noise" in markdown
    assert "<details><summary>All metrics (3)</summary>" in markdown
    assert "<title>reprolab compare</title>" in (tmp_path / "out/compare.html").read_text()


def test_experiments_rank_best_first_with_their_changed_params(tmp_path):
    worse = ["spam" if i < 30 else t for i, t in enumerate(TRUTH)]  # 30 ham rows wrong
    tfidf = worse[:10] + TRUTH[10:]  # the TF-IDF baseline misses 10 ham rows in every revision
    for name, predicted, rate in (("base", tfidf, "5.0e-05"), ("exp-a", worse, "1.0e-04"), ("exp-b", TRUTH, "3.0e-04")):
        write_revision(tmp_path / name, predicted, f"train: {{learning_rate: {rate}, epochs: 1}}\n", tfidf)
    snaps = [snapshot(tmp_path / name, "workspace") | {"rev": name} for name in ("base", "exp-a", "exp-b")]
    rows = ranking(snaps, paired(snaps))
    assert [row[:2] for row in rows] == [["1", "exp-b"], ["2", "base"], ["3", "exp-a"]]
    assert rows[0][3:6] + rows[0][7:] == ["-", "+0.1000", "better", "train.learning_rate=0.0003"]  # no train.json
    assert rows[1][4:6] + rows[1][7:] == ["", "baseline", "-"]
    assert rows[2][4:6] + rows[2][7:] == ["-0.2000", "worse", "train.learning_rate=0.0001"]
    # Each against its own revision's TF-IDF baseline: 10 rows only the transformer gets right, none, or
    # 20 rows only the baseline gets right.
    assert [row[6].split("] ")[1] for row in rows] == ["transformer better", "within noise", "TF-IDF better"]
    assert rows[0][6].startswith("+0.1") and rows[1][6].startswith("+0.0000 [+0.0000, +0.0000]")


def test_a_revision_from_before_the_task_key_differs_in_no_params_from_one_naming_the_default(tmp_path):
    write_revision(tmp_path / "old", TRUTH, "train: {learning_rate: 5.0e-05}\n")
    write_revision(tmp_path / "new", TRUTH, "task: sequence_classification\ntrain: {learning_rate: 5.0e-05}\n")
    snaps = [snapshot(tmp_path / name, "workspace") | {"rev": name} for name in ("old", "new")]
    assert snaps[0]["params"] == snaps[1]["params"]
    assert ranking(snaps, paired(snaps))[1][-1] == "-"  # the newer revision changed no params


def write_tagger_revision(root, predicted: list[list[str]], truth: list[list[str]], params: str) -> None:
    """A token-classification revision: per-word predictions as evaluate writes them."""
    (root / "reports/plots").mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text("task: token_classification\n" + params)
    rows = [
        [f"s{i}", position, f"w{position}", actual, tag, 0.9]
        for i, (true_tags, tags) in enumerate(zip(truth, predicted, strict=True))
        for position, (actual, tag) in enumerate(zip(true_tags, tags, strict=True))
    ]
    (root / "reports/plots/test_predictions_transformer.csv").write_text(
        csv_text(["id", "position", "word", "actual", "predicted", "score"], rows)
    )
    (root / "reports/metrics.json").write_text(json.dumps({"transformer": {"entity_micro_f1": 0.5}}))


def test_two_taggers_are_compared_by_entity_f1_over_sentences(tmp_path):
    """A tagger's revisions are paired sentence by sentence (its per-word rows read back in word order)
    and tested as evaluate tests them: entity F1's bootstrap and approximate randomization."""
    truth = [["B-PER", "I-PER", "O"], ["O", "B-LOC"]] * 40
    missed = [["O", "O", "O"], ["O", "B-LOC"]] * 40  # every PER entity missed
    write_tagger_revision(tmp_path / "a", missed, truth, "train: {epochs: 1}\n")
    write_tagger_revision(tmp_path / "b", truth, truth, "train: {epochs: 3}\n")
    snaps = [snapshot(tmp_path / name, "workspace") | {"rev": name} for name in ("a", "b")]
    assert snaps[1]["predictions"]["transformer"]["s0"] == (("B-PER", "I-PER", "O"), ("B-PER", "I-PER", "O"))
    ((model, rev, result),) = paired(snaps)
    assert (model, rev, result.rows, result.verdict) == ("transformer", "b", 80, "B better")
    assert result.difference == pytest.approx(1 - 2 * 40 / (2 * 40 + 40))  # F1 1.0 against 2/3
    compare(tmp_path / "a", ["workspace", "workspace"], tmp_path / "out")
    markdown = (tmp_path / "out/compare.md").read_text()
    assert "entity micro-F1 change" in markdown and "approximate randomization p" in markdown
    assert "| metrics.transformer.entity_micro_f1 | 0.5000 | 0.5000 |  |" in markdown
