"""The token-classification pipeline through the real `dvc repro`, on a reduced copy of examples/ner:
the first 400 WNUT-16 sentences (real tweets, all ten entity types), a tiny BERT built here with
MiniLM's tokenizer (the real model's numbers are not the point), windows forced by a short
max_length. Checked: every stage runs, every word of the test split is scored exactly once, rows are
conserved, a second repro is a no-op, and the scores are seqeval's on the written predictions."""

from __future__ import annotations

import csv
import json
import re
import shutil
from io import StringIO
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from reprolab import paths
from reprolab.results import entity_metrics
from tests.conftest import FIXTURE_PARAMS, MODEL, NER_FIXTURE_PARAMS, REPO, commit, copy_pipeline, ran_stages, run
from tests.tiny_models import tiny_encoder

WNUT = REPO / "examples/ner/data/external/wnut16.conll"
SENTENCES = 400
REDUCED = {
    "ingest": {"path": "data/source/wnut.conll"},
    "tokenize": {"max_length": 16, "stride": 4},  # tweets run past 16 sub-tokens: windows
    "augment": {"fraction": 0.5},
    "train": {"epochs": 1, "batch_size": 16, "log_every_steps": 5, "checkpoint_every_minutes": 0},
    "evaluate": {"crf": {"c1": 0.1, "c2": 0.1, "max_iterations": 20}},
}


def first_sentences(text: str, count: int) -> str:
    """The first `count` sentences of a CoNLL text (WNUT-16's blank lines hold a tab)."""
    return "\n\n".join(re.split(r"\n[ \t]*\n", text.strip())[:count]) + "\n"


@pytest.fixture(scope="module")
def ner_project(tmp_path_factory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("ner")
    copy_pipeline(root)
    shutil.copy(FIXTURE_PARAMS, root / "params.yaml")  # DVC parses the root's pipeline file too
    project = root / "examples/ner"
    project.mkdir(parents=True)
    shutil.copy(REPO / "examples/ner/dvc.yaml", project / "dvc.yaml")
    (project / "data/source").mkdir(parents=True)
    (project / "data/source/wnut.conll").write_text(first_sentences(WNUT.read_text(encoding="utf-8"), SENTENCES))
    tiny_encoder(project / "tiny", MODEL)
    params = yaml.safe_load(NER_FIXTURE_PARAMS.read_text())
    for section, values in REDUCED.items():
        params[section].update(values)
    params["model"]["name_or_path"] = "tiny"
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], root)
    commit(root, "init")
    return project, run(["dvc", "repro"], project)


def test_every_stage_runs_and_every_test_word_is_scored_once(ner_project):
    project, output = ner_project
    ran = ran_stages(output)  # in an order DVC picks among the stages that do not feed each other
    assert sorted(ran) == sorted(["check_params", "ingest", "clean", "tokenize", "augment", "train", "evaluate"])
    assert ran.index("ingest") < ran.index("clean") < min(ran.index("tokenize"), ran.index("augment"))
    assert max(ran.index("tokenize"), ran.index("augment")) < ran.index("train") < ran.index("evaluate")
    ingest = json.loads((project / paths.INGEST_REPORT).read_text())
    data = json.loads((project / paths.DATA_REPORT).read_text())
    assert ingest["rows_in"] == SENTENCES == ingest["rows_kept"] + ingest["rows_rejected"]
    assert data["rows_in"] == ingest["rows_kept"] == data["rows_kept"] + data["rows_rejected"]
    test = pq.read_table(project / paths.clean_split("test")).to_pydict()
    windows = pq.read_table(project / paths.token_split("test")).to_pydict()
    assert len(windows["id"]) > len(test["id"])  # some sentences took several windows
    scored = sorted(
        (i, w) for i, index in zip(windows["id"], windows["word_index"], strict=True) for w in index if w >= 0
    )
    assert scored == sorted(
        (i, w) for i, words in zip(test["id"], test["tokens"], strict=True) for w in range(len(words))
    )
    for model in ("transformer", "baseline"):
        rows = list(csv.DictReader(StringIO((project / paths.PLOTS / f"test_predictions_{model}.csv").read_text())))
        assert [(r["id"], int(r["position"])) for r in rows] == [
            (i, w) for i, words in zip(test["id"], test["tokens"], strict=True) for w in range(len(words))
        ]
        assert [r["actual"] for r in rows] == [tag for tags in test["tags"] for tag in tags]
        by_sentence: dict[str, list[str]] = {}
        for r in rows:
            by_sentence.setdefault(r["id"], []).append(r["predicted"])
        predicted = [by_sentence[i] for i in test["id"]]
        metrics = json.loads((project / paths.METRICS).read_text())
        assert metrics[model]["entity_micro_f1"] == pytest.approx(entity_metrics.entity_f1(test["tags"], predicted))
        assert metrics[model]["mode"] == "conlleval" and "B-person" in metrics[model]["per_tag"]
    assert metrics["baseline"]["entity_micro_f1"] > 0  # the CRF finds entities: it beats always-O
    assert metrics["transformer_vs_baseline"]["verdict"] in ("transformer better", "baseline better", "within noise")
    assert "baseline (conlleval entities)" in (project / "reports/test_report.txt").read_text()
    assert (project / paths.EVALUATE_FIGURES / "tag_confusion.png").is_file()
    history = (project / paths.TRAIN_HISTORY).read_text().splitlines()[0]
    assert history == "epoch,step,train_loss,val_loss,val_accuracy,val_entity_micro_f1,learning_rate"


def test_a_second_repro_is_a_no_op_and_show_reads_the_entity_headline(ner_project):
    project, _ = ner_project
    assert ran_stages(run(["dvc", "repro"], project)) == []
    shown = run(["reprolab", "show"], project)
    assert "transformer: test entity micro-F1" in shown and "approximate randomization p" in shown


def test_the_audit_of_the_published_ner_result_passes(ner_project):
    """Results committed, `reprolab audit HEAD` in the NER project re-derives them in a fresh worktree:
    every hash and metric exactly (the same CPU kernels)."""
    project, _ = ner_project
    commit(project.parent.parent, "published NER result")
    output = run(["reprolab", "audit", "HEAD", "--out", str(project.parent.parent / "audit")], project)
    report = json.loads((project.parent.parent / "audit/audit.json").read_text())
    assert report["verdict"] == "pass" and report["project"] == "examples/ner", output
    assert report["metric_tolerance"] == 0.0
    assert any(c["name"] == "transformer.entity_micro_f1" for c in report["checks"] if c["kind"] == "metric")
