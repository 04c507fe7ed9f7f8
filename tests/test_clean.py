"""clean on real MIME messages of the corpus, dedup and split integrity."""

import pytest

from stages.clean import Deduplicator, assign_splits, clean_rows, html_to_text, mail_to_text, normalise
from stages.params import CleanParams, SplitParams
from tests.conftest import mail


def text_of(group, number):
    return normalise(mail_to_text(mail(group, number)))


def test_base64_body_is_decoded():
    text = text_of("spam-2", "00009")
    assert text.startswith("[SA] URGENT HELP")
    assert "URGENT AND CONFIDENTIAL" in text  # only present base64-encoded in the raw bytes


def test_quoted_printable_plain_part_preferred_to_html():
    raw = mail("easy-ham-1", "00062")
    assert b"=3D" in raw
    text = text_of("easy-ham-1", "00062")
    assert text.startswith("Tiny DNS Swap I'm using Simple DNS from JHSoft.")
    assert "=3D" not in text and "<META" not in text


def test_html_only_body_becomes_text():
    raw = mail("spam-2", "00002")
    assert b"<" in raw and b"text/plain" not in raw.lower()
    text = text_of("spam-2", "00002")
    assert "Stun Guns" in text and "<" not in text and "font" not in text.lower().split()


def test_gb2312_charset_decoded():
    text = text_of("spam-1", "00040")
    assert "enter Chinese market" in text
    assert "\ufffd" not in text[:200]


def test_html_to_text_drops_scripts_and_styles():
    html = "<html><head><style>p{color:red}</style></head><body><p>Hello</p><script>x()</script>world</body></html>"
    assert normalise(html_to_text(html)) == "Hello world"


def test_normalise_folds_unicode_and_whitespace():
    assert normalise("Ｆｒｅｅ\u200b   money\n\n\tnow\x07") == "Free money now"


def test_unknown_charset_falls_back():
    raw = b"Subject: hi\nContent-Type: text/plain; charset=x-no-such-charset\n\nbody caf\xe9 text here"
    assert normalise(mail_to_text(raw)) == "hi body caf\u00e9 text here"


def clean_params(**overrides) -> CleanParams:
    base = dict(min_chars=10, max_chars=5000, near_duplicate_threshold=0.8, shingle_words=3,
                minhash_permutations=128, split=SplitParams(val_fraction=0.2, test_fraction=0.2, seed=1))
    return CleanParams(**{**base, **overrides})


def raw_row(row_id, text, label="ham", kind="text", status="absent"):
    return {"id": row_id, "source": row_id, "label": label, "kind": kind,
            "raw": text if isinstance(text, bytes) else text.encode(), "checksum_status": status}


def test_rows_conserved_with_reasons():
    long_text = " ".join(f"word{i}" for i in range(60))
    rows = [
        raw_row("a", long_text),
        raw_row("b", long_text.upper()),  # exact duplicate after casefolding
        raw_row("c", long_text.replace("word59", "other")),  # near duplicate
        raw_row("d", "tiny"),
        raw_row("e", "   \n\t "),
        raw_row("f", "a different and long enough message", status="mismatch"),
        raw_row("g", "Subject: fine\n\nreal mail body here", kind="mail"),
    ]
    kept, rejects = clean_rows(rows, clean_params())
    assert [r["id"] for r in kept] == ["a", "g"]
    assert {r["id"]: r["reason"] for r in rejects} == {
        "b": "exact_duplicate", "c": "near_duplicate", "d": "too_short",
        "e": "empty_text", "f": "checksum_mismatch"}
    assert len(kept) + len(rejects) == len(rows)
    assert all(r["raw"] is not None for r in rejects)  # the original bytes are kept


def test_deduplicator_keeps_distinct_texts():
    dedup = Deduplicator(threshold=0.8, shingle_words=3, permutations=128)
    assert dedup.check("1", "the quick brown fox jumps over the lazy dog today") is None
    assert dedup.check("2", "an entirely unrelated sentence about mail servers and DNS") is None


def test_split_is_stratified_deterministic_and_leak_free():
    rows = [{"id": f"r{i:03d}", "label": "spam" if i % 4 == 0 else "ham", "text": f"text {i}"} for i in range(200)]
    p = SplitParams(val_fraction=0.15, test_fraction=0.15, seed=7)
    splits = assign_splits(rows, p)
    ids = {name: {r["id"] for r in split} for name, split in splits.items()}
    assert sum(map(len, ids.values())) == 200
    assert not (ids["train"] & ids["val"] or ids["train"] & ids["test"] or ids["val"] & ids["test"])
    for name, fraction in (("test", 0.15), ("val", 0.15)):
        spam = sum(r["label"] == "spam" for r in splits[name])
        assert spam == round(50 * fraction)
    assert assign_splits(list(reversed(rows)), p) == splits
    other_seed = assign_splits(rows, SplitParams(val_fraction=0.15, test_fraction=0.15, seed=8))
    assert other_seed["test"] != splits["test"]


@pytest.mark.parametrize("group", ["easy-ham-1", "spam-2"])
def test_real_messages_clean_to_nonempty_text(group):
    from tests.conftest import CORPUS

    rows = []
    for path in sorted((CORPUS / group).glob("*.txt"))[:40]:
        rows.append(raw_row(f"{group}/{path.name[:5]}", path.read_bytes(), kind="mail", status="ok"))
    kept, rejects = clean_rows(rows, clean_params(min_chars=20, max_chars=20000))
    assert len(kept) + len(rejects) == 40
    assert len(kept) >= 30
    assert all(len(r["text"]) >= 20 and "\n" not in r["text"] for r in kept)
