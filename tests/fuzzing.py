"""Generated hostile sources for every ingest reader and for the params loader (Hypothesis).

Each `check_*` takes what a strategy drew, writes it under a fresh folder and runs the real code:
the only exception allowed out is the stage's own error (StageError), and whenever ingest succeeds,
rows in (counted by the readers) = rows kept + rows rejected = the rows in the two Parquet files.
The unit layer draws 200 examples per reader, the e2e layer 2,000.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from reprolab.data.ingest_shared import SourceCount
from reprolab.data.ingestion import ingest, write_outputs
from reprolab.data.readers import records_from_source
from reprolab.data.row_rules import TextRules
from reprolab.errors import StageError
from reprolab.params import IngestParams, ParamsError, load_params
from tests.conftest import FIXTURE_PARAMS

LABELS = ["ham", "spam"]


def fuzz(strategy: st.SearchStrategy, check: Callable, examples: int) -> None:
    """`check` on `examples` drawn from `strategy`. Derandomized: CI explores the same examples every
    run, so a failure reproduces; REPROLAB_FUZZ_SEED=N explores others. No example database, so no run
    depends on an earlier one."""
    test = given(strategy)(check)
    explore = os.environ.get("REPROLAB_FUZZ_SEED")
    if explore:
        test = seed(int(explore))(test)
    settings(
        max_examples=examples,
        deadline=None,
        derandomize=not explore,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )(test)()


# Texts and labels: mostly plausible, sometimes hostile (control bytes, odd Unicode, other types).
texts = st.one_of(st.text(min_size=0, max_size=60), st.sampled_from(["hello there", "win money now", " ", ""]))
labels = st.one_of(
    st.sampled_from(LABELS),
    st.sampled_from(["Ham", " spam", "", "postive"]),
    st.integers(0, 2),
    st.booleans(),
    st.none(),
)
values = st.one_of(
    texts,
    st.integers(),
    st.floats(),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
# Byte-level damage to a well-formed file: (offset share, bytes inserted, bytes cut).
damage = st.one_of(st.none(), st.tuples(st.floats(0, 1), st.binary(max_size=8), st.integers(0, 64)))


def damaged(data: bytes, hurt: tuple[float, bytes, int] | None) -> bytes:
    if hurt is None:
        return data
    share, inserted, cut = hurt
    at = int(share * len(data))
    return data[:at] + inserted + data[at + cut :]


def run_ingest(p: IngestParams, out: Path, rules=None) -> None:
    """The stage's ingest on `p` (texts, or `rules`' rows): a StageError, or outputs whose counts add up."""
    count = SourceCount()
    rules = rules or TextRules(p)
    try:
        tally = write_outputs(
            ingest(records_from_source(p, count), p, rules=rules),
            count,
            rules,
            out / "raw.parquet",
            out / "rejects.parquet",
        )
    except StageError as exc:
        assert "lost rows" not in str(exc), str(exc)
        assert str(exc) and len(str(exc)) < 2000  # one message, of a readable size
        return
    report = tally.report()
    assert report["rows_in"] == report["rows_kept"] + report["rows_rejected"]
    assert pq.ParquetFile(out / "raw.parquet").metadata.num_rows == report["rows_kept"]
    assert pq.ParquetFile(out / "rejects.parquet").metadata.num_rows == report["rows_rejected"]


def table_params(path: Path, fmt: str, **extra) -> IngestParams:
    return IngestParams(format=fmt, path=str(path), labels=LABELS, max_text_bytes=200, **extra)


csv_tables = st.tuples(
    st.lists(st.sampled_from(["text", "label", "id", "x", "Text", ""]), min_size=1, max_size=4),
    st.lists(st.lists(st.one_of(texts, labels.map(str)), min_size=0, max_size=5), max_size=8),
    damage,
    st.booleans(),  # with the id column
)


def check_csv(drawn) -> None:
    header, rows, hurt, with_id = drawn
    with tempfile.TemporaryDirectory() as scratch:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(header)
        writer.writerows(rows)
        path = Path(scratch) / "data.csv"
        path.write_bytes(damaged(buffer.getvalue().encode("utf-8", "surrogatepass"), hurt))
        run_ingest(table_params(path, "csv", id_column="id" if with_id else None), Path(scratch))


jsonl_lines = st.tuples(
    st.lists(
        st.one_of(
            st.fixed_dictionaries({"text": texts, "label": labels}, optional={"id": values, "extra": values}),
            st.dictionaries(st.sampled_from(["text", "label", "id"]), values, max_size=3),
            values,
        ),
        min_size=0,
        max_size=8,
    ),
    st.lists(st.binary(max_size=12), max_size=2),  # raw lines mixed in
    damage,
)


def check_jsonl(drawn) -> None:
    objects, raw_lines, hurt = drawn
    lines = [json.dumps(value).encode() for value in objects] + raw_lines
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "data.jsonl"
        path.write_bytes(damaged(b"\n".join(lines), hurt))
        run_ingest(table_params(path, "jsonl"), Path(scratch))


parquet_tables = st.tuples(
    st.integers(0, 6),  # rows
    st.sampled_from([pa.string(), pa.large_string(), pa.binary(), pa.int64(), pa.bool_(), pa.float64()]),
    st.sampled_from([pa.string(), pa.int64(), pa.bool_()]),
    st.data(),
    damage,
)


def check_parquet(drawn) -> None:
    rows, text_type, label_type, data, hurt = drawn
    samples = {
        pa.string(): texts,
        pa.large_string(): texts,
        pa.binary(): st.binary(max_size=20),
        pa.int64(): st.integers(-(2**63), 2**63 - 1),
        pa.bool_(): st.booleans(),
        pa.float64(): st.floats(),
    }
    column = {
        pa.string(): st.sampled_from([*LABELS, "other"]),
        pa.int64(): st.integers(0, 1),
        pa.bool_(): st.booleans(),
    }

    def drawn_column(kind, strategy):
        return pa.array([data.draw(st.one_of(st.none(), strategy)) for _ in range(rows)], kind)

    table = pa.table(
        {"text": drawn_column(text_type, samples[text_type]), "label": drawn_column(label_type, column[label_type])}
    )
    with tempfile.TemporaryDirectory() as scratch:
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        path = Path(scratch) / "data.parquet"
        path.write_bytes(damaged(buffer.getvalue(), hurt))
        run_ingest(table_params(path, "parquet"), Path(scratch))


# A folder tree: (path parts, kind, contents). Names include hidden, odd and undecodable ones.
names = st.one_of(
    st.sampled_from(["ham", "spam", "other", ".hidden", "a.eml", "b", "..."]),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"), min_size=1, max_size=8),
    st.just("caf\udce9"),
)  # the byte 0xE9 in a name: not UTF-8
entries = st.lists(
    st.tuples(
        st.lists(names, min_size=1, max_size=4),
        st.sampled_from(["file", "file", "file", "link_out", "link_in", "link_loop", "fifo"]),
        st.one_of(st.binary(max_size=300), st.sampled_from([b"Subject: hi\n\nhello there", b"\x00\x01binary", b""])),
    ),
    max_size=10,
)


def build_tree(root: Path, drawn) -> None:
    for parts, kind, body in drawn:
        path = root.joinpath(*parts)
        if path.exists() or path.is_symlink():
            continue  # the tree already has something there (writing into a FIFO would block): keep it
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if kind == "file":
                path.write_bytes(body)
            elif kind == "fifo":
                os.mkfifo(path)
            else:
                os.symlink({"link_out": "/etc/passwd", "link_in": "../ham", "link_loop": path.name}[kind], path)
        except OSError:
            continue  # a parent is a file, link or FIFO: no entry here


def mail_params(path: Path) -> IngestParams:
    return IngestParams(
        format="mail_dir",
        path=str(path),
        labels=LABELS,
        folder_labels={"ham": "ham", "spam": "spam"},
        max_text_bytes=200,
    )


def check_mail_folder(drawn) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "corpus"
        (root / "ham").mkdir(parents=True)
        (root / "spam").mkdir()
        build_tree(root, drawn)
        out = Path(scratch) / "out"
        out.mkdir()
        run_ingest(mail_params(root), out)


members = st.lists(
    st.tuples(
        st.one_of(
            st.lists(names, min_size=1, max_size=3).map("/".join),
            st.sampled_from(["../up.eml", "/abs.eml", "ham/../../x", "./ham/dot.eml", "ham/", ""]),
        ),
        st.sampled_from(
            [
                tarfile.REGTYPE,
                tarfile.REGTYPE,
                tarfile.SYMTYPE,
                tarfile.LNKTYPE,
                tarfile.FIFOTYPE,
                tarfile.CHRTYPE,
                tarfile.DIRTYPE,
            ]
        ),
        st.binary(max_size=300),
        st.integers(0, 3),  # declared size beyond the data (a lying header), in KiB
    ),
    max_size=8,
)
tar_sources = st.tuples(members, st.sampled_from(["w", "w:gz", "w:bz2", "w:xz"]), damage)


def check_tar(drawn) -> None:
    listed, mode, hurt = drawn
    with tempfile.TemporaryDirectory() as scratch:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode=mode, format=tarfile.GNU_FORMAT) as archive:
            for base in ("ham/seed.eml", "spam/seed.eml"):  # the labelled folders exist
                info = tarfile.TarInfo(base)
                info.size = 16
                archive.addfile(info, io.BytesIO(b"Subject: seed\n\nx"))
            for name, kind, body, _ in listed:
                info = tarfile.TarInfo(name)
                info.type = kind
                if kind == tarfile.REGTYPE:
                    info.size = len(body)
                else:
                    info.linkname = "/etc/passwd"
                archive.addfile(info, io.BytesIO(body) if kind == tarfile.REGTYPE else None)
        path = Path(scratch) / "corpus.tar"
        path.write_bytes(damaged(buffer.getvalue(), hurt))
        run_ingest(mail_params(path), Path(scratch))


# Params: the test params as YAML text, with keys and values replaced, sections repeated, aliases.
scalars = st.one_of(
    st.integers(),
    st.floats(),
    st.booleans(),
    st.none(),
    st.text(max_size=30),
    st.sampled_from([".inf", "-.inf", ".nan", "1e400", "10" * 200, "*a", "&a [1]", "[", "{"]),
)
params_edits = st.lists(
    st.tuples(st.sampled_from(["replace", "add", "repeat", "alias", "delete"]), st.integers(0, 200), scalars),
    max_size=4,
)


def check_params(drawn) -> None:
    lines = FIXTURE_PARAMS.read_text().splitlines()
    for action, at, value in drawn:
        at %= len(lines)
        key = lines[at].split(":")[0]
        if action == "replace" and ":" in lines[at]:
            lines[at] = f"{key}: {yaml.safe_dump(value).splitlines()[0] if not isinstance(value, str) else value}"
        elif action == "add":
            lines.insert(at, f"{key or 'x'}_extra: {value}")
        elif action == "repeat":
            lines.append(lines[at])
        elif action == "alias":
            lines[at:at] = ["bomb: &a [x, x, x]", "boom: [*a, *a, *a]"]
        elif action == "delete":
            del lines[at]
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "params.yaml"
        path.write_text("\n".join(lines) + "\n")
        try:
            load_params(path, check_paths=False)
        except ParamsError as exc:
            assert str(exc) and len(str(exc)) < 5000


conll_lines = st.lists(
    st.one_of(
        st.tuples(
            st.sampled_from(["Anna", "Rome", "-DOCSTART-", "@user", "#tag", "", "x y", "\u00e9", "\ufeffw"]),
            st.lists(st.sampled_from(["NNP", "B-NP", "_", "0"]), max_size=3),  # middle columns
            st.sampled_from(["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "S-PER", "E-LOC", "B-ORG", "I-", "B-", "o", ""]),
            st.sampled_from(["\t", " ", "  ", "\t\t", " \t"]),
        ).map(lambda t: t[3].join([t[0], *t[1], t[2]]).strip(" ") if t[2] else t[0]),
        st.sampled_from(["", " ", "\t", "-DOCSTART- -X- O O", "single"]),
    ),
    max_size=40,
)
conll_sources = st.tuples(
    conll_lines,
    st.sampled_from(["iob1", "iob2", "bioes"]),
    st.sampled_from(["\n", "\r\n"]),
    st.booleans(),  # a BOM
    damage,
)


def check_conll(drawn) -> None:
    from reprolab.data.sentences import SentenceRules

    lines, scheme, newline, bom, hurt = drawn
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "data.conll"
        data = ("\ufeff" if bom else "") + newline.join(lines) + newline
        path.write_bytes(damaged(data.encode("utf-8"), hurt))
        p = IngestParams(format="conll", path=str(path), labels=["PER", "LOC"], tag_scheme=scheme, max_text_bytes=60)
        run_ingest(p, Path(scratch), SentenceRules(p))


# (name, strategy, check) for each reader and the params loader.
CASES = [
    ("csv", csv_tables, check_csv),
    ("jsonl", jsonl_lines, check_jsonl),
    ("parquet", parquet_tables, check_parquet),
    ("mail_folder", entries, check_mail_folder),
    ("tar", tar_sources, check_tar),
    ("conll", conll_sources, check_conll),
    ("params", params_edits, check_params),
]
