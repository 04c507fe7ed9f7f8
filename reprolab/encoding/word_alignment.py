"""Words to sub-words with their tags aligned, for token classification (`word_ids()` alignment, as
Hugging Face's `run_ner_no_trainer.py` does it), in windows so that every word is scored exactly once.

A sentence's words are encoded with `is_split_into_words` (no special tokens), in batches by the
fast tokenizer. A tag goes on each word's first sub-token; its other sub-tokens get -100 (ignored by
the loss), or, with `label_subtokens="all"`, the word's tag with B- made I- (HF's `label_all_tokens`).
A sentence longer than `max_length` with its special tokens is cut into windows at word boundaries:
each window scores a run of words, the ones after the previous window's, and carries up to `stride`
sub-tokens of the words before them as context (labelled -100), so every word is scored in exactly one
window with some left context. A word of more sub-tokens than a window holds keeps its first ones.
`word_index` says, per position, which word of the sentence that position scores (-1 for none):
evaluation and prediction read per-word tags from it, never per sub-token.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from reprolab import storage
from reprolab.data import tag_schemes
from reprolab.encoding.labels import IGNORED
from reprolab.engines import IN_PROCESS, Engine
from reprolab.params import TokenizeParams

WINDOW_SCHEMA = pa.schema(
    [
        ("id", pa.string()),  # the sentence
        ("window", pa.int32()),  # its window, from 0
        ("input_ids", pa.list_(pa.int32())),
        ("labels", pa.list_(pa.int32())),  # tag ids, IGNORED where nothing is scored
        ("word_index", pa.list_(pa.int32())),  # the sentence's word scored at each position, else -1
    ]
)


@dataclass(frozen=True)
class Window:
    input_ids: list[int]
    labels: list[int]
    word_index: list[int]


def word_spans(word_ids: list[int | None], words: int, budget: int) -> list[tuple[int, int]]:
    """(start, end) sub-token positions of each word, a word's run cut to `budget` sub-tokens."""
    spans = [[-1, -1] for _ in range(words)]
    for position, word in enumerate(word_ids):
        if word is None:
            continue
        if spans[word][0] < 0:
            spans[word] = [position, position + 1]
        elif position - spans[word][0] < budget:
            spans[word][1] = position + 1
    return [(start, end) for start, end in spans]


def plan_windows(lengths: list[int], budget: int, stride: int) -> list[tuple[int, int, int]]:
    """(first context word, first scored word, end) of each window over words of `lengths` sub-tokens
    (each at most `budget`): the scored runs partition the words; a window after the first keeps
    `stride` sub-tokens of room for the words before its run (at least one word is scored), and fills
    it with as many of them as fit."""
    windows, scored = [], 0
    while scored < len(lengths):
        limit = budget if scored == 0 else max(budget - stride, 1)
        end, used = scored, 0
        while end < len(lengths) and (end == scored or used + lengths[end] <= limit):
            used += lengths[end]
            end += 1
        context_start, room = scored, min(stride, budget - used)
        while context_start > 0 and lengths[context_start - 1] <= room:
            context_start -= 1
            room -= lengths[context_start]
        windows.append((context_start, scored, end))
        scored = end
    return windows


def align_sentence(
    ids: list[int],
    word_ids: list[int | None],
    tags: list[int],
    budget: int,
    stride: int,
    continuation_tag: list[int] | None,
) -> list[tuple[list[int], list[int], list[int]]]:
    """(content ids, labels, word_index) of each window of one sentence, before special tokens.
    `continuation_tag[t]`: the tag a word's later sub-tokens get (None: IGNORED)."""
    spans = word_spans(word_ids, len(tags), budget)
    windows = []
    for context_start, scored, end in plan_windows([b - a for a, b in spans], budget, stride):
        content, labels, index = [], [], []
        for word in range(context_start, end):
            start, stop = spans[word]
            for position in range(start, stop):
                content.append(ids[position])
                first = position == start
                if word < scored:  # context: not scored here
                    labels.append(IGNORED)
                elif first:
                    labels.append(tags[word])
                else:
                    labels.append(IGNORED if continuation_tag is None else continuation_tag[tags[word]])
                index.append(word if first and word >= scored else -1)
        windows.append((content, labels, index))
    return windows


