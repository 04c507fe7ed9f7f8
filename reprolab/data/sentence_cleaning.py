"""Tagged sentences cleaned and split (token classification's clean stage).

Each word is normalised as clean normalises a text (`cleaning.normalise`), word by word, so the count
of words, and their tags, never change: a word that normalises to nothing rejects its sentence
(`empty_token`), never shortens it. Sentences of the same normalised words are one sentence: with the
same tags, the later copies are `duplicate` rejects; with different tags, every copy is a
`conflicting_labels` reject (which tags are right cannot be told).

The split keeps each group whole (a CoNLL document; a sentence where none are known), so no document's
sentences straddle two splits, and is stratified by the entity types the groups hold (iterative
stratification, Sechidis et al. 2011): each group in turn, rarest types first, goes to the split whose
share of those types' entities lags its target most. Before that, every type gets a group in val and
in test (a type in fewer than three groups is an error: it cannot be in all three splits). The order
of groups is a seeded hash of their names, so the split depends on the data and the seed only.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa

from reprolab import paths, storage
from reprolab.data.cleaning import BATCH_ROWS, CleanError, normalise
from reprolab.data.sentences import sentence_json
from reprolab.data.tag_schemes import mention_types
from reprolab.engines import Engine
from reprolab.params import CleanParams, SplitParams

CLEAN_SENTENCE_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("group", pa.string()),
        ("tokens", pa.list_(pa.string())),
        ("tags", pa.list_(pa.string())),
        ("replacements", pa.int32()),  # words that normalisation changed
    ]
)


def clean_words(tokens: list[str]) -> tuple[list[str], int] | tuple[None, tuple[str, str]]:
    """(normalised words, how many changed), or (None, (reason, detail)) for a word left empty."""
    words = [normalise(token) for token in tokens]
    for position, word in enumerate(words):
        if not word:
            return None, ("empty_token", f"word {position + 1} ({tokens[position]!r}) is empty once normalised")
    return words, sum(word != token for word, token in zip(words, tokens, strict=True))


def assign_group_splits(groups: dict[str, Counter], sizes: dict[str, int], p: SplitParams) -> dict[str, str]:
    """group -> split. `groups`: each group's entity counts by type; `sizes`: its sentences."""
    order = sorted(groups, key=lambda group: hashlib.sha256(f"{p.seed}:{group}".encode()).digest())
    totals: Counter = sum(groups.values(), Counter())
    fractions = {"val": p.val_fraction, "test": p.test_fraction}
    fractions["train"] = 1 - fractions["val"] - fractions["test"]
    holding = {kind: [g for g in order if groups[g][kind]] for kind in totals}
    few = sorted(kind for kind, where in holding.items() if len(where) < len(paths.SPLITS))
    if few:
        raise CleanError(
            f"entity type(s) {few} occur in fewer than {len(paths.SPLITS)} groups (documents, or sentences "
            f"where none are known) after cleaning: too few for one in each of {', '.join(paths.SPLITS)}; "
            "add examples of them or drop them from ingest.labels"
        )
    split_of: dict[str, str] = {}
    held = {split: Counter() for split in paths.SPLITS}
    sentences = Counter()

    def place(group: str, split: str) -> None:
        split_of[group] = split
        held[split].update(groups[group])
        sentences[split] += sizes[group]

    rarest_first = sorted(totals, key=lambda kind: (totals[kind], kind))
    for kind in rarest_first:  # every type in val and test, from the first groups that hold it
        for split in ("val", "test"):
            if not held[split][kind]:
                place(next(g for g in holding[kind] if g not in split_of), split)
    total_sentences = sum(sizes.values())
    for group in order:
        if group in split_of:
            continue
        kinds = sorted(groups[group], key=lambda kind: (totals[kind], kind))
        if kinds:  # the rarest type it holds decides, then the next
            kind = kinds[0]
            lag = {split: fractions[split] * totals[kind] - held[split][kind] for split in paths.SPLITS}
        else:  # no entity: by sentences
            lag = {split: fractions[split] * total_sentences - sentences[split] for split in paths.SPLITS}
        place(group, max(paths.SPLITS, key=lambda split: (lag[split], split == "train")))
    return split_of


def _digest(items: list[str]) -> bytes:
    return hashlib.blake2b("\x1f".join(items).encode("utf-8", "surrogatepass"), digest_size=16).digest()


def _reject(row: dict, reason: str, detail: str) -> dict:
    raw = sentence_json(row["tokens"], row["tags"])
    return {"id": row["id"], "source": row["id"], "reason": reason, "detail": detail, "label": None, "raw": raw}


