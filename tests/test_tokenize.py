import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stages import encoding
from stages.tokenize import tokenize_split


def write_clean(path, texts, labels):
    ids = [f"id{i}" for i in range(len(texts))]
    pq.write_table(pa.table({"id": ids, "label": labels, "text": texts}), path)


def test_token_table_schema_and_limits(tmp_path, tokenizer):
    texts = ["free money now", "meeting notes attached " * 50, "hello"]
    write_clean(tmp_path / "split.parquet", texts, ["spam", "ham", "ham"])
    batches = list(tokenize_split(tmp_path / "split.parquet", tokenizer, 16, ["ham", "spam"], batch_size=2))
    assert [b.num_rows for b in batches] == [2, 1]  # streamed batch by batch
    table = pa.concat_tables(batches)
    assert table.schema == encoding.TOKEN_SCHEMA
    assert table.schema.field("input_ids").type == pa.list_(pa.int32())
    assert table["label"].to_pylist() == [1, 0, 0]
    assert table["id"].to_pylist() == ["id0", "id1", "id2"]
    ids = table["input_ids"].to_pylist()
    assert max(map(len, ids)) == 16
    assert all(seq[0] == tokenizer.cls_token_id and seq[-1] == tokenizer.sep_token_id for seq in ids)
    assert ids[0] == tokenizer("free money now")["input_ids"]  # batching changes nothing


def test_truncation_side_left_keeps_the_end(tmp_path):
    from tests.conftest import MODEL

    left = encoding.load_tokenizer(str(MODEL), "left")
    text = "start " + "middle " * 40 + "finish"
    (seq,) = encoding.encode(left, [text], 8)
    assert left.convert_ids_to_tokens(seq)[-2] == "finish"


def test_identity_is_stable(tokenizer):
    from tests.conftest import MODEL

    a = encoding.identity(tokenizer, "m", 128)
    b = encoding.identity(encoding.load_tokenizer(str(MODEL)), "m", 128)
    assert a == b and len(a["sha256"]) == 64 and a["vocab_size"] == 30522


def test_missing_model_dir_is_a_clear_error(tmp_path):
    import pytest

    from stages.errors import StageError

    with pytest.raises(StageError, match="model directory not found"):
        encoding.resolve_model("models/nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StageError, match="no config.json"):
        encoding.resolve_model(str(tmp_path / "empty"))


def test_text_window_cuts_at_a_space_on_the_kept_side():
    from stages.tokenize import text_window

    text = "alpha beta gamma delta"
    assert text_window(text, 100, "right") == text
    assert text_window(text, 12, "right") == "alpha beta"
    assert text_window(text, 12, "left") == "gamma delta"
    assert text_window("x" * 50, 10, "right") == "x" * 50  # no space: the whole text


@pytest.mark.parametrize("side", ["right", "left"])
def test_windowed_ids_equal_whole_text_ids_on_real_mail(side):
    from stages.clean import mail_to_text, normalise
    from stages.tokenize import WindowedEncoder
    from tests.conftest import CORPUS, MODEL

    tokenizer = encoding.load_tokenizer(str(MODEL), side)
    paths = sorted((CORPUS / "spam-2").glob("*.txt"))[:150] + sorted((CORPUS / "easy-ham-1").glob("*.txt"))[:150]
    texts = [normalise(mail_to_text(p.read_bytes())) for p in paths]
    # Long words ([UNK] each) leave the window short of max_length: those rows are encoded whole.
    texts.append(" ".join(["q" * 150] * 80))
    assert sum(len(t) > 64 * 10 for t in texts) > 100  # most rows are really windowed
    for max_length in (16, 64, 256):
        assert WindowedEncoder(tokenizer, max_length)(texts) == encoding.encode(tokenizer, texts, max_length)


def test_stage_encodes_whole_texts_when_windows_change_the_ids(tmp_path, tokenizer, monkeypatch, capsys):
    from stages import tokenize

    texts = ["free money now " * 100, "meeting notes attached " * 100, "hello there"]
    write_clean(tmp_path / "split.parquet", texts, ["spam", "ham", "ham"])
    monkeypatch.setattr(tokenize.WindowedEncoder, "__call__", lambda self, batch: [[0]] * len(batch))
    table = pa.concat_tables(tokenize_split(tmp_path / "split.parquet", tokenizer, 16, ["ham", "spam"], 2))
    assert table["input_ids"].to_pylist() == encoding.encode(tokenizer, texts, 16)
    assert "encoding whole texts" in capsys.readouterr().out
