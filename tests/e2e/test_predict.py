"""The reduced pipeline's model in use: `reprolab predict` on the raw rows scores the test split as evaluate
did, the registered MLflow model served over HTTP answers as predict does, the export stage's ONNX models,
and behavioural checks of the model (CheckList-style invariances and two obvious cases)."""

from __future__ import annotations

import csv
import json
import urllib.error
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from reprolab import paths
from reprolab.inference import serving
from reprolab.inference.prediction import Predictor
from tests.conftest import REPROLAB, run, served_model

PROBABILITIES = ["prob_ham", "prob_spam"]


def predict(root: Path, source: str, out: Path, *options: str) -> dict[str, dict]:
    """`reprolab predict` in the project; its rows by id."""
    run([REPROLAB, "predict", source, "--out", str(out), "--no-progress", *options], root)
    table = pq.read_table(out).to_pylist()
    return {row["id"]: row for row in table}


@pytest.fixture(scope="module")
def predicted(published, tmp_path_factory) -> dict[str, dict]:
    """Every raw mail of the reduced project, predicted with the trained model folder."""
    return predict(published.root, "data/source", tmp_path_factory.mktemp("predict") / "all.parquet")


def test_predict_on_the_raw_rows_gives_evaluates_test_predictions(published, predicted):
    with open(published.root / paths.PLOTS / "test_predictions_transformer.csv", newline="") as handle:
        evaluated = list(csv.DictReader(handle))
    assert len(evaluated) >= 15
    for row in evaluated:
        mine = predicted[row["id"]]
        assert (mine["actual"], mine["predicted"]) == (row["actual"], row["predicted"]), row["id"]
        for column in PROBABILITIES:
            assert abs(mine[column] - float(row[column])) <= 1e-6, (row["id"], column)


def test_predict_with_the_student_gives_its_evaluate_stages_test_predictions(published, tmp_path):
    student = paths.SCORED_MODELS["student"]
    with open(published.root / student.plots / "test_predictions_student.csv", newline="") as handle:
        evaluated = list(csv.DictReader(handle))
    predicted = predict(published.root, "data/source", tmp_path / "student.parquet", "--model", str(student.model_dir))
    assert len(evaluated) >= 15
    for row in evaluated:
        mine = predicted[row["id"]]
        assert (mine["actual"], mine["predicted"]) == (row["actual"], row["predicted"]), row["id"]
        for column in PROBABILITIES:
            assert abs(mine[column] - float(row[column])) <= 1e-6, (row["id"], column)


def test_predict_takes_the_model_from_mlflow_as_from_its_folder(published, predicted, tmp_path):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{published.root / 'mlflow.db'}")
    latest = max(client.search_model_versions("name = 'reprolab'"), key=lambda v: int(v.version))
    for reference in (f"models:/reprolab/{latest.version}", latest.run_id):
        again = predict(published.root, "data/source", tmp_path / "again.parquet", "--model", reference)
        assert again == predicted, reference


def test_the_registered_model_served_over_http_answers_as_predict(published, predicted, tmp_path):
    """`mlflow models serve --env-manager local` on 127.0.0.1, offline; real mails posted as JSON."""
    import mlflow

    root = published.root
    store = f"sqlite:///{root / 'mlflow.db'}"
    latest = max(
        mlflow.MlflowClient(tracking_uri=store).search_model_versions("name = 'reprolab'"), key=lambda v: int(v.version)
    )
    mails = {}
    for row_id in sorted(predicted):
        raw = next((root / "data/source" / row_id.split("/")[0]).glob(f"{row_id.split('/')[1]}.*.txt")).read_bytes()
        try:
            mails[row_id] = raw.decode("utf-8")
        except UnicodeDecodeError:
            continue  # JSON carries text: a mail of other bytes is predict's (from its file) alone
        if len(mails) == 6:
            break
    log = tmp_path / "serve.log"
    with served_model(root, f"models:/reprolab/{latest.version}", store, log) as post:
        answer = json.loads(post([{"text": text} for text in mails.values()]))["predictions"]
        # Refused as predict refuses them, in strict JSON (a bare NaN was in the body before).
        hostile = [{"text": 12345}, {"text": 1.5}, {"text": None}, {"text": True}, {"text": "x" * 1_500_000}]
        refused = json.loads(post(hostile), parse_constant=lambda constant: pytest.fail(f"{constant} in the body"))
        with pytest.raises(urllib.error.HTTPError) as empty:
            post([])  # MLflow's schema check, before the model: as predict fails on an input with no rows
    assert len(answer) == len(mails) >= 3
    for row_id, served in zip(mails, answer, strict=True):
        assert served["predicted"] == predicted[row_id]["predicted"] and served["reject"] is None, row_id
        for column in PROBABILITIES:
            assert abs(served[column] - predicted[row_id][column]) <= 1e-6, (row_id, column)
    assert [row["reject"] for row in refused["predictions"]] == [
        "wrong_type",
        "wrong_type",
        "missing_text",
        "wrong_type",
        "text_too_large",
    ]
    assert all(row["predicted"] is None and row["prob_spam"] is None for row in refused["predictions"])
    assert empty.value.code == 400
    logs = log.read_text().lower() + published.first_run.lower()
    assert "model card" not in logs and "license" not in logs  # nothing looked for on the hub


