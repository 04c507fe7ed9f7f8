"""Token classification's data stages at scale: ingest, clean and tokenize on 100k and 1M sentences,
time and peak memory of each (as bench/scale_bench.py measures them: the summed PSS of the stage's
process tree, sampled every 0.1 s, and the largest process's peak RSS).

The source is the NER default's WNUT-16 file (run `make repro-ner` first) repeated to the size, each
copy of a sentence made distinct by one more `O` word (its number), so clean keeps them; the real
stages run one after another in a scratch project on the NER default's params. Targets: at most
1.5 GB per stage at 1M sentences, time per sentence growing at most 1.2x from 100k to 1M.
Run: `python bench/ner_scale_bench.py [--sizes ...]`.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

import common  # noqa: F401  first: it calls configure_process() before numpy or torch loads
import yaml
from common import ROOT, save
from scale_bench import TARGET_MB, run_measured

PROJECT = ROOT / "examples/ner"
STAGES = ("ingest", "clean", "tokenize")


def write_source(sentences: int, dest: Path) -> None:
    """`sentences` CoNLL sentences: WNUT-16's, repeated, copy k of each ending with the word `n<k>`."""
    params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    text = (PROJECT / params["ingest"]["path"]).read_text(encoding="utf-8")
    base = [block for block in re.split(r"\n[ \t]*\n", text.strip()) if block.strip()]
    with open(dest, "w", encoding="utf-8") as out:
        for i in range(sentences):
            out.write(f"{base[i % len(base)]}\nn{i // len(base)}\tO\n\n")


def scratch_project(root: Path, sentences: int) -> Path:
    config = yaml.safe_load((PROJECT / "params.yaml").read_text())
    config["ingest"]["path"] = "source.conll"
    config["model"]["name_or_path"] = str((PROJECT / config["model"]["name_or_path"]).resolve())
    (root / "params.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    write_source(sentences, root / "source.conll")
    return root


def measure(sentences: int) -> dict[str, object]:
    row: dict[str, object] = {"sentences": sentences}
    with tempfile.TemporaryDirectory(prefix="reprolab-ner-scale-") as tmp:
        project = scratch_project(Path(tmp), sentences)
        for stage in STAGES:
            row[stage] = run_measured([sys.executable, "-m", f"stages.{stage}"], project)
            row[stage]["microseconds_per_sentence"] = round(row[stage]["seconds"] / sentences * 1e6, 1)
    print(row, flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    args = parser.parse_args()
    sizes = [measure(n) for n in args.sizes]
    first, last = sizes[0], sizes[-1]
    save(
        "ner_scale",
        {
            "sizes": sizes,
            "target_peak_mb": TARGET_MB,
            "peak_tree_pss_mb_at_largest": {stage: last[stage]["peak_tree_pss_mb"] for stage in STAGES},
            "time_per_sentence_growth": {
                stage: round(last[stage]["microseconds_per_sentence"] / first[stage]["microseconds_per_sentence"], 2)
                for stage in STAGES
            },
            "target_growth": 1.2,
        },
    )


if __name__ == "__main__":
    main()
