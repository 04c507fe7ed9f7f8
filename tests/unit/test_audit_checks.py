"""How the audit judges what it re-derived: the comparison functions on real lock files and metrics."""

from __future__ import annotations

import copy
import json

import pytest
import yaml

from reprolab.audit.causes import find_causes
from reprolab.audit.check import Check
from reprolab.audit.kernels import inexact_reason, kernel_environment, recorded_kernels
from reprolab.audit.report import describe_cause
from reprolab.audit.reproduce import compare_export, compare_hashes, compare_metrics, excuse_weights, trained_paths
from reprolab.process_settings import PORTABLE_CPU_KERNELS, portable_caps

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
        ("dependency", "ingest:data/source"),
        ("output", "ingest:data/raw/raw.parquet"),
        ("dependency", "train:data/raw/raw.parquet"),
    }


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
        "across CPU kernels (x86_64 AVX2 (portable) recorded, aarch64 DEFAULT (portable) here)"
    )
    assert inexact_reason("cpu", "cpu", None, arm) == ""  # an older result without the record: exact
    assert inexact_reason("cuda:0", "cpu", None, arm).startswith("on CUDA")


def test_only_what_the_weights_decide_is_excused():
    """Train's outputs and those of every stage that reads them, however far down (the student's)."""
    lock = {
        "stages": {
            "tokenize": {"outs": [{"path": "data/tokens"}]},
            "train": {"deps": [{"path": "data/tokens"}], "outs": [{"path": "models/model"}]},
            "evaluate": {"deps": [{"path": "models/model"}], "outs": [{"path": "reports/metrics.json"}]},
            "teacher_logits": {"deps": [{"path": "models/model"}], "outs": [{"path": "data/distill/logits"}]},
            "distill": {"deps": [{"path": "data/distill/logits"}], "outs": [{"path": "models/student"}]},
        }
    }
    checks = [
        Check("output", "train:models/model", "a", "b", False),
        Check("dependency", "evaluate:models/model", "a", "b", False),
        Check("output", "evaluate:reports/metrics.json", "c", "d", False),
        Check("mlflow_model", "models/model/model.safetensors", "e", "f", False),
        Check("output", "distill:models/student", "s", "t", False),
        Check("output", "tokenize:data/tokens", "g", "h", False),
        Check("dependency", "train:data/tokens", "g", "h", False),
        Check("metric", "transformer.macro_f1", 0.9, 0.8, False),
    ]
    excuse_weights(checks, "across CPU kernels", trained_paths(lock))
    assert [c.ok for c in checks] == [True, True, True, True, True, False, False, False]
    assert checks[0].detail == "differs across CPU kernels; metrics decide"


def test_recorded_kernels_fall_back_to_the_run_tags():
    class Run:  # the part of an MLflow run the audit reads
        class data:  # noqa: N801
            tags = {
                "cpu.kernels": "native",
                "cpu.machine": "x86_64",
                "cpu.torch_capability": "AVX512",
                "git.commit": "abc",
            }

    from_file = {"kernels": "portable", "machine": "x86_64", "torch_capability": "AVX2"}
    assert recorded_kernels({"cpu_kernels": from_file}, Run) == from_file
    assert recorded_kernels({}, Run) == {"kernels": "native", "machine": "x86_64", "torch_capability": "AVX512"}
    assert recorded_kernels({}, None) is None


AVX2 = {
    "kernels": "portable",
    "machine": "x86_64",
    "torch_capability": "AVX2",
    "numpy_simd": "X86_V3",
    "blas_core": "Haswell",
}
SAME_SIDES = {
    "packages": {"recorded": {"numpy": "2.4.6"}, "reproduced": {"numpy": "2.4.6", "torch": "2.13.0"}},
    "kernels": {"recorded": AVX2, "reproduced": AVX2},
    "devices": {"recorded": "cpu", "reproduced": "cpu"},
}