def test_the_export_stage_scores_onnx_and_int8_through_the_same_path(published, predicted, tmp_path):
    root = published.root
    report = json.loads((root / paths.EXPORT_REPORT).read_text())
    assert set(report["backends"]) == {"torch", "onnx", "onnx-int8"}
    metrics = json.loads((root / paths.METRICS).read_text())
    assert report["backends"]["torch"]["macro_f1"] == pytest.approx(metrics["transformer"]["macro_f1"], abs=1e-12)
    assert report["backends"]["onnx"]["agreement_with_torch"] == 1.0
    assert report["backends"]["onnx"]["max_probability_difference"] < 1e-4
    assert report["backends"]["onnx-int8"]["size_vs_torch"] <= 0.35
    int8 = predict(root, "data/source", tmp_path / "int8.parquet", "--format", "onnx-int8")
    assert int8.keys() == predicted.keys()
    differences = [abs(int8[i]["prob_spam"] - predicted[i]["prob_spam"]) for i in predicted]
    assert max(differences) < 0.1


# Behavioural tests (Ribeiro et al. 2020, CheckList; Made-With-ML): mails written for the test.
HAM = (
    "From: anna@example.org\nTo: team@example.org\nSubject: Minutes of Tuesday's meeting\n\n"
    "Hi all,\n\nthe minutes of Tuesday's meeting are below. We agreed to move the release to next Friday, "
    "and Bob will update the build scripts before then.\n\n> Can we review the test plan first?\n"
    "Yes, on Thursday after lunch.\n\nThanks,\nAnna\n"
)
SPAM = (
    "From: winner@prizes.example\nTo: you@example.org\nSubject: CONGRATULATIONS!!! You have WON $1,000,000 "
    "CASH\n\nDear Friend,\n\nYou have been selected to receive a FREE cash prize! Click here now to claim "
    "your money. Limited time offer, act now! No credit card required, 100% FREE. Order now!\n\n"
    "To be removed from our mailing list click here.\n"
)


@pytest.fixture(scope="module")
def scorer(published):
    predictor = Predictor(published.root / paths.MODEL_DIR)

    def score(texts: list[str]) -> np.ndarray:
        frame = serving.predictions_frame(predictor, texts)
        assert frame["reject"].isna().all()
        return frame[PROBABILITIES].to_numpy(float)

    return score


def test_whitespace_and_header_order_change_nothing(scorer):
    spaced = HAM.replace(" ", "  ").replace("\n\n", "\n \n\n") + "\n\n   \n"
    lines = HAM.split("\n")
    reordered = "\n".join([lines[1], lines[0], *lines[2:]])  # To: before From:
    probs = scorer([HAM, spaced, reordered])
    np.testing.assert_array_equal(probs[1], probs[0])
    np.testing.assert_array_equal(probs[2], probs[0])


def test_another_signature_keeps_the_label(scorer):
    resigned = HAM.replace("Thanks,\nAnna\n", "Best regards,\nAnna Svensson\nRelease manager\n")
    probs = scorer([HAM, resigned, SPAM, SPAM.replace("Order now!", "Order now! Sincerely, the Prize Team")])
    assert probs[0].argmax() == probs[1].argmax() and probs[2].argmax() == probs[3].argmax()
    assert abs(probs[0, 1] - probs[1, 1]) < 0.15 and abs(probs[2, 1] - probs[3, 1]) < 0.15


def test_an_obvious_spam_and_an_obvious_ham_land_on_their_classes(scorer):
    probs = scorer([HAM, SPAM])
    assert probs[0].argmax() == 0 and probs[1].argmax() == 1, probs
