"""The token-classification pipeline through the real `dvc repro`, on a reduced copy of examples/ner:
the first 400 WNUT-16 sentences (real tweets, all ten entity types), a tiny BERT built here with
MiniLM's tokenizer (the real model's numbers are not the point), windows forced by a short
max_length. Checked: every stage runs, every word of the test split is scored exactly once, rows are
conserved, a second repro is a no-op, the scores are seqeval's on the written predictions, and the
model in use (`reprolab predict` on raw text, the registered model served over HTTP, the ONNX
export) tags every word as evaluate did."""

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
from tests.conftest import (
    FIXTURE_PARAMS,
    MODEL,
    NER_FIXTURE_PARAMS,
    REPO,
    REPROLAB,
    commit,
    copy_pipeline,
    ran_stages,
    run,
    served_model,
)
from tests.tiny_models import tiny_encoder

WNUT = REPO / "examples/ner/data/external/wnut16.conll"
SENTENCES = 400
REDUCED = {
    "ingest": {"path": "data/source/wnut.conll"},
    "tokenize": {"max_length": 16, "stride": 4},  # tweets run past 16 sub-tokens: windows
    "augment": {"fraction": 0.5},
    "train": {"epochs": 1, "batch_size": 16, "log_every_steps": 5, "checkpoint_every_minutes": 0},
    "evaluate": {"crf": {"c1": 0.1, "c2": 0.1, "max_iterations": 20}},
    "distill": {"student_layers": [1], "epochs": 1},  # one of the tiny encoder's two layers
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
    stages = ["check_params", "ingest", "clean", "tokenize", "augment", "train", "evaluate", "export"]
    student = ["teacher_logits", "distill", "evaluate_student", "export_student"]
    assert sorted(ran) == sorted(stages + student)
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


def test_the_student_is_scored_against_its_teacher_on_every_test_word(ner_project):
    project, _ = ner_project
    files = paths.SCORED_MODELS["student"]
    test = pq.read_table(project / paths.clean_split("test")).to_pydict()
    metrics = json.loads((project / files.metrics).read_text())
    teacher = json.loads((project / paths.METRICS).read_text())["transformer"]
    assert metrics["transformer"] == teacher  # the same teacher, the same words, the same scores
    versus = metrics["student_vs_transformer"]
    assert versus["entity_micro_f1_difference"] == pytest.approx(
        metrics["student"]["entity_micro_f1"] - teacher["entity_micro_f1"]
    )
    assert versus["verdict"] in ("student better", "transformer better", "within noise")
    rows = list(csv.DictReader(StringIO((project / files.plots / "test_predictions_student.csv").read_text())))
    assert [(r["id"], int(r["position"])) for r in rows] == [
        (i, w) for i, words in zip(test["id"], test["tokens"], strict=True) for w in range(len(words))
    ]
    export = json.loads((project / files.export_report).read_text())
    assert set(export["backends"]) == {"torch", "onnx", "onnx-int8"}
    assert export["backends"]["torch"]["entity_micro_f1"] == pytest.approx(metrics["student"]["entity_micro_f1"])


def test_a_second_repro_is_a_no_op_and_show_reads_the_entity_headline(ner_project):
    project, _ = ner_project
    assert ran_stages(run(["dvc", "repro"], project)) == []
    shown = run(["reprolab", "show"], project)
    assert "transformer: test entity micro-F1" in shown and "approximate randomization p" in shown
    assert "student (models/student):" in shown and "student - transformer entity micro-F1" in shown


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


def transformer_predictions(project: Path) -> dict[str, list[dict]]:
    """evaluate's per-word test predictions of the transformer, by sentence id."""
    rows = csv.DictReader(StringIO((project / paths.PLOTS / "test_predictions_transformer.csv").read_text()))
    by_sentence: dict[str, list[dict]] = {}
    for row in rows:
        by_sentence.setdefault(row["id"], []).append(row)
    return by_sentence


@pytest.fixture(scope="module")
def predicted(ner_project, tmp_path_factory) -> tuple[list[str], list[dict]]:
    """The test split's sentences as ingest read them (words as written, before clean normalised them),
    one raw text a line, through `reprolab predict`: (their ids, the predicted rows in that order)."""
    project, _ = ner_project
    test_ids = pq.read_table(project / paths.clean_split("test"), columns=["id"])["id"].to_pylist()
    raw = {row["id"]: row["tokens"] for row in pq.read_table(project / paths.RAW).to_pylist()}
    folder = tmp_path_factory.mktemp("ner_predict")
    (folder / "test.txt").write_text("".join(" ".join(raw[i]) + "\n" for i in test_ids))
    out = folder / "test.jsonl"
    run([REPROLAB, "predict", str(folder / "test.txt"), "--input-format", "lines", "--out", str(out)], project)
    return test_ids, [json.loads(line) for line in out.read_text().splitlines()]


def test_predict_on_the_raw_test_sentences_tags_every_word_as_evaluate_did(ner_project, predicted):
    project, _ = ner_project
    test_ids, rows = predicted
    evaluated = transformer_predictions(project)
    assert len(rows) == len(test_ids)
    for sentence, row in zip(test_ids, rows, strict=True):
        words = evaluated[sentence]
        assert row["tags"] == [w["predicted"] for w in words], sentence
        assert row["tag_scores"] == pytest.approx([float(w["score"]) for w in words], abs=1e-6)
        assert [(e["type"], e["first_word"], e["end_word"]) for e in row["entities"]] == entity_metrics.spans(
            row["tags"]
        )
        assert all(row["text"][e["start"] : e["end"]] == e["text"] for e in row["entities"])


def test_the_registered_tagger_served_over_http_answers_as_predict(ner_project, predicted, tmp_path):
    import mlflow

    project, _ = ner_project
    root = project.parent.parent
    store = f"sqlite:///{root / 'mlflow.db'}"
    versions = mlflow.MlflowClient(tracking_uri=store).search_model_versions("name = 'reprolab-examples-ner'")
    assert versions, "the NER project's model is registered under its own name"
    latest = max(versions, key=lambda v: int(v.version))
    _, rows = predicted
    sample = rows[:4]
    with served_model(root, f"models:/reprolab-examples-ner/{latest.version}", store, tmp_path / "serve.log") as post:
        as_text = json.loads(post([{"text": row["text"]} for row in sample]))["predictions"]
        as_words = json.loads(post([{"tokens": row["tokens"]} for row in sample]))["predictions"]
        hostile = [
            {"tokens": ["Anna", 3]},
            {"tokens": ["Anna", "met"], "text": "Anna meets"},
            {"text": None},
            {"text": "x " * 600_000},
        ]
        refused = json.loads(post(hostile), parse_constant=lambda constant: pytest.fail(f"{constant} in the body"))
    for row, text_answer, words_answer in zip(sample, as_text, as_words, strict=True):
        for answer in (text_answer, words_answer):
            assert answer["tags"] == row["tags"] and answer["reject"] is None
            assert answer["tag_scores"] == pytest.approx(row["tag_scores"], abs=1e-6)
            assert [e["text"] for e in answer["entities"]] == [e["text"] for e in row["entities"]]
    assert [r["reject"] for r in refused["predictions"]] == [
        "wrong_type",
        "words_text_mismatch",
        "missing_text",
        "text_too_large",
    ]


def test_the_export_stage_scores_the_tagger_on_every_backend(ner_project):
    project, _ = ner_project
    report = json.loads((project / paths.EXPORT_REPORT).read_text())
    metrics = json.loads((project / paths.METRICS).read_text())
    torch_row, onnx_row = report["backends"]["torch"], report["backends"]["onnx"]
    assert torch_row["entity_micro_f1"] == pytest.approx(metrics["transformer"]["entity_micro_f1"], abs=1e-12)
    assert torch_row["word_agreement_with_torch"] == 1.0 and onnx_row["max_probability_difference"] < 1e-4
    assert onnx_row["word_agreement_with_torch"] == 1.0
    assert set(report["targets"]) == {"int8_size_at_most_35_percent", "int8_entity_micro_f1_within_0.01"}
