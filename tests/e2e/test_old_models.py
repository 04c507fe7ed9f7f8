"""Models logged before the library moved into subpackages still load and score. Such a model pickles
`reprolab.serving.ReprolabClassifier` and carries the flat package it was logged with (its code_paths):
in a fresh process (`mlflow models serve`) MLflow puts that copy first on the path and the old code
scores it; in a process that has imported today's package, `reprolab/serving.py` gives the class its
old name and today's code scores it. Its recipe has no `task`, which today's code reads as sequence
classification: every way gives the same probabilities."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import MODEL, REPO, env_for
from tests.tiny_models import tiny_classifier

LAST_FLAT_LAYOUT = "8235942738573c2fa02b89b8239ed384741e164e"  # the last commit of reprolab/*.py, flat
TEXTS = [
    "Subject: Minutes of Tuesday's meeting\n\nHi all, the minutes are attached; the next meeting is on Friday.",
    "Subject: WIN CASH NOW\n\nClick here to claim your free prize money today, limited offer!!!",
    "Subject: hi\n\nok",  # too short: rejected
]


def old_layout(dest: Path) -> Path:
    """The flat package and its test params as they were at LAST_FLAT_LAYOUT."""
    try:
        archive = subprocess.run(
            ["git", "archive", LAST_FLAT_LAYOUT, "reprolab", "tests/fixtures/params.yaml"],
            cwd=REPO,
            capture_output=True,
            check=True,
        ).stdout
    except subprocess.CalledProcessError as exc:
        pytest.fail(f"git archive {LAST_FLAT_LAYOUT[:7]}: {exc.stderr.decode()[:300]} (a shallow clone? fetch history)")
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")
    assert (dest / "reprolab/serving.py").is_file() and not (dest / "reprolab/inference").exists()
    return dest


def python(code: str, path: Path, cwd: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env_for(path), capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_a_pyfunc_logged_by_the_flat_layout_loads_and_scores_as_the_new_predictor(tmp_path):
    old = old_layout(tmp_path / "old")
    folder = tiny_classifier(tmp_path / "weights", ["ham", "spam"], MODEL)
    saved = tmp_path / "pyfunc"
    # Logged as the old train stage logged it: the old Recipe, ReprolabClassifier and its code_paths.
    python(
        "import mlflow.pyfunc, pandas as pd\n"
        "from reprolab.params import load_params\n"
        "from reprolab.prediction import Recipe\n"
        "from reprolab import serving\n"
        f"params = load_params({str(old / 'tests/fixtures/params.yaml')!r}, check_paths=False)\n"
        f"Recipe.of(params).write({str(folder)!r})\n"
        f"mlflow.pyfunc.save_model({str(saved)!r}, python_model=serving.ReprolabClassifier(),"
        f" artifacts={{'model': {str(folder)!r}}}, code_paths=[{str(old / 'reprolab')!r}],"
        f" signature=serving.signature(['ham', 'spam']))\n",
        old,
        tmp_path,
    )
    assert "task" not in json.loads((folder / "reprolab_preprocessing.json").read_text())
    from reprolab.inference import serving
    from reprolab.inference.prediction import Predictor

    predictor = Predictor(folder)
    assert predictor.task.name == "sequence_classification"
    probs = serving.predictions_frame(predictor, TEXTS[:2])[["prob_ham", "prob_spam"]].to_numpy(float)
    # A fresh process scores with the model's own flat code; one with today's package, with today's.
    for first, scorer in (("", "reprolab.serving"), ("import reprolab.inference\n", "reprolab.inference.serving")):
        out = python(
            f"{first}import json, mlflow.pyfunc, pandas as pd\n"
            f"model = mlflow.pyfunc.load_model({str(saved)!r})\n"
            f"frame = model.predict(pd.DataFrame({{'text': {TEXTS!r}}}))\n"
            "print(type(model.unwrap_python_model()).__module__, frame.to_json(orient='records'))\n",
            REPO,
            tmp_path,
        )
        module, rows = out.strip().splitlines()[-1].split(" ", 1)
        assert module == scorer
        rows = json.loads(rows)
        assert [row["reject"] for row in rows] == [None, None, "too_short"]
        assert all(row["predicted"] in ("ham", "spam") for row in rows[:2])
        scored = np.array([[row["prob_ham"], row["prob_spam"]] for row in rows[:2]])
        np.testing.assert_allclose(scored, probs, atol=1e-6)