def encoded_words(tokenizer, sentences: list[list[str]]) -> list[tuple[list[int], list[int | None]]]:
    """Each sentence's ids and word ids, special tokens included: what the tokenizer's own call with
    `is_split_into_words` gives (its Rust batch encoder, untruncated), without its per-row Python
    conversion into a BatchEncoding."""
    backend = tokenizer.backend_tokenizer
    backend.no_truncation()
    backend.no_padding()
    return [(e.ids, e.word_ids) for e in backend.encode_batch(sentences, is_pretokenized=True)]


def sentence_windows(
    tokenizer,
    words: list[str],
    ids: list[int],
    word_ids: list[int | None],
    tags: list[int],
    max_length: int,
    stride: int,
    continuation_tag: list[int] | None,
) -> list[Window]:
    """The windows of one encoded sentence, each inside the special tokens the tokenizer puts around a
    sequence."""
    if len({w for w in word_ids if w is not None}) < len(tags):  # a word with no sub-token
        ids, word_ids = _with_unknown_words(tokenizer, words, word_ids)
    content = [position for position, word in enumerate(word_ids) if word is not None]
    prefix, suffix = ids[: content[0]], ids[content[-1] + 1 :]  # the special tokens around a sequence
    budget = max_length - len(prefix) - len(suffix)
    if budget < 1:
        raise ValueError(f"max_length={max_length} leaves no room for a word beside the special tokens")
    inner = slice(content[0], content[-1] + 1)
    around = [IGNORED] * len(prefix), [IGNORED] * len(suffix)
    unscored = [-1] * len(prefix), [-1] * len(suffix)
    return [
        Window([*prefix, *window_ids, *suffix], [*around[0], *labels, *around[1]], [*unscored[0], *index, *unscored[1]])
        for window_ids, labels, index in align_sentence(
            ids[inner], word_ids[inner], tags, budget, stride, continuation_tag
        )
    ]


def encode_sentences(
    tokenizer,
    sentences: list[list[str]],
    tags: list[list[int]],
    max_length: int,
    stride: int,
    continuation_tag: list[int] | None = None,
) -> Iterator[tuple[int, int, Window]]:
    """(sentence index, window index, window) for every window of every sentence."""
    for sentence, (ids, word_ids) in enumerate(encoded_words(tokenizer, sentences)):
        windows = sentence_windows(
            tokenizer, sentences[sentence], ids, word_ids, tags[sentence], max_length, stride, continuation_tag
        )
        for number, window in enumerate(windows):
            yield sentence, number, window