def test_a_result_without_a_kernel_record_runs_on_the_portable_caps_of_its_time():
    """Even where the user asked for native kernels: the result was made on AVX2 machines."""
    env, said = kernel_environment(None, {"REPROLAB_CPU_KERNELS": "native", "HOME": "/h"})
    assert env == {"REPROLAB_CPU_KERNELS": "portable", "HOME": "/h", **portable_caps()}
    assert said.startswith("kernels not recorded") and "portable AVX2 caps" in said


def test_a_result_runs_on_the_kernels_it_recorded():
    user = {"REPROLAB_CPU_KERNELS": "portable", **PORTABLE_CPU_KERNELS}
    env, said = kernel_environment({**AVX2, "kernels": "native", "torch_capability": "AVX512"}, user)
    assert env == {"REPROLAB_CPU_KERNELS": "native"} and said == "native kernels, as recorded"
    env, said = kernel_environment(AVX2, {"REPROLAB_CPU_KERNELS": "native"})
    assert env == {"REPROLAB_CPU_KERNELS": "portable", **portable_caps()} and said == "portable kernels, as recorded"
    # A cap set by hand stays: it stands for a smaller machine, whose kernels are then compared.
    env, _ = kernel_environment(AVX2, {"ATEN_CPU_CAPABILITY": "default"})
    assert env["ATEN_CPU_CAPABILITY"] == "default"


def test_a_record_from_before_numpy_was_held_says_so():
    older = {"kernels": "portable", "machine": "x86_64", "torch_capability": "AVX2"}
    _, said = kernel_environment(older, {})
    assert said == (
        "portable kernels, as recorded (numpy SIMD dispatch and OpenBLAS core not recorded then: "
        "held to AVX2 with the rest)"
    )


def test_numpy_dispatch_alone_makes_the_kernels_differ():
    avx512_numpy = {**AVX2, "numpy_simd": "AVX512_SPR"}
    assert inexact_reason("cpu", "cpu", AVX2, avx512_numpy) == (
        "across CPU kernels (x86_64 AVX2 (portable), numpy SIMD dispatch X86_V3, OpenBLAS core Haswell recorded, "
        "x86_64 AVX2 (portable), numpy SIMD dispatch AVX512_SPR, OpenBLAS core Haswell here)"
    )


def test_another_cpu_vendor_makes_the_kernels_differ():
    """MKL's CBWR branch fixes Intel's code path only: the same caps on an AMD CPU gave other last bits."""
    intel, amd = {**AVX2, "cpu_vendor": "GenuineIntel"}, {**AVX2, "cpu_vendor": "AuthenticAMD"}
    assert inexact_reason("cpu", "cpu", intel, amd).startswith(
        "across CPU kernels (x86_64 AVX2 (portable), CPU vendor (MKL's code path) GenuineIntel,"
    )
    assert inexact_reason("cpu", "cpu", AVX2, amd) == ""  # a record from before the vendor was: not compared


# The default pipeline's evaluate stage, cut to the baseline's outputs and one of the transformer's.
PIPELINE = yaml.safe_load("""
stages:
  ingest:
    deps: [{path: data/source, md5: s1.dir}, {path: reprolab/data/ingestion.py, md5: c1}]
    outs: [{path: data/raw/raw.parquet, md5: r1}]
  train:
    deps: [{path: data/raw/raw.parquet, md5: r1}, {path: reprolab/model/training.py, md5: c2}]
    params: {params.yaml: {train.epochs: 3}}
    outs: [{path: models/model, md5: m1.dir}]
  evaluate:
    deps: [{path: data/raw/raw.parquet, md5: r1}, {path: models/model, md5: m1.dir},
           {path: reprolab/results/evaluation.py, md5: c3}]
    outs: [{path: reports/metrics.json, md5: e1}, {path: reports/plots/roc_baseline.csv, md5: e2},
           {path: reports/plots/roc_transformer.csv, md5: e3}]
""")


def audit_checks(recorded: dict, reproduced: dict, metrics: dict[str, float]) -> list[Check]:
    return compare_hashes(recorded, reproduced) + compare_metrics(METRICS, {**METRICS, **metrics}, 0.0)


