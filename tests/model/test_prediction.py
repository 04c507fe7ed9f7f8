"""The one prediction path on a tiny BERT these tests build (random weights, the real tokenizer): it scores
as the stages' own functions do, `reprolab predict` writes every row or its reject, the MLflow pyfunc's
frame, and the ONNX export and its int8 copy against torch."""

import csv
import io
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from reprolab.data import cleaning
from reprolab.encoding import encoder
from reprolab.errors import StageError
from reprolab.inference import backend_comparison, onnx_export, serving
from reprolab.inference.batch_predict import predict_source
from reprolab.inference.prediction import Predictor, Recipe
from reprolab.model import runtime
from reprolab.tasks.sequence_classification import SequenceClassification
from tests.conftest import CORPUS, MODEL
from tests.tiny_models import tiny_classifier

SEQUENCE_CLASSIFICATION = SequenceClassification()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, params):
    """A 2-layer BERT of width 32 with the real tokenizer and the fixture params' recipe."""
    folder = tiny_classifier(tmp_path_factory.mktemp("tiny"), ["ham", "spam"], MODEL)
    Recipe.of(params).write(folder)
    return folder


def corpus_mails(per_group: int) -> list[tuple[str, bytes]]:
    return [
        (f"{group}/{path.name}", path.read_bytes())
        for group in ("easy-ham-1", "spam-2")
        for path in sorted((CORPUS / group).glob("*.txt"))[:per_group]
    ]


def test_scores_are_the_stages_steps_one_by_one(tiny_model, params, tokenizer):
    """clean's clean_text, tokenize's encoding, the model one row at a time: the same probabilities."""
    records = [{"raw": raw, "kind": "mail", "checksum_status": "ok", "source": name} for name, raw in corpus_mails(6)]
    records.append({"raw": b"Subject: hi\n\nok", "kind": "mail", "checksum_status": "absent", "source": "short"})
    predictor = Predictor(tiny_model, batch_size=5)
    kept, probs, rejected = predictor.score(records)
    assert kept == list(range(12)) and rejected == {12: ("too_short", "5 chars < clean.min_chars=20")}
    texts = [cleaning.clean_text(record, params.clean)[0] for record in records[:12]]
    ids = encoder.encode(tokenizer, texts, params.tokenize.max_length, encoder.Truncation.of(params.tokenize))
    model = runtime.load_model(SEQUENCE_CLASSIFICATION, str(tiny_model), ["ham", "spam"])
    one_by_one = runtime.softmax(runtime.predict_logits(model, [np.asarray(i) for i in ids], 1, 0, torch.device("cpu")))
    np.testing.assert_allclose(probs, one_by_one, atol=1e-6, rtol=0)


def test_a_predictor_travels_as_its_folder_and_scores_the_same_where_it_lands(tiny_model, tmp_path, monkeypatch):
    """What an engine's worker receives: the arguments it was built from, not its weights; it loads them,
    from wherever it runs (a relative folder travels as its full path)."""
    records = [{"raw": raw, "kind": "mail", "checksum_status": "ok", "source": name} for name, raw in corpus_mails(3)]
    monkeypatch.chdir(tiny_model.parent)
    predictor = Predictor(Path(tiny_model.name), batch_size=2, device="auto")
    shipped = pickle.dumps(predictor)
    assert len(shipped) < 2000 < sum(path.stat().st_size for path in tiny_model.iterdir())
    monkeypatch.chdir(tmp_path)  # a worker's own working directory
    landed = pickle.loads(shipped)
    assert landed is not predictor and landed.wants_gpu and not Predictor(tiny_model).wants_gpu
    kept, probs, rejected = predictor.score(records)
    landed_kept, landed_probs, _ = landed.score(records)
    assert landed_kept == kept == list(range(6)) and not rejected
    np.testing.assert_array_equal(landed_probs, probs)


