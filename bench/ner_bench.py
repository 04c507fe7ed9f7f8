"""Token classification figures, side by side on one machine (run `make repro-ner` first):

1. tokenize-and-align, sentences per second: the tokenize stage's `word_alignment.windows_table`
   (the Arrow table it writes) against Hugging Face's `run_ner_no_trainer.py` recipe,
   `tokenize_and_align_labels` through `datasets.Dataset.map(batched=True)`. The same sentences (the
   NER default's clean splits, repeated to --sentences), tokenizer, max_length and label rule (the
   first sub-token, -100 elsewhere), batches of the stage's batch size; the two sides alternate,
   and the ratio is the median of the per-pair ratios. What differs: a sentence longer than
   max_length is windowed by reprolab (every word scored) and truncated by the recipe; the script
   reports how many sentences that concerns.
2. What case-folding costs a tagger: the CRF baseline trained and scored on the words as written
   and on the same words lower-cased (all-MiniLM-L6-v2's tokenizer lower-cases every word).

Run: `python bench/ner_bench.py`.
"""

import argparse
import statistics
import time

from common import ROOT, save

from reprolab import paths, storage
from reprolab.data import tag_schemes
from reprolab.encoding import encoder, word_alignment
from reprolab.params import load_params
from reprolab.results import entity_metrics
from reprolab.results.crf_baseline import CrfTagger

PROJECT = ROOT / "examples/ner"


def clean_sentences(split: str) -> dict[str, list]:
    return storage.read_parquet(PROJECT / paths.clean_split(split), ["id", "tokens", "tags"]).to_pydict()


def hf_tokenize_and_align(tokenizer, max_length: int, tag_id: dict[str, int]):
    """run_ner_no_trainer.py's function (label_all_tokens off), for `datasets.map(batched=True)`."""

    def tokenize_and_align_labels(examples):
        tokenized = tokenizer(examples["tokens"], max_length=max_length, truncation=True, is_split_into_words=True)
        labels = []
        for i, tags in enumerate(examples["tags"]):
            previous, label_ids = None, []
            for word in tokenized.word_ids(batch_index=i):
                label_ids.append(-100 if word is None or word == previous else tag_id[tags[word]])
                previous = word
            labels.append(label_ids)
        tokenized["labels"] = labels
        return tokenized

    return tokenize_and_align_labels


def align_figures(params, sentences: int, repeats: int) -> dict:
    from datasets import Dataset, disable_caching, disable_progress_bars

    disable_progress_bars()
    disable_caching()
    rows = {k: [] for k in ("id", "tokens", "tags")}
    for split in paths.SPLITS:
        for key, values in clean_sentences(split).items():
            rows[key] += values
    copies = sentences // len(rows["id"]) + 1
    words = (rows["tokens"] * copies)[:sentences]
    tags = (rows["tags"] * copies)[:sentences]
    ids = [(str(i), str(i)) for i in range(sentences)]
    names = tag_schemes.tag_names(params.ingest.class_names)
    tag_id = {name: i for i, name in enumerate(names)}
    tag_ids = [[tag_id[t] for t in sentence] for sentence in tags]
    tokenizer = encoder.load_tokenizer(str(PROJECT / params.model.name_or_path))
    p, batch = params.tokenize, params.tokenize.batch_size

    def reprolab():
        for start in range(0, sentences, batch):
            end = start + batch
            word_alignment.windows_table(tokenizer, ids[start:end], words[start:end], tag_ids[start:end], p, names)

    dataset = Dataset.from_dict({"tokens": words, "tags": tags})
    recipe = hf_tokenize_and_align(tokenizer, p.max_length, tag_id)

    def hugging_face():
        dataset.map(recipe, batched=True, batch_size=batch, keep_in_memory=True, remove_columns=["tokens", "tags"])

    seconds = {"reprolab": [], "hugging_face": []}
    for _ in range(repeats):  # alternating, so drift on a shared machine hits both sides alike
        for side, work in (("reprolab", reprolab), ("hugging_face", hugging_face)):
            start = time.perf_counter()
            work()
            seconds[side].append(time.perf_counter() - start)
    ratios = [hf / ours for ours, hf in zip(seconds["reprolab"], seconds["hugging_face"], strict=True)]
    longer = sum(len(ids) > p.max_length for ids in tokenizer(words, is_split_into_words=True)["input_ids"])
    return {
        "sentences": sentences,
        "max_length": p.max_length,
        "batch": batch,
        "sentences_per_second": {
            side: round(sentences / statistics.median(values)) for side, values in seconds.items()
        },
        "ratio_vs_hugging_face_median_of_pairs": round(statistics.median(ratios), 2),
        "per_pair_ratios": [round(r, 2) for r in ratios],
        "target": 1.5,
        "sentences_longer_than_max_length": longer,
    }


def case_folding_figures(params) -> dict:
    train, test = clean_sentences("train"), clean_sentences("test")
    crf = params.evaluate.crf
    scores = {}
    for name, fold in (("as_written", lambda w: w), ("lower_cased", str.lower)):
        tagger = CrfTagger(
            [[fold(w) for w in s] for s in train["tokens"]], train["tags"], crf.c1, crf.c2, crf.max_iterations
        )
        predicted = [tagger.tag([fold(w) for w in s]) for s in test["tokens"]]
        scores[name] = round(entity_metrics.entity_f1(test["tags"], predicted), 4)
    return {"crf_test_entity_micro_f1": scores, "cost": round(scores["as_written"] - scores["lower_cased"], 4)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sentences", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    params = load_params(PROJECT / "params.yaml", check_paths=False)
    save(
        "ner",
        {
            "tokenize_and_align": align_figures(params, args.sentences, args.repeats),
            "case_folding": case_folding_figures(params),
        },
    )


if __name__ == "__main__":
    main()
