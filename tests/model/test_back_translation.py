"""The translation path on two tiny random MarianMT models the test builds (real MarianTokenizer, real
generation): sampling is seeded, a sequence cut at max_new_tokens is told apart, and the file
the stage writes is the same bytes on a rerun and accounts for every selected row."""

from __future__ import annotations

import hashlib

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from reprolab.data import back_translation
from reprolab.params import BackTranslationParams, parse_params
from tests.conftest import fixture_params_raw
from tests.tiny_models import tiny_marian

pytestmark = pytest.mark.model

TEXTS = [f"offer number {i} for you now click" if i % 2 else f"meeting notes {i} from the team" for i in range(24)]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("translation") / "models/translation"
    return tiny_marian(root / "en-xx", TEXTS, seed=0), tiny_marian(root / "xx-en", TEXTS, seed=1)


def settings(pair, **changes) -> dict:
    return {
        "forward_model": "models/translation/en-xx",
        "backward_model": "models/translation/xx-en",
        "fraction": 1.0,
        "seed": 5,
        "top_k": 20,
        "batch_size": 4,
        "max_new_tokens": 10,
        **changes,
    }


def test_sampling_is_seeded_and_a_sequence_cut_at_max_new_tokens_is_none(pair):
    forward = back_translation.Translator(pair[0])
    # As opus-mt's: an end token is forced at the cap, so a cut sequence ends like a finished one.
    config = forward.model.generation_config
    assert config.forced_eos_token_id == config.eos_token_id
    p = BackTranslationParams(**settings(pair))
    first = forward.translate(TEXTS[:8], p, seed=11)
    assert first == forward.translate(TEXTS[:8], p, seed=11)
    assert first != forward.translate(TEXTS[:8], p, seed=12)
    assert None in first and any(isinstance(text, str) for text in first)  # some end within 10 tokens, some are cut


def test_the_stages_file_accounts_for_every_row_and_is_the_same_bytes_twice(pair, tmp_path, monkeypatch):
    monkeypatch.chdir(pair[0].parent.parent.parent)  # the folder holding models/translation
    raw = fixture_params_raw()
    raw["augment"]["back_translation"] = settings(pair)
    params = parse_params(raw)
    source = tmp_path / "train.parquet"
    ids = [f"group/{i}" for i in range(len(TEXTS))]
    pq.write_table(pa.table({"id": ids, "label": ["ham", "spam"] * 12, "text": TEXTS}), source)
    digests, reports = [], []
    for attempt in range(2):
        dest = tmp_path / f"out{attempt}.parquet"
        reports.append(back_translation.back_translate_file(source, dest, params))
        digests.append(hashlib.md5(dest.read_bytes()).hexdigest())
    assert digests[0] == digests[1] and reports[0] == reports[1]
    report = reports[0]
    assert report["rows_in"] == len(TEXTS) == report["translated"] + report["failed"]
    assert report["failed"] > 0 and report["added"] > 0
    rows = pq.read_table(tmp_path / "out0.parquet").to_pylist()
    assert [row["origin_id"] for row in rows] == ids
    assert all(row["text"] and row["text"] != row["source"] for row in rows if row["status"] == "added")
