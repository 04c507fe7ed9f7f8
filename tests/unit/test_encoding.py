import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from reprolab.encoding import encoder
from reprolab.encoding.truncated import VerifiedEncoder, tokenize_split


def write_clean(path, texts, labels):
    ids = [f"id{i}" for i in range(len(texts))]
    pq.write_table(pa.table({"id": ids, "label": labels, "text": texts}), path)


def test_token_table_schema_and_limits(tmp_path, tokenizer):
    texts = ["free money now", "meeting notes attached " * 50, "hello"]
    write_clean(tmp_path / "split.parquet", texts, ["spam", "ham", "ham"])
    verified = VerifiedEncoder(tokenizer, 16, encoder.Truncation())
    batches = list(tokenize_split(tmp_path / "split.parquet", verified, ["ham", "spam"], batch_size=2))
    assert [b.num_rows for b in batches] == [2, 1]  # streamed batch by batch
    table = pa.concat_tables(batches)
    assert table.schema == encoder.TOKEN_SCHEMA
    assert table.schema.field("input_ids").type == pa.list_(pa.int32())
    assert table["label"].to_pylist() == [1, 0, 0]
    assert table["id"].to_pylist() == ["id0", "id1", "id2"]
    ids = table["input_ids"].to_pylist()
    assert max(map(len, ids)) == 16
    assert all(seq[0] == tokenizer.cls_token_id and seq[-1] == tokenizer.sep_token_id for seq in ids)
    assert ids[0] == tokenizer("free money now")["input_ids"]  # batching changes nothing


def test_truncation_keeps_the_head_the_tail_or_both(tokenizer):
    text = "start first " + "middle " * 40 + "last finish"
    for kind, words in [
        ("head", ["start", "first"] + ["middle"] * 4),
        ("tail", ["middle"] * 4 + ["last", "finish"]),
        ("head_tail", ["start", "middle", "middle", "middle", "last", "finish"]),
    ]:
        (seq,) = encoder.encode(tokenizer, [text], 8, encoder.Truncation(kind, 0.25))
        assert tokenizer.convert_ids_to_tokens(seq) == ["[CLS]", *words, "[SEP]"], kind
    # The tokenizer's own truncation gives the same ids for head and tail (HF's right and left).
    for kind, side in [("head", "right"), ("tail", "left")]:
        tokenizer.truncation_side = side
        try:
            assert (
                encoder.encode(tokenizer, [text, "short"], 8, encoder.Truncation(kind))
                == tokenizer([text, "short"], truncation=True, max_length=8)["input_ids"]
            )
        finally:
            tokenizer.truncation_side = "right"
    # A text that fits is kept whole whatever the kind.
    assert (
        len(
            {
                tuple(encoder.encode(tokenizer, ["fits well"], 8, encoder.Truncation(kind))[0])
                for kind in ("head", "tail", "head_tail")
            }
        )
        == 1
    )


def test_truncation_keep_splits_the_budget():
    head_tail = encoder.Truncation("head_tail", 0.25)
    items = list(range(100))
    assert head_tail.keep(items, 10) == [0, 1, 92, 93, 94, 95, 96, 97, 98, 99]  # int(2.5) from the start
    assert head_tail.keep(items[:10], 10) == items[:10]
    assert encoder.Truncation("tail").keep(items, 3) == [97, 98, 99]
    assert encoder.Truncation("head").keep(items, 3) == [0, 1, 2]
    assert encoder.Truncation("head").keep(items, 0) == [] == head_tail.keep(items, 0)


def test_identity_names_what_the_ids_depend_on(tokenizer, params):
    from reprolab.encoding import truncated, word_alignment
    from tests.conftest import MODEL

    head = truncated.identity_settings(params.tokenize.model_copy(update={"truncation": "head"}))
    identity = encoder.identity(tokenizer, "m", 128, head)
    assert identity == encoder.identity(encoder.load_tokenizer(str(MODEL)), "m", 128, head)  # a fresh load: the same
    assert len(identity["sha256"]) == 64 and identity["vocab_size"] == 30522
    grown = encoder.load_tokenizer(str(MODEL))
    grown.add_tokens(["reprolabword"])  # one more vocabulary entry changes the ids of some texts
    assert encoder.identity(grown, "m", 128, head)["sha256"] != identity["sha256"]
    assert identity["truncation"] == "head" and "head_fraction" not in identity
    head_tail = params.tokenize.model_copy(update={"truncation": "head_tail", "head_fraction": 0.3})
    both = encoder.identity(tokenizer, "m", 128, truncated.identity_settings(head_tail))
    assert (both["truncation"], both["head_fraction"]) == ("head_tail", 0.3)
    windows = params.tokenize.model_copy(update={"stride": 8, "label_subtokens": "all"})
    tagged = encoder.identity(tokenizer, "m", 128, word_alignment.identity_settings(windows))
    assert (tagged["stride"], tagged["label_subtokens"]) == (8, "all") and "truncation" not in tagged


