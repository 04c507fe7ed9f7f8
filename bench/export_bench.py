"""The exported backends timed side by side: torch fp32, ONNX fp32 and ONNX int8 on the test split.

Run after `dvc repro export`: `python bench/export_bench.py [--rounds 3] [--latency-rows 100]`, or with
`--project examples/ner` for the tagger's (its windows are the rows). Every backend gets the same rows,
batch size and threads (`export.batch_size`, `export.threads`, as the export stage scores them); the
rounds alternate between the backends and the median round counts. The export stage's own report
(reports/export.json) holds only the figures a rerun reproduces.
"""

from common import backend_timing_args, result_name, save

from reprolab import paths
from reprolab.inference import backend_comparison
from reprolab.model import runtime
from reprolab.params import load_params


def main() -> None:
    args = backend_timing_args(__doc__)
    test = runtime.TokenData.read(paths.token_split("test"))
    p = load_params().export
    with backend_comparison.torch_threads(p.threads):
        scorers = backend_comparison.predictors(paths.MODEL_DIR, paths.EXPORT_DIR, p.batch_size, p.threads)
        table = backend_comparison.time_backends(scorers, test.sequences, args.latency_rows, args.rounds)
    save(
        result_name("export", args.project),
        {
            "project": args.project,
            "backends": table,
            "test_rows": len(test.sequences),
            "batch_size": p.batch_size,
            "threads": p.threads,
            "latency_rows": min(args.latency_rows, len(test.sequences)),
            "rounds": args.rounds,
            "target_int8_speedup": 2.0,
        },
    )


if __name__ == "__main__":
    main()
