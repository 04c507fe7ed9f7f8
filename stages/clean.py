"""clean: raw rows -> normalised text, deduplicated, split train/val/test without leaks.

Mail is parsed with the standard library's `email` package (MIME, transfer encodings, charsets);
HTML-only bodies become text through selectolax. Exact duplicates (after normalisation) and near
duplicates (MinHash LSH over word shingles) are rejected, keeping the first by id, so no text or
its near twin can sit on both sides of a split. The split is stratified by label and seeded by a
hash of each id, so adding a row never moves the others.
"""

from __future__ import annotations

import email
import email.errors
import email.header
import email.policy
import hashlib
import re
import unicodedata
from collections import Counter
from email.message import Message
from typing import Any

import pyarrow as pa
from datasketch import MinHash, MinHashLSH
from selectolax.lexbor import LexborHTMLParser

from stages import io, paths, tracking
from stages.errors import run_stage
from stages.params import CleanParams, SplitParams, load_params

REPORT_PATH = paths.REPORTS / "data.json"

SPLIT_SCHEMA = pa.schema([("id", pa.string()), ("label", pa.string()), ("text", pa.string())])

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


class Deduplicator:
    """Rejects exact duplicates (casefolded) and near duplicates (MinHash LSH) of earlier texts."""

    def __init__(self, threshold: float, shingle_words: int, permutations: int):
        self.shingle_words = shingle_words
        self.permutations = permutations
        self.threshold = threshold
        self.exact: dict[str, str] = {}
        self.lsh = MinHashLSH(threshold=threshold, num_perm=permutations)
        self.signatures: dict[str, MinHash] = {}

    def check(self, row_id: str, text: str) -> tuple[str, str] | None:
        key = hashlib.sha1(text.casefold().encode()).hexdigest()
        if key in self.exact:
            return ("exact_duplicate", f"same text as {self.exact[key]}")
        self.exact[key] = row_id
        signature = MinHash(num_perm=self.permutations, seed=1)
        signature.update_batch(list(shingles(text, self.shingle_words)))
        candidates = self.lsh.query(signature)
        if candidates:
            twin = min(candidates, key=lambda other: (-signature.jaccard(self.signatures[other]), other))
            similarity = signature.jaccard(self.signatures[twin])
            if similarity >= self.threshold:
                return ("near_duplicate", f"estimated Jaccard {similarity:.2f} with {twin}")
        self.lsh.insert(row_id, signature)
        self.signatures[row_id] = signature
        return None


def clean_rows(rows: list[dict], p: CleanParams) -> tuple[list[dict], list[dict]]:
    """Raw rows -> (clean rows, rejects). Rows are taken in id order, so the first twin is kept."""
    dedup = Deduplicator(p.near_duplicate_threshold, p.shingle_words, p.minhash_permutations)
    kept: list[dict] = []
    rejects: list[dict] = []

    def reject(row: dict, reason: str, detail: str) -> None:
        rejects.append({**{k: row[k] for k in ("id", "source", "label", "raw")},
                        "reason": reason, "detail": detail})

    for row in sorted(rows, key=lambda r: r["id"]):
        if p.reject_checksum_mismatch and row["checksum_status"] == "mismatch":
            reject(row, "checksum_mismatch", f"{row['source']}: bytes differ from the MD5 in its name")
            continue
        try:
            text = mail_to_text(row["raw"]) if row["kind"] == "mail" else row["raw"].decode("utf-8")
        except Exception as exc:  # noqa: BLE001 - any parser failure is a row-level reject
            reject(row, "unparseable", f"{type(exc).__name__}: {exc}"[:300])
            continue
        text = normalise(text)[: p.max_chars].strip()
        if not text:
            reject(row, "empty_text", "no text after MIME decoding and normalisation")
            continue
        if len(text) < p.min_chars:
            reject(row, "too_short", f"{len(text)} chars < clean.min_chars={p.min_chars}")
            continue
        duplicate = dedup.check(row["id"], text)
        if duplicate:
            reject(row, *duplicate)
            continue
        kept.append({"id": row["id"], "label": row["label"], "text": text})
    return kept, rejects


def assign_splits(rows: list[dict], p: SplitParams) -> dict[str, list[dict]]:
    """Stratified by label; within a label, rows are ranked by a seeded hash of their id."""
    splits: dict[str, list[dict]] = {name: [] for name in paths.SPLITS}
    by_label: dict[str, list[dict]] = {}
    for row in rows:
        by_label.setdefault(row["label"], []).append(row)
    for label_rows in by_label.values():
        ranked = sorted(label_rows, key=lambda r: hashlib.sha256(f"{p.seed}:{r['id']}".encode()).digest())
        n_test = round(len(ranked) * p.test_fraction)
        n_val = round(len(ranked) * p.val_fraction)
        splits["test"] += ranked[:n_test]
        splits["val"] += ranked[n_test : n_test + n_val]
        splits["train"] += ranked[n_test + n_val :]
    return {name: sorted(split, key=lambda r: r["id"]) for name, split in splits.items()}


def report(rows_in: int, splits: dict[str, list[dict]], rejects: list[dict]) -> dict[str, Any]:
    kept = sum(len(s) for s in splits.values())
    return {
        "rows_in": rows_in,
        "rows_kept": kept,
        "rows_rejected": len(rejects),
        "rejected_by_reason": dict(sorted(Counter(r["reason"] for r in rejects).items())),
        "splits": {
            name: {"rows": len(split), **dict(sorted(Counter(r["label"] for r in split).items()))}
            for name, split in splits.items()
        },
    }


def main() -> None:
    params = load_params()
    raw = io.read_parquet(paths.RAW).to_pylist()
    kept, rejects = clean_rows(raw, params.clean)
    splits = assign_splits(kept, params.clean.split)
    summary = report(len(raw), splits, rejects)
    if summary["rows_kept"] + summary["rows_rejected"] != len(raw):
        raise AssertionError(f"clean lost rows: {summary}")
    for name, split in splits.items():
        io.write_parquet(pa.Table.from_pylist(split, schema=SPLIT_SCHEMA), paths.clean_split(name))
    io.write_parquet(io.rejects_table(rejects, "clean"), paths.rejects("clean"))
    io.write_json(summary, REPORT_PATH)
    print(f"clean: {len(raw)} rows in, {summary['rows_kept']} kept, {len(rejects)} rejected "
          f"{summary['rejected_by_reason']}; splits {summary['splits']}")
    tracking.log_stage(
        "clean", params, outputs=[*map(paths.clean_split, paths.SPLITS), paths.rejects("clean"), REPORT_PATH],
        metrics=summary, inputs={"raw": paths.RAW},
    )


if __name__ == "__main__":
    run_stage(main)
