"""The distilled student against its teacher, side by side: rows/s at export.batch_size, p50/p95 latency
of one row, size and the test score, for the teacher in torch and int8 and the student in torch and int8.

Run after `dvc repro` (it reads models/model, models/export, models/student and models/student_export):
`python bench/distill_bench.py [--project examples/ner] [--rounds 3] [--latency-rows 100]`. Every backend
gets the same test rows, batch size and threads; the rounds alternate between the backends and the median
round counts (backend_comparison.time_backends).
"""

from common import backend_timing_args, result_name, save

from reprolab import paths
from reprolab.inference import backend_comparison, onnx_export
from reprolab.inference.prediction import ONNX_FILES, Predictor
from reprolab.model import runtime
from reprolab.params import load_params

WEIGHT_FILES = {
    "torch": onnx_export.WEIGHTS_FILE,
    "teacher-int8": ONNX_FILES["onnx-int8"],
    "student-torch": onnx_export.WEIGHTS_FILE,
    "student-int8": ONNX_FILES["onnx-int8"],
}


def main() -> None:
    args = backend_timing_args(__doc__)
    params = load_params()
    p = params.export
    test = runtime.TokenData.read(paths.token_split("test"))
    student = paths.SCORED_MODELS["student"]
    with backend_comparison.torch_threads(p.threads):
        folders = {
            "torch": (paths.MODEL_DIR, "torch"),
            "teacher-int8": (paths.EXPORT_DIR, "onnx-int8"),
            "student-torch": (student.model_dir, "torch"),
            "student-int8": (student.export_dir, "onnx-int8"),
        }
        scorers = {
            name: Predictor(folder, backend, batch_size=p.batch_size, threads=p.threads)
            for name, (folder, backend) in folders.items()
        }
        probs = {name: scorer.probabilities(test.sequences) for name, scorer in scorers.items()}
        table = backend_comparison.time_backends(scorers, test.sequences, args.latency_rows, args.rounds)
        task, names = scorers["torch"].task, scorers["torch"].labels
        for name, row in table.items():
            row |= task.backend_scores(test, probs[name], probs["torch"], names)
            row["size_mb"] = round((scorers[name].folder / WEIGHT_FILES[name]).stat().st_size / 1e6, 2)
    layers = params.distill.student_layers
    save(
        result_name("distill", args.project),
        {
            "rows": {"torch": "teacher, torch fp32", **{k: k.replace("-", ", ") for k in folders if k != "torch"}},
            "backends": table,
            "student_layers": layers,
            "score": task.score,
            "test_rows": len(test.sequences),
            "batch_size": p.batch_size,
            "threads": p.threads,
            "latency_rows": min(args.latency_rows, len(test.sequences)),
            "rounds": args.rounds,
            "targets": {
                "student_int8_speedup_at_least_4": table["student-int8"]["speedup_vs_torch"] >= 4,
                f"student_int8_{task.score}_within_0.01": abs(
                    table["student-int8"][task.score] - table["torch"][task.score]
                )
                <= 0.01,
            },
        },
    )


if __name__ == "__main__":
    main()
