"""tokenize throughput: the stage's batched fast path against the two usual recipes.

Same fast tokenizer, same max_length and truncation, same real texts (the clean splits, repeated
to --rows): (1) the stage's `ChunkedEncoder` in batches, building the Arrow token table the stage
writes (it reads only as much of each text as truncation can keep: the ids are checked equal to
whole-text encoding); (2) `datasets.Dataset.map(batched=True)`; (3) a torch `Dataset.__getitem__` tokenizing one
row at a time, padded to max_length. Run: `python bench/tokenize_bench.py`.
"""

import argparse
import tempfile

from common import best_of, clean_texts, params, save

from reprolab.encoding import encoder
from reprolab.encoding.truncated import ChunkedEncoder


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    texts, labels = clean_texts()
    texts = (texts * (args.rows // len(texts) + 1))[: args.rows]
    ids = [str(i) for i in range(len(texts))]
    label_ids = encoder.label_ids((labels * (args.rows // len(labels) + 1))[: args.rows], params.ingest.labels)
    max_length, batch = params.tokenize.max_length, params.tokenize.batch_size
    tokenizer = encoder.load_tokenizer(params.model.name_or_path)
    # Head truncation whatever params say: the baselines are the tokenizer's own, which has no head_tail.
    head = encoder.Truncation("head")
    encode = ChunkedEncoder(tokenizer, max_length, head)

    def reprolab():
        for start in range(0, len(texts), batch):
            encoder.token_table(
                ids[start : start + batch], encode(texts[start : start + batch]), label_ids[start : start + batch]
            )

    from datasets import Dataset, disable_caching, disable_progress_bars

    disable_progress_bars()
    disable_caching()
    dataset = Dataset.from_dict({"text": texts})

    def datasets_map():
        with tempfile.TemporaryDirectory():
            dataset.map(
                lambda b: tokenizer(b["text"], truncation=True, max_length=max_length),
                batched=True,
                keep_in_memory=True,
            )

    class PerRow:  # the common naive recipe
        def __getitem__(self, i):
            return tokenizer(
                texts[i], truncation=True, max_length=max_length, padding="max_length", return_tensors="pt"
            )

    naive_rows = min(len(texts), 4000)

    def per_row():
        rows = PerRow()
        for i in range(naive_rows):
            rows[i]

    sample = texts[:batch]
    if encode(sample).to_pylist() != encoder.encode(tokenizer, sample, max_length, head):
        raise SystemExit("chunked ids differ from whole-text ids: the comparison would be unfair")
    ours = len(texts) / best_of(args.repeats, reprolab)
    mapped = len(texts) / best_of(args.repeats, datasets_map)
    naive = naive_rows / best_of(args.repeats, per_row)
    save(
        "tokenize",
        {
            "rows": len(texts),
            "max_length": max_length,
            "rows_per_second": {
                "reprolab": round(ours),
                "datasets_map_batched": round(mapped),
                "per_row_getitem_padded": round(naive),
            },
            "ratio_vs_datasets_map": round(ours / mapped, 2),
            "target_vs_datasets_map": 1.5,
            "ratio_vs_per_row": round(ours / naive, 1),
            "target_vs_per_row": 20,
        },
    )


if __name__ == "__main__":
    main()
