"""tokenize at scale: time and peak memory of the streaming stage at 100k, 300k and 1M rows.

For each size, bench/build_corpus.py writes a synthetic train split (real messages, varied) into a
scratch project, and the real stage (`python -m stages.tokenize`) runs there in a child process; its
peak RSS comes from the kernel (wait4). Side by side, in the same invocation and on the same files,
the baseline is the whole-table recipe the stage replaced: read the split, encode it all, write one
table. Target: the stage's peak RSS <= 1.5 GB at 1M rows, and time linear in rows.
Run: `python bench/scale_bench.py` (after `dvc repro -s clean`; --sizes to change the row counts).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from build_corpus import build
from common import ROOT, params, save

from stages import paths

TARGET_RSS_MB = 1536


def scratch_project(root: Path, rows: int) -> Path:
    config = yaml.safe_load((ROOT / "params.yaml").read_text())
    config["ingest"]["path"] = str(ROOT / params.ingest.path)
    config["model"]["name_or_path"] = str(ROOT / params.model.name_or_path)
    (root / "params.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    for split, count, seed in (("train", rows, 0), ("val", 1000, 1), ("test", 1000, 2)):
        build(count, root / paths.clean_split(split), seed)
    return root


def run_measured(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of a child process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "MLFLOW_DISABLE_TELEMETRY": "true",
           "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}"}
    # stderr to a file, not a pipe: nothing drains a pipe while wait4 blocks, and a full one would hang.
    with tempfile.TemporaryFile() as stderr:
        start = time.perf_counter()
        child = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status) != 0:
            stderr.seek(0)
            raise SystemExit(f"{cmd} failed: {stderr.read().decode(errors='replace')[-2000:]}")
    return seconds, usage.ru_maxrss / 1024


def whole_table(project: Path) -> None:
    """The baseline: every split read, encoded and written in one piece."""
    from stages import encoding, io

    p = params.tokenize
    tokenizer = encoding.load_tokenizer(str(ROOT / params.model.name_or_path), p.truncation_side)
    for split in paths.SPLITS:
        table = io.read_parquet(project / paths.clean_split(split)).to_pydict()
        ids = [
            encoding.encode(tokenizer, table["text"][i : i + p.batch_size], p.max_length)
            for i in range(0, len(table["text"]), p.batch_size)
        ]
        tokens = encoding.token_table(table["id"], [s for batch in ids for s in batch],
                                      encoding.label_ids(table["label"], params.ingest.labels))
        io.write_parquet(tokens, project / paths.token_split(split))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    parser.add_argument("--whole-table", type=Path, help=argparse.SUPPRESS)  # the baseline's child process
    args = parser.parse_args()
    if args.whole_table:
        return whole_table(args.whole_table)
    results = {"target_peak_rss_mb": TARGET_RSS_MB, "sizes": []}
    for rows in args.sizes:
        with tempfile.TemporaryDirectory(prefix="reprolab-scale-") as tmp:
            project = scratch_project(Path(tmp), rows)
            stage_s, stage_mb = run_measured([sys.executable, "-m", "stages.tokenize"], project)
            base_s, base_mb = run_measured([sys.executable, str(Path(__file__).resolve()), "--whole-table",
                                            str(project)], project)
        row = {"rows": rows, "stage_seconds": round(stage_s, 1), "stage_peak_rss_mb": round(stage_mb),
               "stage_rows_per_second": round(rows / stage_s), "whole_table_seconds": round(base_s, 1),
               "whole_table_peak_rss_mb": round(base_mb), "rss_ratio": round(base_mb / stage_mb, 2)}
        print(row, flush=True)
        results["sizes"].append(row)
    first, last = results["sizes"][0], results["sizes"][-1]
    # Linear time: seconds per row stays flat from the smallest size to the largest.
    results["time_per_row_growth"] = round(
        (last["stage_seconds"] / last["rows"]) / (first["stage_seconds"] / first["rows"]), 2)
    results["rss_met"] = all(r["stage_peak_rss_mb"] <= TARGET_RSS_MB for r in results["sizes"])
    save("scale", results)


if __name__ == "__main__":
    main()