def test_a_pair_of_runs_differing_only_in_numpy_dispatch_names_it_as_the_cause():
    """0dbdd0b's case: the baseline's vocabulary (numpy's SIMD sort) moved its outputs and metric."""
    reproduced = copy.deepcopy(PIPELINE)
    outs = reproduced["stages"]["evaluate"]["outs"]
    outs[0]["md5"], outs[1]["md5"] = "e1-moved", "e2-moved"
    checks = audit_checks(PIPELINE, reproduced, {"baseline.macro_f1": 0.9585})
    sides = {**SAME_SIDES, "kernels": {"recorded": AVX2, "reproduced": {**AVX2, "numpy_simd": "X86_V4"}}}
    (cause,) = find_causes(PIPELINE, reproduced, checks, sides)
    assert cause == {
        "stage": "evaluate",
        "known": ["numpy SIMD dispatch X86_V4 here, X86_V3 recorded"],
        "differences": [
            "output evaluate:reports/metrics.json",
            "output evaluate:reports/plots/roc_baseline.csv",
            "metric baseline.macro_f1",
        ],
        "metric_change": pytest.approx(0.0085),
    }
    assert describe_cause(cause) == (
        "evaluate (3 differences): numpy SIMD dispatch X86_V4 here, X86_V3 recorded; metrics moved by at most 0.0085"
    )


def test_differences_downstream_of_a_moved_stage_are_its_own():
    """A changed source moves every stage after ingest: one cause. A stage's own record (a param
    changed without a re-run, stale code in dvc.lock) is a cause of its own."""
    reproduced = copy.deepcopy(PIPELINE)
    stages = reproduced["stages"]
    stages["ingest"]["deps"][0]["md5"] = "s2.dir"
    stages["ingest"]["outs"][0]["md5"] = stages["train"]["deps"][0]["md5"] = stages["evaluate"]["deps"][0]["md5"] = "r2"
    stages["train"]["outs"][0]["md5"] = stages["evaluate"]["deps"][1]["md5"] = "m2.dir"
    stages["evaluate"]["outs"][2]["md5"] = "e3-moved"
    checks = audit_checks(PIPELINE, reproduced, {"transformer.macro_f1": 0.91})
    sides = {**SAME_SIDES, "packages": {"recorded": {"numpy": "2.3.0"}, "reproduced": {"numpy": "2.4.6"}}}
    (cause,) = find_causes(PIPELINE, reproduced, checks, sides)
    assert cause["stage"] == "ingest" and len(cause["differences"]) == len([c for c in checks if not c.ok]) == 8
    assert cause["known"] == ["input data/source: s2.dir here, s1.dir in dvc.lock", "numpy 2.4.6 here, 2.3.0 recorded"]

    stages["train"]["params"]["params.yaml"]["train.epochs"] = 5
    stages["evaluate"]["deps"][2]["md5"] = "c3-stale"
    causes = find_causes(PIPELINE, reproduced, audit_checks(PIPELINE, reproduced, {}), sides)
    assert [(c["stage"], c["known"][0], c["differences"]) for c in causes[1:]] == [
        ("train", "param train.epochs 5 here, 3 in dvc.lock", ["param train.epochs"]),
        (
            "evaluate",
            "code changed after dvc.lock was written: reprolab/results/evaluation.py",
            ["dependency evaluate:reprolab/results/evaluation.py"],
        ),
    ]
    assert describe_cause(causes[2], most=1) == (
        "evaluate (1 difference): code changed after dvc.lock was written: reprolab/results/evaluation.py; 1 more"
    )


def test_a_moved_stage_with_nothing_recorded_different_says_so():
    reproduced = copy.deepcopy(PIPELINE)
    reproduced["stages"]["train"]["outs"][0]["md5"] = reproduced["stages"]["evaluate"]["deps"][1]["md5"] = "m2.dir"
    (cause,) = find_causes(PIPELINE, reproduced, audit_checks(PIPELINE, reproduced, {}), SAME_SIDES)
    assert cause["stage"] == "train" and cause["known"] == []
    assert "nothing recorded differs" in describe_cause(cause)


