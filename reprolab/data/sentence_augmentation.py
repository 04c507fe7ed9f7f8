"""Label-preserving copies of tagged sentences (Dai & Adel 2020, "An Analysis of Simple Data
Augmentation for Named Entity Recognition"):

- synonym replacement: an `O` word becomes one of its WordNet synonyms (a synonym of several words
  becomes as many `O` words);
- mention replacement: an entity mention becomes another mention of the same type from the training
  split, its tags B- then I- for the new length;
- shuffle within segments: the words of a mention, or of a run of `O` words, change places; the tags
  stay where they were, so the entities keep their types and extents.

Each copy applies one operation, each unit (word, mention, segment) with probability `rate`, drawn
from its own RNG seeded by (seed, sentence id, copy), as the text augmentation seeds its copies. The
tags of every copy are valid IOB2; a copy equal to its sentence is not kept. `augment_file` copies
the selected training sentences (a seeded coin per sentence, as for texts), a batch at a time on
the engine (reprolab.engines), and writes them as windows, as tokenize writes the splits.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from reprolab import storage
from reprolab.data.augmentation import BATCH_ROWS, copy_rng, selected, synonyms
from reprolab.data.tag_schemes import OUTSIDE, tag_names
from reprolab.encoding import encoder, word_alignment
from reprolab.engines import Engine
from reprolab.params import AugmentParams, Params, TokenizeParams

Sentence = tuple[list[str], list[str]]  # words, IOB2 tags


def segments(tags: list[str]) -> list[tuple[int, int, str | None]]:
    """(start, end, entity type) of each mention, and (start, end, None) of each run of O words."""
    out: list[tuple[int, int, str | None]] = []
    for position, tag in enumerate(tags):
        kind = None if tag == OUTSIDE else tag[2:]
        if out and tag[:1] != "B" and out[-1][2] == kind:
            out[-1] = (out[-1][0], position + 1, kind)
        else:
            out.append((position, position + 1, kind))
    return out


def mentions_by_type(sentences: Iterable[Sentence]) -> dict[str, list[tuple[str, ...]]]:
    """Every distinct mention of the training split, by type, sorted (so the draws are reproducible)."""
    found: dict[str, set[tuple[str, ...]]] = {}
    for words, tags in sentences:
        for start, end, kind in segments(tags):
            if kind is not None:
                found.setdefault(kind, set()).add(tuple(words[start:end]))
    return {kind: sorted(mentions) for kind, mentions in sorted(found.items())}


def synonym_replacement(words: list[str], tags: list[str], rate: float, rng: random.Random) -> Sentence:
    out_words, out_tags = [], []
    for word, tag in zip(words, tags, strict=True):
        choices = synonyms(word.lower()) if tag == OUTSIDE else ()
        if choices and rng.random() < rate:
            replacement = rng.choice(choices).split()
            out_words += replacement
            out_tags += [OUTSIDE] * len(replacement)
        else:
            out_words.append(word)
            out_tags.append(tag)
    return out_words, out_tags


def mention_replacement(
    words: list[str], tags: list[str], rate: float, rng: random.Random, mentions: dict[str, list[tuple[str, ...]]]
) -> Sentence:
    out_words, out_tags = [], []
    for start, end, kind in segments(tags):
        if kind is not None and mentions.get(kind) and rng.random() < rate:
            replacement = list(rng.choice(mentions[kind]))
            out_words += replacement
            out_tags += [f"B-{kind}", *[f"I-{kind}"] * (len(replacement) - 1)]
        else:
            out_words += words[start:end]
            out_tags += tags[start:end]
    return out_words, out_tags


def shuffle_within_segments(words: list[str], tags: list[str], rate: float, rng: random.Random) -> Sentence:
    out = list(words)
    for start, end, _ in segments(tags):
        if end - start > 1 and rng.random() < rate:
            piece = out[start:end]
            rng.shuffle(piece)
            out[start:end] = piece
    return out, list(tags)


def augment_sentence(
    sentence_id: str,
    words: list[str],
    tags: list[str],
    seed: int,
    copies: int,
    rates: dict[str, float],
    mentions: dict[str, list[tuple[str, ...]]],
) -> list[Sentence]:
    """Up to `copies` copies, one operation each among those of `rates` above 0 (by name:
    synonym_replacement, mention_replacement, shuffle_within_segments)."""
    ops: dict[str, Callable[[list[str], list[str], float, random.Random], Sentence]] = {
        "synonym_replacement": synonym_replacement,
        "mention_replacement": lambda w, t, r, g: mention_replacement(w, t, r, g, mentions),
        "shuffle_within_segments": shuffle_within_segments,
    }
    unknown = sorted(set(rates) - set(ops))
    if unknown:
        raise ValueError(f"unknown sentence augmentation(s) {unknown}: one of {sorted(ops)}")
    enabled = [name for name in ops if rates.get(name, 0) > 0]
    out = []
    for copy in range(copies if enabled else 0):
        rng = copy_rng(seed, sentence_id, copy)
        name = enabled[rng.randrange(len(enabled))]
        new = ops[name](words, tags, rates[name], rng)
        if new != (words, tags):
            out.append(new)
    return out


RATES = ("synonym_replacement", "mention_replacement", "shuffle_within_segments")


@dataclass(frozen=True)
class SentenceCopyBatch:
    """A batch of training sentences -> the windows of their copies (None: no copies): pure, so batches
    can run on any worker."""

    p: AugmentParams
    tokenize: TokenizeParams
    rates: dict[str, float]
    mentions: dict[str, list[tuple[str, ...]]]
    names: list[str]
    schema: pa.Schema
    tokenizer: Any

    def __call__(self, batch: pa.RecordBatch) -> pa.Table | None:
        tag_id = {name: i for i, name in enumerate(self.names)}
        ids, words, tags = [], [], []
        for row in batch.to_pylist():
            if not selected(row["id"], self.p):
                continue
            copies = augment_sentence(
                row["id"], row["tokens"], row["tags"], self.p.seed, self.p.copies_per_example, self.rates, self.mentions
            )
            for number, (copy_words, copy_tags) in enumerate(copies):
                ids.append((f"{row['id']}#aug{number}", row["id"]))
                words.append(copy_words)
                tags.append([tag_id[tag] for tag in copy_tags])
        if not ids:
            return None
        return word_alignment.windows_table(self.tokenizer, ids, words, tags, self.tokenize, self.names, self.schema)


def augment_file(source: Path, dest: Path, params: Params, types: list[str], engine: Engine) -> int:
    """The copies of a clean training split's selected sentences -> windows with their `origin_id`
    (WINDOW_SCHEMA and `origin_id`), ids `<origin>#aug<k>`, tag ids over the entity `types`
    (`tag_schemes.tag_names`); the rows written. Two passes: the split's mentions by type, then the
    copies, their batches on the `engine`."""
    p = params.augment
    schema = word_alignment.WINDOW_SCHEMA.append(pa.field("origin_id", pa.string()))
    columns = ["id", "tokens", "tags"]
    rates = {name: getattr(p, name) for name in RATES}
    with storage.parquet_sink(dest, schema) as sink:
        if not p.enabled or not any(rate > 0 for rate in rates.values()):
            return sink.rows
        mentions = {}
        if p.mention_replacement > 0:
            mentions = mentions_by_type(
                (words, tags)
                for batch in storage.iter_batches(source, columns, BATCH_ROWS)
                for words, tags in zip(
                    batch.column("tokens").to_pylist(), batch.column("tags").to_pylist(), strict=True
                )
            )
        copies = SentenceCopyBatch(
            p,
            params.tokenize,
            rates,
            mentions,
            tag_names(types),
            schema,
            encoder.load_tokenizer(params.model.name_or_path),
        )
        batches = storage.iter_batches(source, columns, BATCH_ROWS)
        for table in engine.map(copies, batches):
            if table is not None:
                sink.write(table)
    return sink.rows
