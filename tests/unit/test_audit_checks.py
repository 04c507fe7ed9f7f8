"""How the audit judges what it re-derived: the comparison functions on real lock files and metrics."""

from __future__ import annotations

import copy

import yaml

from reprolab.audit import (
    Check,
    compare_hashes,
    compare_metrics,
    excuse_weights,
    inexact_reason,
    recorded_kernels,
    trained_paths,
)

# A dvc.lock as the pipeline writes it, cut to three stages.
LOCK = yaml.safe_load("""
schema: '2.0'
stages:
  ingest:
    cmd: python -m stages.ingest
    deps:
    - path: data/source
      md5: 2b5f9e0a8d.dir
    params:
      params.yaml:
        ingest.max_text_bytes: 1000000
    outs:
    - path: data/raw/raw.parquet
      md5: 4c1d0e6a31
  train:
    cmd: python -m stages.train
    deps:
    - path: data/raw/raw.parquet
      md5: 4c1d0e6a31
    params:
      params.yaml:
        train.learning_rate: 5e-05
    outs:
    - path: models/model
      md5: 9b1e1dcb.dir
  evaluate:
    cmd: python -m stages.evaluate
    deps:
    - path: models/model
      md5: 9b1e1dcb.dir
    outs:
    - path: reports/metrics.json
      md5: 77aa01
""")
METRICS = {"transformer.macro_f1": 0.93, "baseline.macro_f1": 0.95}


def failed(checks: list[Check]) -> set[tuple[str, str]]:
    return {(c.kind, c.name) for c in checks if not c.ok}


def test_identical_records_match_everywhere():
    assert failed(compare_hashes(LOCK, copy.deepcopy(LOCK))) == set()
    assert failed(compare_metrics(METRICS, dict(METRICS), 0.0)) == set()


def test_a_tampered_metric_is_the_one_difference():
    checks = compare_metrics({**METRICS, "transformer.macro_f1": 0.999}, METRICS, 0.0)
    assert failed(checks) == {("metric", "transformer.macro_f1")}
    (check,) = [c for c in checks if not c.ok]
    assert (check.recorded, check.reproduced, check.detail) == (0.999, 0.93, "difference -0.069")


def test_a_changed_raw_file_shows_as_its_dependency_and_everything_downstream():
    reproduced = copy.deepcopy(LOCK)
    reproduced["stages"]["ingest"]["deps"][0]["md5"] = "ffffffff.dir"
    reproduced["stages"]["ingest"]["outs"][0]["md5"] = "eeeeee"
    reproduced["stages"]["train"]["deps"][0]["md5"] = "eeeeee"
    assert failed(compare_hashes(LOCK, reproduced)) == {
        ("dependency", "ingest:data/source"), ("output", "ingest:data/raw/raw.parquet"),
        ("dependency", "train:data/raw/raw.parquet")}


def test_a_param_changed_without_a_rerun_is_named_with_both_values():
    reproduced = copy.deepcopy(LOCK)
    reproduced["stages"]["train"]["params"]["params.yaml"]["train.learning_rate"] = 2e-4
    (check,) = [c for c in compare_hashes(LOCK, reproduced) if not c.ok]
    assert (check.kind, check.name, check.recorded, check.reproduced) == ("param", "train.learning_rate", 5e-05, 2e-4)
    assert "other params than the revision's params.yaml" in check.detail


def test_metrics_within_the_tolerance_pass_and_beyond_it_fail():
    moved = {"transformer.macro_f1": 0.935, "baseline.macro_f1": 0.97}
    assert failed(compare_metrics(METRICS, moved, 0.01)) == {("metric", "baseline.macro_f1")}
    assert failed(compare_metrics(METRICS, {"transformer.macro_f1": 0.93}, 0.01)) == {("metric", "baseline.macro_f1")}


def test_kernels_decide_whether_bits_must_match():
    avx2 = {"kernels": "portable", "machine": "x86_64", "torch_capability": "AVX2"}
    assert inexact_reason("cpu", "cpu", avx2, avx2) == ""
    # native asked on an AVX2 machine runs the same kernels as portable
    assert inexact_reason("cpu", "cpu", avx2, {**avx2, "kernels": "native"}) == ""
    arm = {"kernels": "portable", "machine": "aarch64", "torch_capability": "DEFAULT"}
    assert inexact_reason("cpu", "cpu", avx2, arm) == (
        "across CPU kernels (x86_64 AVX2 (portable) recorded, aarch64 DEFAULT (portable) here)")
    assert inexact_reason("cpu", "cpu", None, arm) == ""  # an older result without the record: exact
    assert inexact_reason("cuda:0", "cpu", None, arm).startswith("on CUDA")


def test_only_what_the_weights_decide_is_excused():
    lock = {"stages": {"tokenize": {"outs": [{"path": "data/tokens"}]},
                       "train": {"outs": [{"path": "models/model"}]},
                       "evaluate": {"outs": [{"path": "reports/metrics.json"}]}}}
    checks = [Check("output", "train:models/model", "a", "b", False),
              Check("dependency", "evaluate:models/model", "a", "b", False),
              Check("output", "evaluate:reports/metrics.json", "c", "d", False),
              Check("mlflow_model", "models/model/model.safetensors", "e", "f", False),
              Check("output", "tokenize:data/tokens", "g", "h", False),
              Check("dependency", "train:data/tokens", "g", "h", False),
              Check("metric", "transformer.macro_f1", 0.9, 0.8, False)]
    excuse_weights(checks, "across CPU kernels", trained_paths(lock))
    assert [c.ok for c in checks] == [True, True, True, True, False, False, False]
    assert checks[0].detail == "differs across CPU kernels; metrics decide"


def test_recorded_kernels_fall_back_to_the_run_tags():
    class Run:  # the part of an MLflow run the audit reads
        class data:  # noqa: N801
            tags = {"cpu.kernels": "native", "cpu.machine": "x86_64", "cpu.torch_capability": "AVX512",
                    "git.commit": "abc"}

    from_file = {"kernels": "portable", "machine": "x86_64", "torch_capability": "AVX2"}
    assert recorded_kernels({"cpu_kernels": from_file}, Run) == from_file
    assert recorded_kernels({}, Run) == {"kernels": "native", "machine": "x86_64", "torch_capability": "AVX512"}
    assert recorded_kernels({}, None) is None
