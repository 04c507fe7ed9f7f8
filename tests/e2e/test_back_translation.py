"""Back-translation end to end: two tiny random MarianMT models vendored under models/translation/, the
reduced project's params switched on, `dvc repro augment`: the back_translate stage accounts for every
selected training row and augment adds exactly the new paraphrases; a second repro is a no-op."""

from __future__ import annotations

import json

import pyarrow.parquet as pq

from reprolab import paths, storage
from tests.conftest import REPROLAB, ran_stages, run, update_params
from tests.tiny_models import tiny_marian

BACK_TRANSLATION = {
    "forward_model": "models/translation/tiny-en-xx",
    "backward_model": "models/translation/tiny-xx-en",
    "fraction": 0.5,
    "seed": 3,
    "top_k": 20,
    "batch_size": 8,
    # tiny_marian ends about two sequences in three within 10 tokens: some rows translate, some fail.
    "max_new_tokens": 10,
}


def test_back_translate_counts_every_row_and_augment_adds_only_the_new_paraphrases(project):
    texts = storage.read_parquet(project / paths.clean_split("train"), ["text"]).column("text").to_pylist()
    for seed, name in enumerate(("tiny-en-xx", "tiny-xx-en")):
        run(
            [
                REPROLAB,
                "vendor-model",
                str(tiny_marian(project / "tiny" / name, texts, seed)),
                f"models/translation/{name}",
            ],
            project,
        )
    update_params(project, {"augment": {"back_translation": BACK_TRANSLATION}})
    output = run(["dvc", "repro", "augment"], project)
    assert ran_stages(output) == ["back_translate", "augment"]  # what augment needs, nothing after it

    report = json.loads((project / paths.BACK_TRANSLATION_REPORT).read_text())
    table = pq.read_table(project / paths.BACK_TRANSLATED).to_pylist()
    statuses = [row["status"] for row in table]
    assert report["rows_in"] == len(table) == report["translated"] + report["failed"]
    assert report["translated"] == report["added"] + report["identical"] + report["empty"]
    assert {status: statuses.count(status) for status in set(statuses)} == {
        status: report[status] for status in ("added", "identical", "empty", "failed") if report[status]
    }
    assert report["added"] > 0 and report["failed"] > 0, report  # both paths taken on this seed
    failed = [row for row in table if row["status"] == "failed"]
    assert all("ran to max_new_tokens: cut" in row["error"] for row in failed)
    assert report["failures"][0] == {"id": failed[0]["origin_id"], "error": failed[0]["error"]}
    train_ids = storage.read_parquet(project / paths.clean_split("train"), ["id"]).column("id").to_pylist()
    assert 0.3 < report["rows_in"] / len(train_ids) < 0.7  # fraction 0.5 of the training rows

    augmented = pq.read_table(project / paths.AUGMENTED, columns=["id", "origin_id"]).to_pylist()
    added = {row["id"] for row in table if row["status"] == "added"}
    assert {row["id"] for row in augmented if row["id"].endswith("#bt0")} == added
    assert len(augmented) == len({row["id"] for row in augmented})
    assert "Stage 'back_translate' didn't change" in run(["dvc", "repro", "augment"], project)