def fingerprint_sentences(batch: pa.RecordBatch) -> list[tuple]:
    """Pass 1 of a batch of raw sentences, pure, so batches can run on any worker: per sentence, the
    digest of its normalised words (None where they are rejected) or its problem, the digest of its
    tags, its group, its entity types and the split its source gave."""
    out = []
    for row in batch.to_pylist():
        words, result = clean_words(row["tokens"])
        out.append(
            (
                None if words is None else _digest(words),
                result if words is None else None,
                _digest(row["tags"]),
                row["group"],
                tuple(mention_types(row["tags"])),
                row["split"],
            )
        )
    return out


def clean_sentences(
    raw: Path, dests: dict[str, Path], rejects_dest: Path, p: CleanParams, engine: Engine
) -> dict[str, Any]:
    """raw sentences -> train/val/test (CLEAN_SENTENCE_SCHEMA) and the rejects, in two streamed passes
    (memory: a few batches, and a few digests and counts per sentence), pass 1 on the `engine`, split
    by `p.split`; returns the report."""
    # Pass 1: each sentence's verdict inputs: digests of its normalised words and of its tags, its
    # group, its entity types, the split its source gave.
    words_of: dict[bytes, int] = {}  # words digest -> the first sentence holding them
    tags_of: list[bytes] = []
    problem: dict[int, tuple[str, str]] = {}
    twins: dict[int, list[int]] = {}  # first sentence -> the later ones with the same words
    groups: list[str] = []
    kinds: list[tuple[str, ...]] = []
    given: list[str | None] = []
    batches = storage.iter_batches(raw, None, BATCH_ROWS)
    for fingerprints in engine.map(fingerprint_sentences, batches):
        for words_digest, result, tags_digest, group, types, split in fingerprints:
            index = len(tags_of)
            tags_of.append(tags_digest)
            groups.append(group)
            kinds.append(types)
            given.append(split)
            if words_digest is None:
                problem[index] = result
                continue
            first = words_of.setdefault(words_digest, index)
            if first != index:
                twins.setdefault(first, []).append(index)
    for first, later in twins.items():
        if any(tags_of[i] != tags_of[first] for i in later):
            for i in (first, *later):
                problem[i] = (
                    "conflicting_labels",
                    f"{len(later)} other sentence(s) have the same words and other tags",
                )
        else:
            for i in later:
                problem[i] = ("duplicate", f"the same words and tags as sentence {first + 1} of the raw rows")
    kept = [i for i in range(len(tags_of)) if i not in problem]
    if not kept:
        raise CleanError(
            f"no sentence kept of {len(tags_of)}: {Counter(r for r, _ in problem.values()).most_common(3)}"
        )
    if any(given[i] is not None for i in kept):  # the source's own split column
        split_of = [given[i] for i in range(len(given))]
    else:
        counts: dict[str, Counter] = {}
        sizes: Counter = Counter()
        for i in kept:
            counts.setdefault(groups[i], Counter()).update(kinds[i])
            sizes[groups[i]] += 1
        by_group = assign_group_splits(counts, sizes, p.split)
        split_of = [by_group.get(group) for group in groups]
    # Pass 2: the same rows again, each to its split or to the rejects.
    report = {split: {"rows": 0, "entities_by_type": Counter()} for split in paths.SPLITS}
    with contextlib.ExitStack() as stack:
        sinks = {
            split: stack.enter_context(storage.parquet_sink(dests[split], CLEAN_SENTENCE_SCHEMA))
            for split in paths.SPLITS
        }
        rejects_sink = stack.enter_context(storage.parquet_sink(rejects_dest, storage.REJECT_SCHEMA))
        index = 0
        for batch in storage.iter_batches(raw, None, BATCH_ROWS):
            out: dict[str, list[dict]] = {split: [] for split in paths.SPLITS}
            refused = []
            for row in batch.to_pylist():
                if index in problem:
                    refused.append(_reject(row, *problem[index]))
                else:
                    words, replaced = clean_words(row["tokens"])
                    split = split_of[index]
                    out[split].append(
                        {
                            "id": row["id"],
                            "group": row["group"],
                            "tokens": words,
                            "tags": row["tags"],
                            "replacements": replaced,
                        }
                    )
                    report[split]["rows"] += 1
                    report[split]["entities_by_type"].update(kinds[index])
                index += 1
            for split, rows in out.items():
                if rows:
                    sinks[split].write(pa.Table.from_pylist(rows, schema=CLEAN_SENTENCE_SCHEMA))
            if refused:
                rejects_sink.write(storage.rejects_table(refused, "clean"))
    reasons = Counter(reason for reason, _ in problem.values())
    return {
        "rows_in": len(tags_of),
        "rows_kept": len(kept),
        "rows_rejected": len(problem),
        "rejected_by_reason": dict(sorted(reasons.items())),
        "splits": {
            split: {"rows": r["rows"], "entities_by_type": dict(sorted(r["entities_by_type"].items()))}
            for split, r in report.items()
        },
        "splits_from": "the source's split column" if any(given[i] is not None for i in kept) else "clean.split",
    }
