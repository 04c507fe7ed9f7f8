"""Cleaning: raw rows -> normalised text, deduplicated, split train/val/test without leaks.

Mail is parsed with the standard library's `email` package (MIME, transfer encodings, charsets);
HTML-only bodies become text through selectolax. Exact duplicates (after normalisation) and near
duplicates (MinHash LSH over word shingles) are rejected, keeping the first by id, so no text or
its near twin can sit on both sides of a split; identical texts with different labels are all
rejected (`conflicting_labels`), as no one label is right for them. Every class must keep rows in
train, val and test, or the stage stops naming the class and its counts. The split is stratified
by label and seeded by a hash of each id, so adding a row never moves the others.

It streams, so memory holds a batch, one row group per output and a few numbers per row,
never the corpus's text:
1. pass 1 cleans and fingerprints batches of raw rows on the engine's workers (reprolab.engines: this
   machine's cores or a Ray cluster): SHA-1 of the casefolded text, MinHash signature, LSH band
   hashes; texts and row-level rejects spill to a scratch Parquet file,
   signatures to a scratch file read back only for rows that share a key with another;
2. duplicates are decided from the fingerprints in id order, whatever the input's order, by
   components of rows sharing a key, on the engine (reprolab.data.duplicates);
3. splits are assigned from the kept rows' ids and labels, and pass 2 writes every row to its split
   or to the rejects, in the raw file's order (ingest writes the source's order).
"""

from __future__ import annotations

import contextlib
import email
import email.errors
import email.header
import email.policy
import hashlib
import re
import tempfile
import unicodedata
from collections import Counter
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from datasketch import MinHash, MinHashLSH
from selectolax.lexbor import LexborHTMLParser
from tqdm import tqdm

from reprolab import paths, storage
from reprolab.data import duplicates
from reprolab.data.duplicates import CONFLICTING_LABELS, EXACT_DUPLICATE, NEAR_DUPLICATE
from reprolab.engines import Engine
from reprolab.errors import StageError
from reprolab.params import CleanParams, SplitParams

# replacements: U+FFFD characters in the text, where a mail part's bytes did not decode in its charset.
SPLIT_SCHEMA = pa.schema(
    [("id", pa.string()), ("label", pa.string()), ("text", pa.string()), ("replacements", pa.int32())]
)
# Pass 1's output per raw row: the clean text, or the reason the row was rejected.
SPILL_SCHEMA = pa.schema(
    [("text", pa.string()), ("reason", pa.string()), ("detail", pa.string()), ("replacements", pa.int32())]
)
BATCH_ROWS = 1024

# Zero-width and other format characters that survive NFKC but carry no text.
_INVISIBLE = re.compile(r"[\u200b-\u200f\u2028\u2029\u202a-\u202e\u2060-\u2064\ufeff\u00ad]")
_WHITESPACE = re.compile(r"\s+")
_WORD = re.compile(r"\w+")


def normalise(text: str) -> str:
    """NFKC, control and invisible characters removed, whitespace runs folded to one space."""
    text = unicodedata.normalize("NFKC", text)
    text = _INVISIBLE.sub("", text)
    text = "".join(ch if ch.isprintable() or ch.isspace() else " " for ch in text)
    return _WHITESPACE.sub(" ", text).strip()


def html_to_text(html: str) -> str:
    tree = LexborHTMLParser(html)
    tree.strip_tags(["script", "style", "head", "noscript"])
    node = tree.body or tree.root
    return node.text(separator=" ") if node is not None else ""