def write_csv(path, header, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def test_predict_writes_every_row_or_its_reject_in_either_format(tiny_model, tmp_path):
    mails = corpus_mails(3)
    rows = [
        [f"m{i}", raw.decode("latin-1"), "spam" if "spam" in name else "ham"] for i, (name, raw) in enumerate(mails)
    ]
    rows += [
        ["short", "too short", "ham"],
        ["odd", mails[0][1].decode("latin-1"), "eggs"],
        ["empty", "", "ham"],
        ["m0", "a repeated id with a long enough text", "ham"],
        ["=cmd", "a text whose id looks like a formula", ""],
    ]
    write_csv(tmp_path / "in.csv", ["id", "text", "label"], rows)
    predictor = Predictor(tiny_model, batch_size=4)
    summary = predict_source(
        predictor,
        str(tmp_path / "in.csv"),
        tmp_path / "out.parquet",
        tmp_path / "out.rejects.parquet",
        id_column="id",
        batch_rows=3,
        progress=False,
    )
    assert (summary["rows_in"], summary["rows_predicted"], summary["rows_rejected"]) == (11, 7, 4)
    assert summary["rejected_by_reason"] == {"too_short": 1, "unknown_label": 1, "missing_text": 1, "duplicate_id": 1}
    table = pq.read_table(tmp_path / "out.parquet").to_pydict()
    assert table["id"] == ["m0", "m1", "m2", "m3", "m4", "m5", "=cmd"]
    assert table["actual"] == ["ham"] * 3 + ["spam"] * 3 + [None]
    probs = np.array([table["prob_ham"], table["prob_spam"]]).T
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    assert table["predicted"] == [["ham", "spam"][i] for i in probs.argmax(axis=1)]
    rejects = pq.read_table(tmp_path / "out.rejects.parquet").to_pydict()
    assert sorted(zip(rejects["id"], rejects["reason"], strict=True)) == [
        ("empty", "missing_text"),
        ("m0", "duplicate_id"),
        ("odd", "unknown_label"),
        ("short", "too_short"),
    ]
    assert set(rejects["stage"]) == {"predict"}
    # The same rows as CSV: formula-like cells guarded, probabilities to six digits.
    predict_source(
        predictor,
        str(tmp_path / "in.csv"),
        tmp_path / "out.csv",
        tmp_path / "csv.rejects.parquet",
        id_column="id",
        progress=False,
    )
    written = list(csv.DictReader(io.StringIO((tmp_path / "out.csv").read_text())))
    assert [row["id"] for row in written] == table["id"][:-1] + ["'=cmd"]
    assert written[-1]["actual"] == ""
    np.testing.assert_allclose([float(row["prob_spam"]) for row in written], table["prob_spam"], atol=1e-6)


def test_unlabelled_lines_and_mail_folders_are_predicted(tiny_model, tmp_path, capsys):
    predictor = Predictor(tiny_model)
    (tmp_path / "notes.txt").write_text("a first message to classify\n\na second message to classify\n")
    summary = predict_source(
        predictor,
        str(tmp_path / "notes.txt"),
        tmp_path / "lines.parquet",
        tmp_path / "lines.rejects.parquet",
        "lines",
        progress=False,
    )
    assert summary["rows_predicted"] == 2
    assert pq.read_table(tmp_path / "lines.parquet")["id"].to_pylist() == ["notes.txt:1", "notes.txt:3"]
    # The model learnt from mails: plain lines are another kind of input, said once.
    warned = capsys.readouterr().err
    assert warned.count("WARNING this model learnt from whole mails") == 1 and "--input-format lines" in warned
    for name, raw in corpus_mails(2):
        (tmp_path / "box" / name.split("/")[0]).mkdir(parents=True, exist_ok=True)
        (tmp_path / "box" / name).write_bytes(raw)
    shutil.copy(tmp_path / "box" / name, tmp_path / "box" / "loose.txt")  # outside any label folder
    summary = predict_source(
        predictor, str(tmp_path / "box"), tmp_path / "box.parquet", tmp_path / "box.rejects.parquet", progress=False
    )
    table = pq.read_table(tmp_path / "box.parquet").to_pydict()
    assert summary["rows_predicted"] == 5 and summary["rows_rejected"] == 0
    assert dict(zip(table["id"], table["actual"], strict=True))["loose.txt"] is None
    assert {table["actual"][i] for i, row_id in enumerate(table["id"]) if row_id.startswith("spam-2/")} == {"spam"}
    assert "WARNING" not in capsys.readouterr().err


def test_a_failed_predict_leaves_the_previous_outputs(tiny_model, tmp_path):
    predictor = Predictor(tiny_model)
    write_csv(tmp_path / "in.csv", ["text"], [["a message that is long enough"]])
    predict_source(predictor, str(tmp_path / "in.csv"), tmp_path / "out.csv", tmp_path / "r.parquet", progress=False)
    before = (tmp_path / "out.csv").read_bytes(), (tmp_path / "r.parquet").read_bytes()
    (tmp_path / "bad.jsonl").write_text("not json at all\n")
    with pytest.raises(StageError, match="bad.jsonl: line 1: not JSON Lines"):
        predict_source(
            predictor, str(tmp_path / "bad.jsonl"), tmp_path / "out.csv", tmp_path / "r.parquet", progress=False
        )
    assert ((tmp_path / "out.csv").read_bytes(), (tmp_path / "r.parquet").read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl", "in.csv", "out.csv", "r.parquet"]  # no leftovers
    with pytest.raises(StageError, match="extension chooses its format"):
        predict_source(predictor, str(tmp_path / "in.csv"), tmp_path / "out.xlsx", tmp_path / "r.parquet")


def test_an_input_with_too_many_rejects_fails_and_writes_nothing(tiny_model, tmp_path):
    predictor = Predictor(tiny_model)
    write_csv(tmp_path / "short.csv", ["text"], [["hi"], ["ok"]])
    with pytest.raises(StageError, match=r"every one of its 2 rows was rejected \(too_short 2\); nothing was written"):
        predict_source(predictor, str(tmp_path / "short.csv"), tmp_path / "out.csv", tmp_path / "r.parquet")
    write_csv(tmp_path / "half.csv", ["text"], [["hi"], ["a message that is long enough"]])
    with pytest.raises(StageError, match="1 of 2 rows rejected .* more than --max-reject-fraction 0.25"):
        predict_source(
            predictor,
            str(tmp_path / "half.csv"),
            tmp_path / "out.csv",
            tmp_path / "r.parquet",
            max_reject_fraction=0.25,
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["half.csv", "short.csv"]
    summary = predict_source(predictor, str(tmp_path / "half.csv"), tmp_path / "out.csv", tmp_path / "r.parquet")
    assert summary["rows_predicted"] == summary["rows_rejected"] == 1


def test_a_table_id_column_is_used_and_messages_name_predicts_flags(tiny_model, tmp_path):
    predictor = Predictor(tiny_model)
    write_csv(tmp_path / "in.csv", ["id", "text"], [["t-1", "a message that is long enough"]])
    predict_source(predictor, str(tmp_path / "in.csv"), tmp_path / "out.parquet", tmp_path / "r.parquet")
    assert pq.read_table(tmp_path / "out.parquet")["id"].to_pylist() == ["t-1"]
    write_csv(tmp_path / "body.csv", ["body"], [["a message that is long enough"]])
    with pytest.raises(StageError, match=r"missing column\(s\) \['text'\].*give --text-column / --label-column"):
        predict_source(predictor, str(tmp_path / "body.csv"), tmp_path / "out.parquet", tmp_path / "r.parquet")
    write_csv(
        tmp_path / "odd.csv",
        ["text", "label"],
        [["a message that is long enough", "eggs"], ["another long message", "ham"]],
    )
    predict_source(predictor, str(tmp_path / "odd.csv"), tmp_path / "out.parquet", tmp_path / "r.parquet")
    (detail,) = pq.read_table(tmp_path / "r.parquet")["detail"].to_pylist()
    assert detail.startswith("'eggs' (str) is not one of the model's labels") and "ingest." not in detail
    with pytest.raises(StageError, match="nowhere.txt: no such file or folder"):
        predict_source(predictor, str(tmp_path / "nowhere.txt"), tmp_path / "o.csv", tmp_path / "r.parquet", "lines")


def test_the_pyfunc_frame_scores_raw_mails_and_names_rejects(tiny_model):
    predictor = Predictor(tiny_model)
    (name, raw), *_ = corpus_mails(1)
    frame = serving.predictions_frame(predictor, [raw.decode("latin-1"), "Subject: x\n\nhi"])
    assert list(frame.columns) == ["predicted", "prob_ham", "prob_spam", "reject"]
    assert frame["reject"].isna().tolist() == [True, False] and frame["reject"][1] == "too_short"
    assert frame["predicted"].isna().tolist() == [False, True] and frame["prob_ham"].isna().tolist() == [False, True]
    _, probs, _ = predictor.score(
        [{"raw": raw.decode("latin-1").encode("utf-8"), "kind": "mail", "checksum_status": "absent", "source": name}]
    )
    np.testing.assert_allclose(frame.loc[0, ["prob_ham", "prob_spam"]].to_numpy(float), probs[0], atol=1e-7)


def test_served_records_are_refused_as_predict_refuses_them_and_the_answer_is_strict_json(tiny_model, tmp_path):
    """Over HTTP a 5 MB text was scored, a number scored as text, null and numbers came back `too_short`,
    and a rejected row's cells were a bare NaN in the JSON body: the frame now takes predict's rules."""
    from mlflow.pyfunc import scoring_server

    predictor = Predictor(tiny_model)
    (_, raw), *_ = corpus_mails(1)
    mail = raw.decode("latin-1")
    texts = [mail, "x" * 5_000_000, 12345, 1.5, None, float("nan"), True, "Subject: x\n\nhi"]
    frame = serving.predictions_frame(predictor, texts)
    reasons = frame["reject"].tolist()
    assert reasons[1:] == [
        "text_too_large",
        "wrong_type",
        "wrong_type",
        "missing_text",
        "missing_text",
        "wrong_type",
        "too_short",
    ]
    assert pd.isna(reasons[0]) and frame["predicted"][0] in ("ham", "spam")
    # The same values as a JSONL file's text field: `reprolab predict` refuses them for the same reasons.
    rows = [{"text": text} for text in texts[:5] + texts[6:]]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    predict_source(
        predictor, str(tmp_path / "in.jsonl"), tmp_path / "o.parquet", tmp_path / "r.parquet", progress=False
    )
    rejects = pq.read_table(tmp_path / "r.parquet").to_pydict()
    assert sorted(rejects["reason"]) == sorted(reasons[1:5] + reasons[6:])
    body = io.StringIO()
    scoring_server.predictions_to_json(frame, body)

    def refuse(constant):
        raise AssertionError(f"{constant} is not JSON")

    answered = json.loads(body.getvalue(), parse_constant=refuse)["predictions"]
    assert answered[4] == {"predicted": None, "prob_ham": None, "prob_spam": None, "reject": "missing_text"}
    assert answered[0]["reject"] is None and abs(answered[0]["prob_ham"] + answered[0]["prob_spam"] - 1) < 1e-6


def test_onnx_export_scores_as_torch_and_int8_is_smaller(tiny_model, tmp_path, params):
    onnx_export.export_folder(tiny_model, tmp_path / "export", 17)
    names = sorted(p.name for p in (tmp_path / "export").iterdir())
    assert "model.onnx" in names and "model.int8.onnx" in names and "model.safetensors" not in names
    assert (
        json.loads((tmp_path / "export/reprolab_preprocessing.json").read_text())["max_length"]
        == params.tokenize.max_length
    )
    records = [{"raw": raw, "kind": "mail", "checksum_status": "ok", "source": name} for name, raw in corpus_mails(8)]
    torch_probs = Predictor(tiny_model).score(records)[1]
    fp32 = Predictor(tmp_path / "export", "onnx").score(records)[1]
    int8 = Predictor(tmp_path / "export", "onnx-int8").score(records)[1]
    np.testing.assert_allclose(fp32, torch_probs, atol=1e-5)
    assert np.abs(int8 - torch_probs).max() < 0.05
    size = {name: (tmp_path / "export" / name).stat().st_size for name in ("model.onnx", "model.int8.onnx")}
    assert size["model.int8.onnx"] < 0.35 * size["model.onnx"]
    with pytest.raises(StageError, match="no model.onnx .*run `dvc repro export`"):
        Predictor(tiny_model, "onnx")


def test_score_backends_reports_each_backend_against_torch_and_reruns_identically(tiny_model, tmp_path, tokenizer):
    onnx_export.export_folder(tiny_model, tmp_path / "export", 17)
    texts = [cleaning.normalise(cleaning.mail_to_text(raw)) for _, raw in corpus_mails(6)]
    sequences = [np.asarray(s, dtype=np.int32) for s in encoder.encode(tokenizer, texts, 32)]
    test = runtime.TokenData([str(i) for i in range(12)], sequences, np.array([0] * 6 + [1] * 6))
    report = backend_comparison.score_backends(tiny_model, tmp_path / "export", test, 4, 1)
    assert list(report["backends"]) == ["torch", "onnx", "onnx-int8"]  # sorted only when written
    torch_row, fp32 = report["backends"]["torch"], report["backends"]["onnx"]
    assert torch_row["agreement_with_torch"] == 1.0 and torch_row["max_probability_difference"] == 0.0
    assert fp32["agreement_with_torch"] == 1.0 and fp32["max_probability_difference"] < 1e-5
    assert fp32["macro_f1"] == torch_row["macro_f1"]
    assert report["targets"]["int8_size_at_most_35_percent"] and report["test_rows"] == 12
    # The export stage's report is a DVC output: a rerun must write the same bytes.
    assert backend_comparison.score_backends(tiny_model, tmp_path / "export", test, 4, 1) == report


def test_time_backends_alternates_and_reports_against_torch(tiny_model, tmp_path, tokenizer):
    onnx_export.export_folder(tiny_model, tmp_path / "export", 17)
    sequences = [np.asarray(s, dtype=np.int32) for s in encoder.encode(tokenizer, ["a short mail"] * 6, 32)]
    scorers = backend_comparison.predictors(tiny_model, tmp_path / "export", 4, 1)
    table = backend_comparison.time_backends(scorers, sequences, latency_rows=3, rounds=2)
    assert list(table) == ["torch", "onnx", "onnx-int8"] and table["torch"]["speedup_vs_torch"] == 1.0
    assert all(0 < row["latency_ms_p50"] <= row["latency_ms_p95"] for row in table.values())


def test_a_model_whose_head_does_not_fit_the_task_is_one_message(tiny_model):
    """A classifier's 2-class head where a tagger needs 5 tags: one StageError naming the folder, not
    transformers' traceback."""
    from reprolab.errors import StageError
    from reprolab.tasks.token_classification import TokenClassification

    with pytest.raises(StageError, match="its weights do not fit a token_classification head of 5 classes"):
        runtime.load_model(TokenClassification(), str(tiny_model), ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"])
