"""Back-translation (Sennrich et al. 2016; Edunov et al. 2018): a training text translated to a pivot
language and back is a paraphrase that keeps its label. A vendored pair of sequence-to-sequence models
(`AutoModelForSeq2SeqLM`: MarianMT's opus-mt-en-xx and opus-mt-xx-en, or any other) generates by
seeded top-k sampling, in batches.

Every selected row ends with one status, so rows in = translated + failed:
- `added`: a new paraphrase, which augment tokenizes into the training copies;
- `identical` (the same words as the source, case and spacing aside) or `empty`: translated, not added;
- `failed`: generation raised, or either direction ran to `max_new_tokens` (cut), with why.

A row is translated from the words augment's copies are made of (`augment.max_words`, kept as tokenize
truncates). Sampling is seeded per batch, so a translation depends on the rows batched with it (their
padding) and `batch_size`: the stage's outputs are the same on every rerun of the same inputs and
params, and DVC keeps them across experiments that change neither.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
from tqdm import tqdm

from reprolab import storage
from reprolab.data.augmentation import BACK_TRANSLATION_ADDED, BATCH_ROWS, selected
from reprolab.encoding import encoder
from reprolab.params import BackTranslationParams, Params

SCHEMA = pa.schema(
    [
        ("id", pa.string()),  # <origin id>#bt0, as augment's copies are named
        ("origin_id", pa.string()),
        ("label", pa.string()),
        ("source", pa.string()),  # the words translated
        ("pivot", pa.string()),
        ("text", pa.string()),  # the translation back
        ("status", pa.string()),
        ("error", pa.string()),
    ]
)
STATUSES = (BACK_TRANSLATION_ADDED, "identical", "empty", "failed")
FAILURES_LISTED = 20  # the report names this many failed rows; the output table holds them all


class Translator:
    """One direction: a sequence-to-sequence model and its tokenizer from a local folder."""

    def __init__(self, folder: str | Path):
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self.model = AutoModelForSeq2SeqLM.from_pretrained(str(folder)).eval()

    def translate(self, texts: list[str], p: BackTranslationParams, seed: int) -> list[str | None]:
        """Each text's translation by seeded top-k sampling; None where it ran to max_new_tokens (cut)."""
        import torch

        # Cut to what the model has positions for, should its tokenizer allow more.
        longest = min(self.tokenizer.model_max_length, self.model.config.max_position_embeddings)
        batch = self.tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=longest)
        torch.manual_seed(seed)
        with torch.inference_mode():
            generated = self.model.generate(
                **batch, do_sample=True, top_k=p.top_k, max_new_tokens=p.max_new_tokens, num_beams=1
            )
        # After the decoder's start token: a sequence that ran to max_new_tokens is cut, whether or not the
        # model's config forced an end token there (MarianMT's forced_eos_token_id does).
        tokens = generated[:, 1:]
        ended_early = (tokens[:, : p.max_new_tokens - 1] == self.model.generation_config.eos_token_id).any(dim=1)
        finished = (ended_early | (tokens.shape[1] < p.max_new_tokens)).tolist()
        decoded = self.tokenizer.batch_decode(generated, skip_special_tokens=True)
        return [text if done else None for text, done in zip(decoded, finished, strict=True)]


def batch_seed(seed: int, first_id: str) -> int:
    """A batch's sampling seed: from params' seed and its first row's id, not from the batches before it."""
    return int.from_bytes(hashlib.sha256(f"{seed}:back_translation:{first_id}".encode()).digest()[:8], "big")


def _words(text: str) -> str:
    return " ".join(text.casefold().split())


def outcome(source: str, pivot: str | None, back: str | None) -> tuple[str, str]:
    """(status, error) of one row's two translations."""
    if pivot is None or back is None:
        direction = "to the pivot" if pivot is None else "back"
        return "failed", f"the translation {direction} ran to max_new_tokens: cut"
    if not back.strip():
        return "empty", ""
    return ("identical", "") if _words(back) == _words(source) else (BACK_TRANSLATION_ADDED, "")


def _translate_rows(forward: Translator, backward: Translator, sources: list[str], p, seed: int) -> list[tuple]:
    """(pivot, back, error) per source: the batch at once, or row by row when the batch raises, so that
    one bad row fails alone."""
    try:
        pivots = forward.translate(sources, p, seed)
        finished = [i for i, pivot in enumerate(pivots) if pivot is not None]
        backs = dict(zip(finished, backward.translate([pivots[i] for i in finished], p, seed), strict=True))
        return [(pivot, backs.get(i), "") for i, pivot in enumerate(pivots)]
    except Exception as exc:  # noqa: BLE001 - any generation error: retried row by row, then counted
        if len(sources) == 1:
            return [(None, None, f"{type(exc).__name__}: {exc}"[:500])]
    return [row for source in sources for row in _translate_rows(forward, backward, [source], p, seed)]


def back_translated_rows(
    rows: list[dict],
    forward: Translator,
    backward: Translator,
    p: BackTranslationParams,
    max_words: int,
    truncation: encoder.Truncation,
) -> Iterator[dict[str, Any]]:
    """One row of SCHEMA per selected training row (id, label, text), batched by `p.batch_size`."""
    chosen = [row for row in rows if selected(row["id"], p)]
    for start in range(0, len(chosen), p.batch_size):
        batch = chosen[start : start + p.batch_size]
        sources = [" ".join(truncation.keep(row["text"].split(), max_words)) for row in batch]
        translated = _translate_rows(forward, backward, sources, p, batch_seed(p.seed, batch[0]["id"]))
        for row, source, (pivot, back, error) in zip(batch, sources, translated, strict=True):
            status, reason = ("failed", error) if error else outcome(source, pivot, back)
            yield {
                "id": f"{row['id']}#bt0",
                "origin_id": row["id"],
                "label": row["label"],
                "source": source,
                "pivot": pivot,
                "text": back,
                "status": status,
                "error": reason,
            }


def back_translate_file(source: Path, dest: Path, params: Params) -> dict[str, Any]:
    """The back-translations of a clean training split (SCHEMA) and their report: rows in, each status's
    count, the first failures. Off (`augment.back_translation` null): an empty table, no model loaded."""
    p = params.augment.back_translation
    counts = dict.fromkeys(STATUSES, 0)
    failures: list[dict[str, str]] = []
    with storage.parquet_sink(dest, SCHEMA) as sink:
        if p is not None:
            forward, backward = Translator(p.forward_model), Translator(p.backward_model)
            truncation = encoder.Truncation.of(params.tokenize)
            total = storage.parquet_rows(source)
            with tqdm(total=total, desc="back_translate", unit=" rows", file=sys.stderr, disable=None) as bar:
                for batch in storage.iter_batches(source, ["id", "label", "text"], BATCH_ROWS):
                    rows = batch.to_pylist()
                    out = list(back_translated_rows(rows, forward, backward, p, params.augment.max_words, truncation))
                    for row in out:
                        counts[row["status"]] += 1
                        if row["status"] == "failed" and len(failures) < FAILURES_LISTED:
                            failures.append({"id": row["origin_id"], "error": row["error"]})
                    if out:
                        sink.write(pa.Table.from_pylist(out, schema=SCHEMA))
                    bar.update(len(rows))
    translated = counts[BACK_TRANSLATION_ADDED] + counts["identical"] + counts["empty"]
    return {
        "enabled": p is not None,
        "rows_in": sum(counts.values()),
        "translated": translated,
        "failed": counts["failed"],
        "added": counts[BACK_TRANSLATION_ADDED],
        "identical": counts["identical"],
        "empty": counts["empty"],
        "failures": failures,
    }