def _decode_part(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if payload is None:
        payload = str(part.get_payload()).encode("utf-8", "replace")
    charset = part.get_content_charset() or "us-ascii"
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:  # an unknown or misspelt charset name: Latin-1 never fails
        return payload.decode("latin-1")


def mail_to_text(raw: bytes) -> str:
    """Subject plus the readable body of a raw RFC 822 message (plain text preferred to HTML)."""
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    subject = message.get("Subject", "")
    try:
        subject = str(email.header.make_header(email.header.decode_header(subject)))
    except (LookupError, UnicodeError, email.errors.HeaderParseError):
        subject = str(subject)  # an undecodable encoded-word: keep it as written
    plain: list[str] = []
    html: list[str] = []
    for part in message.walk():
        if part.is_multipart() or part.get_content_maintype() != "text":
            continue
        if (part.get("Content-Disposition") or "").lower().startswith("attachment"):
            continue
        target = html if part.get_content_subtype() == "html" else plain
        target.append(_decode_part(part))
    body = " ".join(plain) if plain else " ".join(html_to_text(h) for h in html)
    return f"{subject}\n{body}"


def shingles(text: str, size: int) -> set[bytes]:
    words = _WORD.findall(text.casefold())
    if len(words) <= size:
        return {" ".join(words).encode()}
    return {" ".join(words[i : i + size]).encode() for i in range(len(words) - size + 1)}


def clean_text(row: dict, p: CleanParams) -> tuple[str | None, tuple[str, str] | None]:
    """(normalised text, None) for a usable raw row, or (None, (reason, detail)) for a reject."""
    if p.reject_checksum_mismatch and row["checksum_status"] == "mismatch":
        return None, ("checksum_mismatch", f"{row['source']}: bytes differ from the MD5 in its name")
    try:
        text = mail_to_text(row["raw"]) if row["kind"] == "mail" else row["raw"].decode("utf-8")
    except Exception as exc:  # noqa: BLE001 - any parser failure is a row-level reject
        return None, ("unparseable", f"{type(exc).__name__}: {exc}"[:300])
    text = normalise(text)[: p.max_chars].strip()
    if not text:
        return None, ("empty_text", "no text after MIME decoding and normalisation")
    if len(text) < p.min_chars:
        return None, ("too_short", f"{len(text)} chars < clean.min_chars={p.min_chars}")
    return text, None


@dataclass
class Fingerprints:
    """Pass 1's result for a batch of raw rows; rows without text get zero fingerprints."""

    texts: list[str | None]
    reasons: list[str | None]
    details: list[str | None]
    replacements: list[int]
    exact: np.ndarray  # (rows,) S20: SHA-1 of the casefolded text
    signatures: np.ndarray  # (rows, permutations) uint32: MinHash of the word shingles
    bands: np.ndarray  # (rows, LSH bands) uint64: hash of each band of the signature


class Fingerprinter:
    """Cleans and fingerprints batches of raw rows: pure, so batches can run on any core."""

    def __init__(self, p: CleanParams):
        self.p = p
        # datasketch's choice of bands for the threshold, which minimises missed and false pairs.
        self.band_ranges = MinHashLSH(threshold=p.near_duplicate_threshold, num_perm=p.minhash_permutations).hashranges
        # Built once: a MinHash draws its permutations afresh otherwise, which costs more than hashing a text.
        template = MinHash(num_perm=p.minhash_permutations, seed=1)
        self.minhash_args = {
            "num_perm": p.minhash_permutations,
            "seed": 1,
            "scheme": template.scheme,
            "permutations": template.permutations,
        }

    def signature(self, text: str) -> np.ndarray:
        minhash = MinHash(**self.minhash_args)
        minhash.update_batch(list(shingles(text, self.p.shingle_words)))
        return minhash.hashvalues.astype(np.uint32)

    def __call__(self, batch: pa.RecordBatch) -> Fingerprints:
        rows = batch.to_pylist()
        out = Fingerprints(
            [],
            [],
            [],
            [],
            np.zeros(len(rows), "S20"),
            np.zeros((len(rows), self.p.minhash_permutations), np.uint32),
            np.zeros((len(rows), len(self.band_ranges)), np.uint64),
        )
        for i, row in enumerate(rows):
            text, problem = clean_text(row, self.p)
            out.texts.append(text)
            out.reasons.append(problem and problem[0])
            out.details.append(problem and problem[1])
            out.replacements.append(text.count("\ufffd") if text else 0)
            if text is None:
                continue
            out.exact[i] = hashlib.sha1(text.casefold().encode()).digest()
            out.signatures[i] = signature = self.signature(text)
            out.bands[i] = [
                int.from_bytes(hashlib.blake2b(signature[start:end].tobytes(), digest_size=8).digest(), "little")
                for start, end in self.band_ranges
            ]
        return out


class CleanError(StageError):
    """The cleaned data cannot train and evaluate a classifier: the stage stops, naming why."""


def assign_splits(ids: pa.Array, labels: pa.Array, p: SplitParams) -> np.ndarray:
    """The split of each row (an index into paths.SPLITS): stratified by label, ranked within a label
    by a seeded hash of the id. Each class gets its fractions of val and test rounded, but at least
    one row each and one left for train; a class of fewer than three rows is a CleanError. Holds 32
    bytes of key per row, never the ids as Python objects."""
    keys = np.empty(len(ids), "S32")
    for start in range(0, len(ids), storage.ROW_GROUP_SIZE):
        chunk = ids.slice(start, storage.ROW_GROUP_SIZE).to_pylist()
        keys[start : start + len(chunk)] = [hashlib.sha256(f"{p.seed}:{row_id}".encode()).digest() for row_id in chunk]
    label_codes = pc.dictionary_encode(labels).indices.to_numpy(zero_copy_only=False)
    splits = np.full(len(ids), paths.SPLITS.index("train"), np.int8)
    names = pc.dictionary_encode(labels).dictionary.to_pylist()
    for code in np.unique(label_codes):
        rows = np.flatnonzero(label_codes == code)
        if len(rows) < len(paths.SPLITS):
            raise CleanError(
                f"class {names[code]!r} has {len(rows)} row(s) after cleaning: too few for one in "
                f"each of {', '.join(paths.SPLITS)}; add rows of it or drop it from ingest.labels"
            )
        ranked = rows[np.argsort(keys[rows])]
        n_test = max(1, round(len(ranked) * p.test_fraction))
        n_val = max(1, min(round(len(ranked) * p.val_fraction), len(ranked) - n_test - 1))
        splits[ranked[:n_test]] = paths.SPLITS.index("test")
        splits[ranked[n_test : n_test + n_val]] = paths.SPLITS.index("val")
    return splits


def fingerprint_all(
    raw: Path, rows: int, fingerprint: Fingerprinter, engine: Engine, spill: Path, signatures: Path
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pass 1: texts and row-level rejects to `spill`, signatures to `signatures` (row i at offset
    i * size); returns (eligible, exact, bands) for every row. Batches run on the `engine`."""
    batches = storage.iter_batches(raw, ["source", "kind", "raw", "checksum_status"], BATCH_ROWS)
    eligible, exact, bands = [], [], []
    progress = tqdm(total=rows, unit="rows", desc="clean: fingerprint", disable=None)
    with (
        storage.parquet_sink(spill, SPILL_SCHEMA) as sink,
        open(signatures, "wb") as signature_file,
    ):
        for result in engine.map(fingerprint, batches):
            sink.write(
                pa.table(
                    {
                        "text": result.texts,
                        "reason": result.reasons,
                        "detail": result.details,
                        "replacements": result.replacements,
                    },
                    schema=SPILL_SCHEMA,
                )
            )
            signature_file.write(result.signatures.tobytes())
            eligible.append(np.array([text is not None for text in result.texts], bool))
            exact.append(result.exact)
            bands.append(result.bands)
            progress.update(len(result.texts))
    progress.close()
    return np.concatenate(eligible), np.concatenate(exact), np.concatenate(bands)


def clean_file(
    raw: Path, split_paths: dict[str, Path], rejects_path: Path, p: CleanParams, engine: Engine
) -> dict[str, Any]:
    """raw.parquet -> split files and a rejects file, in the raw file's row order; returns the report.
    Pass 1 and the duplicate decisions run on the `engine`; the outputs do not depend on which or on
    its workers.

    Where ingest kept the source's own split (its `split` column), rows keep it: duplicates are judged
    in split order (train, val, test), then id, so of twins in two splits the later split's copy is
    rejected (`cross_split_duplicate`), and nothing is re-split."""
    ids_and_labels = storage.read_parquet(raw, ["id", "label", "split"])
    if not ids_and_labels.num_rows:
        raise CleanError(f"{raw}: no rows to clean; run ingest (dvc repro) and read its report")
    ids = ids_and_labels.column("id").combine_chunks()
    labels = ids_and_labels.column("label").combine_chunks()
    given = _given_splits(ids_and_labels.column("split").combine_chunks())
    order = pc.sort_indices(
        pa.table({"split": given if given is not None else np.zeros(len(ids), np.int8), "id": ids}),
        [("split", "ascending"), ("id", "ascending")],
    ).to_numpy()
    rank = np.empty(len(ids), np.int64)
    rank[order] = np.arange(len(ids))
    fingerprint = Fingerprinter(p)
    with tempfile.TemporaryDirectory(prefix="reprolab-clean-") as scratch:
        spill, signature_path = Path(scratch) / "texts.parquet", Path(scratch) / "signatures.u32"
        eligible, exact, bands = fingerprint_all(raw, len(ids), fingerprint, engine, spill, signature_path)
        signatures = np.memmap(signature_path, np.uint32, mode="r", shape=(len(ids), p.minhash_permutations))
        label_codes = pc.dictionary_encode(labels).indices.to_numpy(zero_copy_only=False)
        verdict, twin, similarity = duplicates.decide_duplicates(
            engine, rank, eligible, exact, bands, signatures, p.near_duplicate_threshold, label_codes
        )
        del exact, bands, signatures
        kept = np.flatnonzero(eligible & (verdict == 0))
        _check_classes(labels, kept, verdict, spill)
        split_of = np.full(len(ids), -1, np.int8)
        try:
            if given is None:
                split_of[kept] = assign_splits(ids.take(kept), labels.take(kept), p.split)
            else:
                split_of[kept] = given[kept]
                _check_given_splits(labels, split_of)
        except CleanError as exc:  # a class too small to split: say what cleaning took from it
            raise CleanError(f"{exc}; the commonest clean rejects: {_top_rejects(verdict, spill)}") from None
        summary = write_splits(raw, spill, split_paths, rejects_path, split_of, verdict, twin, similarity, ids, given)
        return {**summary, "splits_from": "source" if given is not None else "clean.split"}


def _given_splits(splits: pa.Array) -> np.ndarray | None:
    """The source's split of each row as an index into paths.SPLITS, or None where the source gave none."""
    if splits.null_count == len(splits):
        return None
    if splits.null_count:
        raise CleanError(f"{splits.null_count} rows have no split while others have one: run ingest again")
    codes = pc.index_in(splits, pa.array(paths.SPLITS))
    if codes.null_count:
        raise CleanError(f"split values other than {list(paths.SPLITS)} in the raw rows: run ingest again")
    return codes.to_numpy(zero_copy_only=False).astype(np.int8)


def _check_given_splits(labels: pa.Array, split_of: np.ndarray) -> None:
    """Every class keeps a row in each of the source's splits (a class absent from test cannot be scored)."""
    classes = set(labels.to_pylist())
    for code, name in enumerate(paths.SPLITS):
        present = set(labels.filter(pa.array(split_of == code)).to_pylist())
        if classes - present:
            raise CleanError(
                f"the source's {name} split keeps no row of class(es) {sorted(classes - present)} "
                f"after cleaning ({int((split_of == code).sum())} rows in it); move rows of them "
                f"there (ingest.split_column)"
            )


_VERDICTS = {
    EXACT_DUPLICATE: "exact_duplicate",
    NEAR_DUPLICATE: "near_duplicate",
    CONFLICTING_LABELS: "conflicting_labels",
}


def _check_classes(labels: pa.Array, kept: np.ndarray, verdict: np.ndarray, spill: Path) -> None:
    """Before any output is written: rows are left, of every class that came in."""
    left = Counter(labels.take(kept).to_pylist())
    came = set(labels.to_pylist())
    if left and set(left) == came:
        return
    raise CleanError(
        f"class(es) {sorted(came - set(left))} lost every row of {len(labels)} rows in "
        f"(left: {dict(left)}); the commonest clean rejects: {_top_rejects(verdict, spill)}"
    )


def _top_rejects(verdict: np.ndarray, spill: Path) -> str:
    """The three commonest reasons pass 1 and deduplication rejected rows for, with their counts."""
    reasons = Counter(reason for reason in pq.read_table(spill, columns=["reason"]).column(0).to_pylist() if reason)
    reasons.update(_VERDICTS[v] for v in verdict[verdict > 0].tolist())
    return ", ".join(f"{reason} x{n}" for reason, n in reasons.most_common(3)) or "none"


def write_splits(
    raw: Path,
    spill: Path,
    split_paths: dict[str, Path],
    rejects_path: Path,
    split_of: np.ndarray,
    verdict: np.ndarray,
    twin: np.ndarray,
    similarity: np.ndarray,
    ids: pa.Array,
    given: np.ndarray | None = None,
) -> dict[str, Any]:
    """Pass 2: every row to its split (`split_of`: index into paths.SPLITS, -1 for none) or, with its
    reason, to the rejects; returns the report. With the source's own splits (`given`), a duplicate
    of a row in another split is a `cross_split_duplicate`."""
    reasons: Counter[str] = Counter()
    split_labels: dict[str, Counter[str]] = {name: Counter() for name in split_paths}
    replacements = {"rows": 0, "characters": 0}  # kept rows whose text holds U+FFFD, and how many
    with contextlib.ExitStack() as stack:
        sinks = {
            name: stack.enter_context(storage.parquet_sink(path, SPLIT_SCHEMA)) for name, path in split_paths.items()
        }
        rejects = stack.enter_context(storage.parquet_sink(rejects_path, storage.REJECT_SCHEMA))
        start = 0
        for raw_rows, spilled in zip(
            storage.iter_tables(raw, ["id", "source", "label", "raw"], BATCH_ROWS),
            storage.iter_tables(spill, None, BATCH_ROWS),
            strict=True,
        ):
            # Columns move by Arrow filters; Python objects are made for rejected rows only.
            codes = split_of[start : start + raw_rows.num_rows]
            for code, name in enumerate(paths.SPLITS):
                in_split = codes == code
                rows = raw_rows.filter(in_split)
                replaced = spilled["replacements"].filter(in_split)
                sinks[name].write(
                    pa.table(
                        {
                            "id": rows["id"],
                            "label": rows["label"],
                            "text": spilled["text"].filter(in_split),
                            "replacements": replaced,
                        },
                        schema=SPLIT_SCHEMA,
                    )
                )
                split_labels[name].update(rows["label"].to_pylist())
                replacements["rows"] += int(pc.sum(pc.greater(replaced, 0)).as_py() or 0)
                replacements["characters"] += int(pc.sum(replaced).as_py() or 0)
            rejected = np.flatnonzero(codes < 0)
            spill_reasons = spilled["reason"].take(rejected).to_pylist()
            spill_details = spilled["detail"].take(rejected).to_pylist()
            details = []
            for n, offset in enumerate(rejected.tolist()):
                i = start + offset
                if spill_reasons[n]:
                    details.append(spill_details[n])
                elif verdict[i] == CONFLICTING_LABELS:
                    spill_reasons[n] = "conflicting_labels"
                    details.append(f"same text as {ids[twin[i]]}, labelled otherwise")
                else:
                    across = given is not None and given[twin[i]] != given[i]
                    where = f" in {paths.SPLITS[given[twin[i]]]}" if across else ""
                    kind = "exact_duplicate" if verdict[i] == EXACT_DUPLICATE else "near_duplicate"
                    spill_reasons[n] = "cross_split_duplicate" if across else kind
                    details.append(
                        f"same text as {ids[twin[i]]}{where}"
                        if kind == "exact_duplicate"
                        else f"estimated Jaccard {similarity[i]:.2f} with {ids[twin[i]]}{where}"
                    )
            reasons.update(spill_reasons)
            rows = raw_rows.take(rejected)
            rejects.write(
                pa.table(
                    {
                        "id": rows["id"],
                        "source": rows["source"],
                        "stage": pa.repeat("clean", len(rejected)),
                        "reason": spill_reasons,
                        "detail": details,
                        "label": rows["label"],
                        "raw": rows["raw"],
                    },
                    schema=storage.REJECT_SCHEMA,
                )
            )
            start += raw_rows.num_rows
        # Checked before the outputs replace the previous ones: rows in = rows kept + rows rejected.
        written = {name: sink.rows for name, sink in sinks.items()} | {"rejects": rejects.rows}
        assigned = {name: int((split_of == code).sum()) for code, name in enumerate(paths.SPLITS)} | {
            "rejects": int((split_of < 0).sum())
        }
        if start != len(split_of) or written != assigned:
            raise AssertionError(
                f"clean lost rows: {len(split_of)} rows in, {start} read; wrote {written}, assigned {assigned}"
            )
    return {
        "rows_in": start,
        "rows_kept": int((split_of >= 0).sum()),
        "rows_rejected": sum(reasons.values()),
        "rejected_by_reason": dict(sorted(reasons.items())),
        "splits": {
            name: {"rows": sum(counts.values()), **dict(sorted(counts.items()))}
            for name, counts in split_labels.items()
        },
        "replacement_characters": replacements,
    }
