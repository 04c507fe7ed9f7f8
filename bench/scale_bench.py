"""ingest, clean, tokenize, augment and `reprolab predict` at scale: time and peak memory of the streaming
stages at 100k, 300k, 1M rows.

For each size, bench/build_corpus.py writes a synthetic input (real messages, varied) into a scratch
project, and the real stage (`python -m stages.ingest` / `.clean` / ...) runs there in a child
process. Memory is the peak, sampled every 0.1 s, of the summed PSS of the stage's whole process
tree (clean's worker processes included; PSS splits shared pages between the processes that share
them), and the kernel's peak RSS of the largest single process (wait4).
Side by side, in the same invocation and on the same files:
- tokenize and augment: the whole-table recipes the stages replaced (read the split, encode or
  augment it all, write one table);
- clean: one worker process against one per core (what the cores buy);
each at the smallest size only.
predict reads a JSON Lines source as ingest does and scores it with `--predict-model`: `tiny` (default), a
2-layer BERT of width 32 with the real tokenizer and this project's recipe, so that reading, cleaning,
encoding and writing 1M rows take minutes (the real model scores about 75 rows/s on 2 cores: 4 hours);
or a model folder, with `--predict-format` (e.g. models/export, onnx-int8) for the real model at a size
that fits the time.
Targets: peak memory <= 1.5 GB at 1M rows, and time linear in rows.
ingest reads a JSON Lines source (one row per line, with ids), clean a raw table, tokenize and augment
clean splits (augment copies a quarter of the training rows, as params.yaml sets).
Run: `python bench/scale_bench.py [--stage ingest clean tokenize augment predict] [--sizes ...]`
(after `dvc repro -s clean`).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common  # noqa: F401  first: it calls configure_process() before numpy or torch loads
import pyarrow as pa
import yaml
from build_corpus import build
from common import ROOT, params, save

from reprolab import paths, storage

TARGET_MB = 1536


def scratch_project(root: Path, stage: str, rows: int, engine: dict | None = None) -> Path:
    """A project of `rows` synthetic rows for `stage`, on params.yaml's engine updated by `engine`."""
    config = yaml.safe_load((ROOT / "params.yaml").read_text())
    config["ingest"]["path"] = str(ROOT / params.ingest.path)
    config["model"]["name_or_path"] = str(ROOT / params.model.name_or_path)
    config["engine"] |= engine or {}
    if stage == "predict":
        build(rows, root / "source.jsonl", seed=0, form="jsonl")
    if stage == "ingest":
        config["ingest"] |= {"format": "jsonl", "path": "source.jsonl", "id_column": "id", "max_rows_per_label": None}
        build(rows, root / "source.jsonl", seed=0, form="jsonl")
    (root / "params.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    if stage == "clean":
        build(rows, root / paths.RAW, seed=0, form="raw")
    else:
        for split, count, seed in (("train", rows, 0), ("val", 1000, 1), ("test", 1000, 2)):
            build(count, root / paths.clean_split(split), seed)
    return root


def _tree(root: int) -> list[int]:
    """`root` and every process descended from it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue  # exited while we looked
            children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += children.get(pid, [])
    return tree


def _pss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run_measured(cmd: list[str], cwd: Path) -> dict[str, float]:
    """Wall seconds, peak summed PSS of the process tree and peak RSS of its largest process (MB)."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HF_HUB_OFFLINE": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}",
    }
    peak_tree = 0.0
    # stderr to a file, not a pipe: nothing drains a pipe while we poll, and a full one would hang.
    with tempfile.TemporaryFile() as stderr, open(os.devnull, "wb") as devnull:
        start = time.perf_counter()
        child = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=devnull, stderr=stderr)
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            peak_tree = max(peak_tree, sum(_pss_mb(p) for p in _tree(child.pid)))
            time.sleep(0.1)
        seconds = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status) != 0:
            stderr.seek(0)
            raise SystemExit(f"{cmd} failed: {stderr.read().decode(errors='replace')[-2000:]}")
    return {
        "seconds": round(seconds, 1),
        "peak_tree_pss_mb": round(peak_tree),
        "peak_process_rss_mb": round(usage.ru_maxrss / 1024),
    }


def whole_table_tokenize(project: Path) -> None:
    """tokenize's baseline: every split read, encoded and written in one piece."""
    from reprolab.encoding import encoder

    p = params.tokenize
    tokenizer = encoder.load_tokenizer(str(ROOT / params.model.name_or_path))
    for split in paths.SPLITS:
        table = storage.read_parquet(project / paths.clean_split(split)).to_pydict()
        ids = [
            encoder.encode(tokenizer, table["text"][i : i + p.batch_size], p.max_length, encoder.Truncation.of(p))
            for i in range(0, len(table["text"]), p.batch_size)
        ]
        tokens = encoder.token_table(
            table["id"], [s for batch in ids for s in batch], encoder.label_ids(table["label"], params.ingest.labels)
        )
        storage.write_parquet(tokens, project / paths.token_split(split))


