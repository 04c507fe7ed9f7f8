"""The installed `reprolab` console command (the distribution's entry point, not the checkout's)."""

import subprocess

from tests.conftest import MODEL, REPROLAB


def test_help_lists_every_verb_from_outside_the_checkout(tmp_path):
    done = subprocess.run([REPROLAB, "--help"], cwd=tmp_path, capture_output=True, text=True, check=True)
    for verb in ("vendor-model", "pack-corpus", "ui", "env", "audit", "trace", "replay", "compare"):
        assert verb in done.stdout


def test_vendor_model_copies_the_model_and_the_tokenizer_loads_offline(tmp_path):
    dest = tmp_path / "models/pretrained/copy"
    done = subprocess.run(
        [REPROLAB, "vendor-model", str(MODEL), str(dest)], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in dest.iterdir()) == sorted(p.name for p in MODEL.iterdir() if p.is_file())
    from reprolab.encoding import encoder

    assert encoder.load_tokenizer(str(dest))("free money")["input_ids"][0] == 101  # [CLS]


def test_a_failure_is_one_line_and_status_2(tmp_path):
    done = subprocess.run(
        [REPROLAB, "pack-corpus", str(tmp_path / "missing"), str(tmp_path / "x.tar")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and done.stderr == f"error: {tmp_path / 'missing'}: not a directory (pack-corpus)\n"


def test_audit_takes_a_target_or_all_but_not_both(tmp_path):
    for args, said in (
        (["audit"], "audit takes a git revision or MLflow run id (or --all [--since REV]"),
        (["audit", "HEAD", "--since", "HEAD~3"], "audit takes a git revision"),
        (["audit", "--all", "HEAD"], "audit --all takes no target and no --keep"),
    ):
        done = subprocess.run([REPROLAB, *args], cwd=tmp_path, capture_output=True, text=True)
        assert done.returncode == 2 and done.stderr.startswith(f"error: {said}"), (args, done.stderr)