def test_recorded_export_timings_are_not_compared_but_its_other_figures_are(tmp_path):
    """An export.json from before the timings moved to `make bench` differs run to run: its hash is excused,
    its sizes and scores must match."""
    row = {
        "size_mb": 22.97,
        "macro_f1": 0.973,
        "agreement_with_torch": 0.9953,
        "latency_ms_p50": 10.8,
        "latency_ms_p95": 11.8,
        "rows_per_second": 132.6,
        "speedup_vs_torch": 1.8,
    }
    recorded = {"backends": {"onnx-int8": row}, "targets": {"int8_speedup_at_least_2x": False}}
    rerun = {
        "backends": {"onnx-int8": row | {"rows_per_second": 140.1, "latency_ms_p50": 9.9, "speedup_vs_torch": 2.01}},
        "targets": {"int8_speedup_at_least_2x": True},
    }
    (tmp_path / "export.json").write_text(json.dumps(rerun))
    checks = [
        Check("output", "export:reports/export.json", "a", "b", False),
        Check("output", "train:models/model", "c", "d", False),
    ]
    added = compare_export(checks, json.dumps(recorded), tmp_path / "export.json", 0.0)
    assert checks[0].ok and "timings" in checks[0].detail and not checks[1].ok
    assert sorted(c.name for c in added) == [
        "onnx-int8.agreement_with_torch",
        "onnx-int8.macro_f1",
        "onnx-int8.size_mb",
    ]
    assert all(c.ok and c.kind == "export_metric" for c in added)
    (tmp_path / "export.json").write_text(json.dumps({"backends": {"onnx-int8": row | {"macro_f1": 0.95}}}))
    (moved,) = [c for c in compare_export(checks, json.dumps(recorded), tmp_path / "export.json", 0.0) if not c.ok]
    assert moved.name == "onnx-int8.macro_f1" and moved.detail == "difference -0.023"
    # A revision from before the export stage: nothing to compare.
    assert compare_export(checks, None, tmp_path / "export.json", 0.0) == []


def test_an_export_report_without_timings_is_held_to_its_hash(tmp_path):
    """Today's export.json holds only figures a rerun reproduces: nothing excuses its hash."""
    report = {"backends": {"onnx-int8": {"size_mb": 22.97, "macro_f1": 0.973}}}
    (tmp_path / "export.json").write_text(json.dumps(report))
    checks = [Check("output", "export:reports/export.json", "a", "b", False)]
    assert compare_export(checks, json.dumps(report), tmp_path / "export.json", 0.0) == []
    assert not checks[0].ok and checks[0].detail == ""


def test_a_device_difference_is_named_for_every_stage_the_weights_decide_and_for_no_other():
    """The stages downstream of train, from the lock (a student's evaluate among them), not a list by hand."""
    pipeline = copy.deepcopy(PIPELINE)
    pipeline["stages"]["evaluate_student"] = {
        "deps": [{"path": "models/model", "md5": "m1.dir"}],
        "outs": [{"path": "reports/student/metrics.json", "md5": "s1"}],
    }
    reproduced = copy.deepcopy(pipeline)
    reproduced["stages"]["evaluate_student"]["outs"][0]["md5"] = "s1-moved"
    reproduced["stages"]["ingest"]["outs"][0]["md5"] = "r1-moved"
    sides = {**SAME_SIDES, "devices": {"recorded": "cuda:0", "reproduced": "cpu"}}
    causes = {
        c["stage"]: c["known"] for c in find_causes(pipeline, reproduced, compare_hashes(pipeline, reproduced), sides)
    }
    assert causes["evaluate_student"] == ["device cpu here, cuda:0 recorded"]
    assert "device cpu here, cuda:0 recorded" not in causes["ingest"]