def one_window_labels(
    encoded: list[tuple[list[int], list[int | None]]], tags: list[list[int]], continuation_tag: list[int] | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`sentence_windows` for sentences that fit one window, all at once: (ids, labels, word_index)
    of every position, sentence after sentence, the offsets of each sentence's positions, and whether
    each has a position for every word (those that do not need `sentence_windows`)."""
    lengths = np.fromiter((len(ids) for ids, _ in encoded), dtype=np.int64, count=len(encoded))
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    ids = np.fromiter(itertools.chain.from_iterable(i for i, _ in encoded), dtype=np.int64, count=int(offsets[-1]))
    word = np.fromiter(
        (-1 if w is None else w for _, word_ids in encoded for w in word_ids), dtype=np.int64, count=int(offsets[-1])
    )
    sentence = np.repeat(np.arange(len(encoded)), lengths)
    previous = np.concatenate([[-1], word[:-1]])
    previous[offsets[:-1]] = -1
    first = (word >= 0) & (word != previous)
    words = np.fromiter((len(t) for t in tags), dtype=np.int64, count=len(tags))
    tag_start = np.concatenate([[0], np.cumsum(words)])
    flat_tags = np.fromiter(itertools.chain.from_iterable(tags), dtype=np.int64, count=int(tag_start[-1]))
    complete = np.bincount(sentence[first], minlength=len(encoded)) == words
    inside = word >= 0
    safe = np.where(inside & complete[sentence], tag_start[sentence] + word, 0)
    tag = flat_tags[safe] if len(flat_tags) else np.zeros(len(word), dtype=np.int64)
    later = IGNORED if continuation_tag is None else np.asarray(continuation_tag, dtype=np.int64)[tag]
    labels = np.where(first, tag, np.where(inside, later, IGNORED))
    return ids, labels, np.where(first, word, -1), offsets, complete


def _with_unknown_words(tokenizer, words: list[str], word_ids: list[int | None]) -> tuple[list[int], list]:
    """The sentence encoded again with each word the tokenizer dropped (a lone combining accent, say)
    as the unknown token, so that it, too, has a position to be scored at."""
    present = set(word_ids)
    kept = [word if position in present else tokenizer.unk_token for position, word in enumerate(words)]
    again = tokenizer(kept, is_split_into_words=True)
    return again["input_ids"], again.word_ids()


def tokenize_splits(
    tokenizer,
    p: TokenizeParams,
    types: list[str],
    sources: dict[str, Path],
    dests: dict[str, Path],
    engine: Engine,
) -> dict[str, dict[str, int]]:
    """Each clean split's sentences -> windows (`tokenize_sentences`) with tag ids over the entity
    `types` (`tag_schemes.tag_names`, as the model's classes); its counts per split."""
    names = tag_schemes.tag_names(types)
    return {
        split: tokenize_sentences(source, dests[split], tokenizer, names, p, engine)
        for split, source in sources.items()
    }


def identity_settings(p: TokenizeParams) -> dict[str, Any]:
    """What else than the tokenizer and max_length the windows depend on."""
    return {"stride": p.stride, "label_subtokens": p.label_subtokens}


def windows_table(
    tokenizer,
    ids: list[tuple[str, str]],
    sentences: list[list[str]],
    tags: list[list[int]],
    p: TokenizeParams,
    names: list[str],
    schema: pa.Schema = WINDOW_SCHEMA,
) -> pa.Table:
    """The windows of sentences (`ids`: each one's id and, for an augmented copy, its origin's) as a
    table of `schema` (WINDOW_SCHEMA, and `origin_id` where the schema has it). The sentences that fit
    one window (most) are aligned together in numpy (`one_window_labels`), the rest one by one."""
    continuation = tag_schemes.continuation_ids(names) if p.label_subtokens == "all" else None
    encoded = encoded_words(tokenizer, sentences)
    flat_ids, flat_labels, flat_index, offsets, complete = one_window_labels(encoded, tags, continuation)
    rows: dict[str, list] = {name: [] for name in ("sentence", "window", "input_ids", "labels", "word_index")}
    for sentence, (sentence_ids, word_ids) in enumerate(encoded):
        if len(sentence_ids) <= p.max_length and complete[sentence]:
            where = slice(offsets[sentence], offsets[sentence + 1])
            windows = [(flat_ids[where], flat_labels[where], flat_index[where])]
        else:
            windows = [
                (np.asarray(w.input_ids), np.asarray(w.labels), np.asarray(w.word_index))
                for w in sentence_windows(
                    tokenizer,
                    sentences[sentence],
                    sentence_ids,
                    word_ids,
                    tags[sentence],
                    p.max_length,
                    p.stride,
                    continuation,
                )
            ]
        for number, (window_ids, labels, index) in enumerate(windows):
            for name, value in zip(rows, (sentence, number, window_ids, labels, index), strict=True):
                rows[name].append(value)
    columns = {
        "id": pa.array([ids[s][0] for s in rows["sentence"]], pa.string()),
        "window": pa.array(rows["window"], pa.int32()),
        **{name: _int32_lists(rows[name]) for name in ("input_ids", "labels", "word_index")},
    }
    if "origin_id" in schema.names:
        columns["origin_id"] = pa.array([ids[s][1] for s in rows["sentence"]], pa.string())
    return pa.table(columns, schema=schema)


def _int32_lists(pieces: list[np.ndarray]) -> pa.Array:
    lengths = np.fromiter((len(piece) for piece in pieces), dtype=np.int64, count=len(pieces))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    values = np.concatenate(pieces).astype(np.int32) if pieces else np.zeros(0, dtype=np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))


@dataclass(frozen=True)
class WindowBatch:
    """A batch of clean sentences -> (their windows, counts): pure, so batches can run on any worker."""

    tokenizer: Any
    names: list[str]
    p: TokenizeParams

    def __call__(self, batch: pa.RecordBatch) -> tuple[pa.Table, dict[str, int]]:
        rows = batch.to_pydict()
        tag_id = {name: i for i, name in enumerate(self.names)}
        tags = [[tag_id[tag] for tag in sentence] for sentence in rows["tags"]]
        table = windows_table(self.tokenizer, [(i, i) for i in rows["id"]], rows["tokens"], tags, self.p, self.names)
        return table, {"sentences": len(rows["id"]), "words": sum(map(len, rows["tokens"])), "windows": table.num_rows}


def tokenize_sentences(
    source: Path, dest: Path, tokenizer, names: list[str], p: TokenizeParams, engine: Engine = IN_PROCESS
) -> dict[str, int]:
    """A clean split's sentences (`id`, `tokens`, `tags`) -> windows (WINDOW_SCHEMA), `p.batch_size`
    sentences a batch, the batches on the `engine`. Returns the counts: sentences, words, windows."""
    counts: Counter[str] = Counter({"sentences": 0, "words": 0, "windows": 0})
    batches = storage.iter_batches(source, ["id", "tokens", "tags"], p.batch_size)
    with storage.parquet_sink(dest, WINDOW_SCHEMA) as sink:
        for table, batch_counts in engine.map(WindowBatch(tokenizer, names, p), batches):
            sink.write(table)
            counts.update(batch_counts)
        storage.check_every_row_came_back(source, counts["sentences"], dest)  # every batch's sentences came back
    return dict(counts)


def words_of(ids: list[str], word_index: list[np.ndarray], values: np.ndarray) -> tuple[list[str], list[np.ndarray]]:
    """Windows back to sentences: each sentence's id (in the order its first window comes) and the rows
    of `values` at the positions that score its words, in word order. `values` holds a row per
    position of the windows, one window after another (`runtime.batched_logits`'s flattened rows, or
    the windows' labels concatenated). Raises ValueError unless every word is scored exactly once."""
    if not ids:
        return [], []
    codes: dict[str, int] = {}
    window_code = np.fromiter((codes.setdefault(i, len(codes)) for i in ids), dtype=np.int64, count=len(ids))
    lengths = np.fromiter((len(w) for w in word_index), dtype=np.int64, count=len(word_index))
    flat_word = np.concatenate(word_index).astype(np.int64)
    if len(flat_word) != len(values):
        raise ValueError(f"{len(values)} rows of values for {len(flat_word)} positions")
    scored = np.flatnonzero(flat_word >= 0)
    sentence, word = np.repeat(window_code, lengths)[scored], flat_word[scored]
    order = np.lexsort((word, sentence))
    sentence, word, scored = sentence[order], word[order], scored[order]
    bounds = np.flatnonzero(np.diff(sentence)) + 1
    starts = np.concatenate([[0], bounds])
    expected = np.arange(len(word)) - np.repeat(starts, np.diff(np.concatenate([starts, [len(word)]])))
    if len(np.unique(sentence)) != len(codes) or not np.array_equal(word, expected):
        raise ValueError("the windows do not score every word of each sentence exactly once")
    return list(codes), np.split(values[scored], bounds)
