"""Hostile input through the real stage commands: one message and exit status 2, never a traceback; run
directly, a failing stage leaves its previous outputs as they were; under `dvc repro`, which deletes a
stage's outputs before running it, `dvc checkout` brings them back."""

from __future__ import annotations

import gzip
import subprocess
import sys

import pytest

from reprolab import storage
from tests.conftest import env_for, lock_outs, ran_stages, run, update_params

OUTPUTS = ("data/raw/raw.parquet", "data/rejects/ingest.parquet", "reports/ingest.json")


def damaged_sources(project):
    """(name, ingest params, source files to write): each a stage-level failure of its own kind."""
    return [
        (
            "truncated_archive",
            {"format": "mail_dir", "path": "hostile.tar.gz"},
            {"hostile.tar.gz": gzip.compress(b"\0" * 10_000)[:-20]},
        ),
        ("class_without_rows", {"labels": ["ham", "spam", "phish"]}, {}),
        (
            "duplicate_header",
            {"format": "csv", "path": "hostile.csv"},
            {"hostile.csv": b"text,label,label\nhello there,ham,spam\n"},
        ),
        (
            "nothing_kept",
            {"format": "jsonl", "path": "hostile.jsonl"},
            {"hostile.jsonl": b'{"text": "hello there", "label": "eggs"}\n' * 3},
        ),
    ]


def test_a_failing_stage_prints_one_message_and_leaves_its_outputs(project):
    before = {path: storage.file_md5(project / path) for path in OUTPUTS}
    for name, ingest, files in damaged_sources(project):
        for file, data in files.items():
            (project / file).write_bytes(data)
        update_params(project, {"ingest": ingest})
        done = subprocess.run(
            [sys.executable, "-m", "stages.ingest"],
            cwd=project,
            env=env_for(project),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 2, (name, done.stderr[-2000:])
        assert "Traceback" not in done.stderr and done.stderr.startswith("error: "), (name, done.stderr[-2000:])
        assert len(done.stderr.strip().splitlines()) == 1, (name, done.stderr)
        assert {path: storage.file_md5(project / path) for path in OUTPUTS} == before, name
        run(["git", "checkout", "params.yaml"], project)


@pytest.mark.parametrize("broken", ["alias", "class_without_rows"])
def test_dvc_repro_stops_on_bad_input_and_checkout_restores_the_outputs(project, broken):
    recorded = lock_outs(project)
    if broken == "alias":  # refused at the stage's first line, reading params.yaml
        text = (project / "params.yaml").read_text().replace("ingest:\n", "ingest:\n  base: &d {a: 1}\n  more: *d\n", 1)
        (project / "params.yaml").write_text(text)
    else:  # found only once the source is read: no row has the class
        update_params(project, {"ingest": {"labels": ["ham", "spam", "phish"]}})
    done = subprocess.run(
        ["dvc", "repro", "--force", "--single-item", "ingest"],
        cwd=project,
        env=env_for(project),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode != 0
    expected = "alias *d is not allowed" if broken == "alias" else "no row kept for class(es) ['phish']"
    assert expected in done.stderr and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert not (project / "data/raw/raw.parquet").exists()  # DVC removed it before running the stage
    run(["git", "checkout", "params.yaml"], project)
    run(["dvc", "checkout", "ingest"], project)  # the outputs dvc.lock still names, from the DVC cache
    assert storage.file_md5(project / "data/raw/raw.parquet") == recorded["data/raw/raw.parquet"]
    assert storage.file_md5(project / "data/rejects/ingest.parquet") == recorded["data/rejects/ingest.parquet"]


def test_a_params_typo_stops_dvc_repro_even_when_no_stage_reads_that_key(project):
    # train lists only the keys it reads: a misspelt extra key changes none of them, so only the
    # check_params stage (the whole params.yaml) sees it.
    text = (project / "params.yaml").read_text()
    (project / "params.yaml").write_text(text.replace("train:\n", "train:\n  learnig_rate: 0.1\n", 1))
    done = subprocess.run(
        ["dvc", "repro"], cwd=project, env=env_for(project), capture_output=True, text=True, timeout=600
    )
    assert done.returncode != 0 and "train.learnig_rate: unknown key" in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    (project / "params.yaml").write_text(text)
    assert ran_stages(run(["dvc", "repro"], project)) == []  # fixed: nothing to run, the check included