def whole_table_augment(project: Path) -> None:
    """augment's baseline: the training split read whole, every copy made, encoded and written at once."""
    from reprolab.data import augmentation
    from reprolab.encoding import encoder

    train = storage.read_parquet(project / paths.clean_split("train")).to_pylist()
    truncation = encoder.Truncation.of(params.tokenize)
    copies = augmentation.augment_rows(train, params.augment, truncation)
    tokenizer = encoder.load_tokenizer(str(ROOT / params.model.name_or_path))
    tokens = encoder.token_table(
        [r["id"] for r in copies],
        encoder.encode(tokenizer, [r["text"] for r in copies], params.tokenize.max_length, truncation),
        encoder.label_ids([r["label"] for r in copies], params.ingest.labels),
    )
    table = tokens.append_column("origin_id", pa.array([r["origin_id"] for r in copies]))
    storage.write_parquet(table, project / paths.AUGMENTED)


WHOLE_TABLE = {"tokenize": whole_table_tokenize, "augment": whole_table_augment}
OUTPUTS = {"tokenize": [paths.token_split(split) for split in paths.SPLITS], "augment": [paths.AUGMENTED]}


def tiny_model(dest: Path) -> Path:
    """The tests' tiny classifier (random weights, the real tokenizer) with this project's recipe."""
    from reprolab.inference.prediction import Recipe
    from tests.tiny_models import tiny_classifier

    tiny_classifier(dest, params.ingest.class_names, ROOT / params.model.name_or_path)
    Recipe.of(params).write(dest)
    return dest


def stage_command(stage: str, model: tuple[str, str]) -> list[str]:
    if stage != "predict":
        return [sys.executable, "-m", f"stages.{stage}"]
    return [
        sys.executable,
        "-m",
        "reprolab.cli",
        "predict",
        "source.jsonl",
        "--out",
        "predictions.parquet",
        "--id-column",
        "id",
        "--model",
        model[0],
        "--format",
        model[1],
        "--no-progress",
    ]


def measure(stage: str, rows: int, baseline: bool, model: tuple[str, str] = ("", "torch")) -> dict[str, object]:
    row: dict[str, object] = {"rows": rows}
    with tempfile.TemporaryDirectory(prefix="reprolab-scale-") as tmp:
        project = scratch_project(Path(tmp), stage, rows)
        row["stage"] = run_measured(stage_command(stage, model), project)
        if stage == "predict":
            row["rows_predicted"] = storage.parquet_rows(project / "predictions.parquet")
        if stage == "clean":
            row["rows_kept"] = clean_rows_kept(project)
        if baseline and stage in WHOLE_TABLE:
            streamed = [storage.file_md5(project / output) for output in OUTPUTS[stage]]
            row["whole_table"] = run_measured(
                [sys.executable, str(Path(__file__).resolve()), "--whole-table", stage, str(project)], project
            )
            # The baseline overwrote the stage's outputs: same bytes, same work.
            row["same_output_as_whole_table"] = streamed == [storage.file_md5(project / o) for o in OUTPUTS[stage]]
            row["memory_ratio_whole_table"] = round(
                row["whole_table"]["peak_tree_pss_mb"] / row["stage"]["peak_tree_pss_mb"], 2
            )
    if baseline and stage == "clean":
        with tempfile.TemporaryDirectory(prefix="reprolab-scale-") as tmp:
            project = scratch_project(Path(tmp), stage, rows, engine={"workers": 1})
            row["one_worker"] = run_measured([sys.executable, "-m", "stages.clean"], project)
        row["speedup_all_cores"] = round(row["one_worker"]["seconds"] / row["stage"]["seconds"], 2)
    row["rows_per_second"] = round(rows / row["stage"]["seconds"])
    print(row, flush=True)
    return row


def clean_rows_kept(project: Path) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(project / paths.clean_split(split)).metadata.num_rows for split in paths.SPLITS)


def main() -> None:
    parser = argparse.ArgumentParser()
    stages = ["ingest", "clean", "tokenize", "augment", "predict"]
    parser.add_argument("--stage", nargs="+", choices=stages, default=stages)
    parser.add_argument("--predict-model", default="tiny", help="tiny, or a model folder")
    parser.add_argument("--predict-format", default="torch", choices=("torch", "onnx", "onnx-int8"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    # A baseline's child process: --whole-table STAGE PROJECT.
    parser.add_argument("--whole-table", nargs=2, metavar=("STAGE", "PROJECT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.whole_table:
        stage, project = args.whole_table
        return WHOLE_TABLE[stage](Path(project))
    with tempfile.TemporaryDirectory(prefix="reprolab-tiny-") as tiny:
        model = (
            str(tiny_model(Path(tiny)) if args.predict_model == "tiny" else Path(args.predict_model).resolve()),
            args.predict_format,
        )
        for stage in args.stage:
            run_stage_sizes(stage, args.sizes, model, args.predict_model)


def run_stage_sizes(stage: str, sizes_asked: list[int], model: tuple[str, str], model_name: str) -> None:
    # Baselines run beside the smallest size (at 1M rows tokenize's takes 8 GB and 8 minutes).
    sizes = [measure(stage, rows, baseline=i == 0, model=model) for i, rows in enumerate(sizes_asked)]
    first, last = sizes[0], sizes[-1]
    save(
        f"scale_{stage}",
        {
            **({"model": model_name, "format": model[1]} if stage == "predict" else {}),
            "target_peak_mb": TARGET_MB,
            "sizes": sizes,
            # Linear time: seconds per row stays flat from the smallest size to the largest.
            "time_per_row_growth": round(
                (last["stage"]["seconds"] / last["rows"]) / (first["stage"]["seconds"] / first["rows"]), 2
            ),
            "memory_met": all(s["stage"]["peak_tree_pss_mb"] <= TARGET_MB for s in sizes),
        },
    )


if __name__ == "__main__":
    main()