def test_missing_model_dir_is_a_clear_error(tmp_path):
    import pytest

    from reprolab.errors import StageError

    with pytest.raises(StageError, match="model directory not found"):
        encoder.resolve_model("models/nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StageError, match="no config.json"):
        encoder.resolve_model(str(tmp_path / "empty"))


def test_next_span_cuts_at_a_space_on_the_kept_side():
    from reprolab.encoding.truncated import next_span

    text = "alpha beta gamma delta"  # spaces at 5, 10 and 16
    assert next_span(text, 0, 100, "right") == (0, len(text))
    assert next_span(text, 0, 12, "right") == (0, 10)  # "alpha beta"
    assert next_span(text, 10, 8, "right") == (10, 16)  # " gamma": the next chunk starts at the space
    assert next_span(text, 0, 3, "right") == (0, 5)  # no space in reach: out to the next one
    assert next_span(text, 0, 12, "left") == (10, 22)  # " gamma delta"
    assert next_span(text, 12, 8, "left") == (5, 10)  # " beta"
    assert next_span(text, 17, 3, "left") == (0, 5)  # "alpha": out to the text's start
    assert next_span("x" * 50, 0, 10, "right") == (0, 50)  # no space at all: the whole text


def test_special_tokens_are_those_around_a_text(tokenizer):
    assert encoder.special_tokens(tokenizer) == ([tokenizer.cls_token_id], [tokenizer.sep_token_id])


@pytest.mark.parametrize("kind", ["head", "tail", "head_tail"])
def test_chunked_ids_equal_whole_text_ids_on_real_mail(kind, tokenizer):
    from reprolab.data.cleaning import mail_to_text, normalise
    from reprolab.encoding.truncated import ChunkedEncoder
    from tests.conftest import CORPUS

    truncation = encoder.Truncation(kind, 0.25)
    paths = sorted((CORPUS / "spam-2").glob("*.txt"))[:150] + sorted((CORPUS / "easy-ham-1").glob("*.txt"))[:150]
    texts = [normalise(mail_to_text(p.read_bytes())) for p in paths]
    # Long words ([UNK] each) give few tokens per character; dense punctuation gives many.
    texts += [" ".join(["q" * 150] * 80), "!?" * 2000, "", "word"]
    # ASCII with control characters and added tokens' text, and non-ASCII, which the tokenizer
    # normalises itself.
    texts += [
        "Tab\there\x0bvertical\x0cfeed\x01bell\x7fdel\rCR " * 20,
        "see [CLS] and [MASK] or [cls] " * 20,
        "Café naïve ÅNGSTRÖM 中文字 emoji 🙂 " * 20,
    ]
    assert sum(len(t) > 64 * 10 for t in texts) > 100  # most rows are really cut short
    for max_length in (8, 16, 64, 256):
        verified = ChunkedEncoder(tokenizer, max_length, truncation)
        assert verified.encode_batch.ascii is not None  # BERT's normaliser: ASCII texts take the fast path
        assert verified(texts).to_pylist() == encoder.encode(tokenizer, texts, max_length, truncation)


def test_ascii_translation_is_the_normaliser_on_ascii(tokenizer):
    import json
    import random

    from tokenizers import Tokenizer

    from reprolab.encoding.truncated import ascii_translation

    backend = tokenizer.backend_tokenizer
    table, deleted = ascii_translation(backend)
    generator = random.Random(0)
    for _ in range(200):
        text = "".join(chr(generator.randrange(128)) for _ in range(200))
        assert text.encode().translate(table, deleted).decode() == backend.normalizer.normalize_str(text)

    def with_normalizer(normalizer):
        spec = json.loads(backend.to_str())
        spec["normalizer"] = normalizer
        return Tokenizer.from_str(json.dumps(spec))

    assert ascii_translation(with_normalizer(None)) is None  # nothing to do
    # Not character by character: Strip looks at a text's ends, Replace at a pattern.
    assert ascii_translation(with_normalizer({"type": "Strip", "strip_left": True, "strip_right": True})) is None
    replace = {"type": "Replace", "pattern": {"String": "ab"}, "content": "c"}
    assert ascii_translation(with_normalizer({"type": "Sequence", "normalizers": [replace]})) is None
    assert ascii_translation(with_normalizer({"type": "Sequence", "normalizers": [{"type": "Lowercase"}]}))


def test_stage_encodes_whole_texts_when_windows_change_the_ids(tmp_path, tokenizer, monkeypatch, capsys):
    from reprolab.encoding import truncated

    texts = ["free money now " * 100, "meeting notes attached " * 100, "hello there"]
    write_clean(tmp_path / "split.parquet", texts, ["spam", "ham", "ham"])
    monkeypatch.setattr(truncated.ChunkedEncoder, "__call__", lambda self, batch: pa.array([[0]] * len(batch)))
    verified = VerifiedEncoder(tokenizer, 16, encoder.Truncation())
    table = pa.concat_tables(tokenize_split(tmp_path / "split.parquet", verified, ["ham", "spam"], 2))
    assert table["input_ids"].to_pylist() == encoder.encode(tokenizer, texts, 16)
    assert "encoding whole texts" in capsys.readouterr().out


def test_stage_encodes_whole_texts_when_max_length_leaves_no_room_for_chunks(tmp_path, tokenizer, capsys):
    write_clean(tmp_path / "split.parquet", ["free money now", "hello there"], ["spam", "ham"])
    verified = VerifiedEncoder(tokenizer, 2, encoder.Truncation("head_tail"))
    table = pa.concat_tables(tokenize_split(tmp_path / "split.parquet", verified, ["ham", "spam"], 1))
    assert table["input_ids"].to_pylist() == [[tokenizer.cls_token_id, tokenizer.sep_token_id]] * 2
    assert "leaves no room besides the special tokens; encoding whole texts" in capsys.readouterr().out


class LosesABatch:
    """An engine with a bug: the second batch's result never comes back."""

    workers = 1

    def map(self, fn, items):
        return (fn(item) for n, item in enumerate(items) if n != 1)


def test_a_batch_lost_on_the_engine_stops_tokenize_and_keeps_the_previous_output(tmp_path, tokenizer):
    from reprolab.data.sentence_cleaning import CLEAN_SENTENCE_SCHEMA
    from reprolab.data.tag_schemes import tag_names
    from reprolab.encoding import truncated, word_alignment
    from reprolab.errors import StageError
    from reprolab.params import TokenizeParams

    p = TokenizeParams(max_length=16, batch_size=1)
    write_clean(tmp_path / "train.parquet", ["free money now", "hello", "notes", "more"], ["spam", "ham", "ham", "ham"])
    sentences = [
        {
            "id": f"s{i}",
            "group": f"s{i}",
            "tokens": ["Anna", "visits", "Rome"],
            "tags": ["B-PER", "O", "B-LOC"],
            "replacements": 0,
        }
        for i in range(4)
    ]
    pq.write_table(pa.Table.from_pylist(sentences, schema=CLEAN_SENTENCE_SCHEMA), tmp_path / "sentences.parquet")
    texts, windows = tmp_path / "tokens.parquet", tmp_path / "windows.parquet"
    texts.write_bytes(b"previous"), windows.write_bytes(b"previous")
    with pytest.raises(
        StageError, match=r"tokens.parquet: 3 rows came back from the engine for the 4 rows of .*train.parquet"
    ):
        truncated.tokenize_splits(
            tokenizer, p, ["ham", "spam"], {"train": tmp_path / "train.parquet"}, {"train": texts}, LosesABatch()
        )
    with pytest.raises(StageError, match=r"windows.parquet: 3 rows came back from the engine for the 4 rows"):
        word_alignment.tokenize_sentences(
            tmp_path / "sentences.parquet", windows, tokenizer, tag_names(["PER", "LOC"]), p, LosesABatch()
        )
    assert texts.read_bytes() == windows.read_bytes() == b"previous"
