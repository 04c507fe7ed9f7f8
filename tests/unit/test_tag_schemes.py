"""IOB1 and BIOES read into IOB2 on known cases; a sequence that breaks its scheme is refused, named."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reprolab.data.tag_schemes import TagError, mention_types, split_tag, to_iob2


def test_iob1_opens_entities_with_i_and_uses_b_between_two_of_a_type():
    iob1 = ["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-ORG", "I-MISC", "I-MISC"]
    assert to_iob2(iob1, "iob1") == ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "B-ORG", "B-MISC", "I-MISC"]


def test_bioes_singles_and_ends_become_iob2():
    bioes = ["S-PER", "B-LOC", "I-LOC", "E-LOC", "O", "B-ORG", "E-ORG", "S-ORG"]
    assert to_iob2(bioes, "bioes") == ["B-PER", "B-LOC", "I-LOC", "I-LOC", "O", "B-ORG", "I-ORG", "B-ORG"]


def test_types_keep_their_dashes():
    assert split_tag("B-geo-loc", "iob2") == ("B", "geo-loc")
    assert to_iob2(["B-geo-loc", "I-geo-loc"], "iob2") == ["B-geo-loc", "I-geo-loc"]
    assert mention_types(["B-geo-loc", "I-geo-loc", "O", "B-person", "B-person"]) == ["geo-loc", "person", "person"]


@pytest.mark.parametrize(
    ("tags", "scheme", "message"),
    [
        (["O", "I-PER"], "iob2", r"word 2: 'I-PER' after O continues no entity under IOB2 \(is the file IOB1"),
        (["B-PER", "I-LOC"], "iob2", r"word 2: 'I-LOC' after an entity of type 'PER'"),
        (["I-LOC"], "bioes", r"word 1: 'I-LOC' continues no entity under BIOES"),
        (["B-LOC", "O"], "bioes", r"word 2: 'O' while the 'LOC' entity opened by B- is not closed"),
        (["B-LOC", "E-PER"], "bioes", r"word 2: 'E-PER' while the 'LOC' entity"),
        (["B-LOC", "I-LOC"], "bioes", r"the sentence ends inside a 'LOC' entity"),
    ],
)
def test_a_sequence_that_breaks_its_scheme_is_refused(tags, scheme, message):
    with pytest.raises(TagError, match=message) as refused:
        to_iob2(tags, scheme)
    assert refused.value.reason == "invalid_tag_sequence"


@pytest.mark.parametrize(
    ("tag", "scheme"), [("X-PER", "iob2"), ("B-", "iob2"), ("PER", "iob1"), ("E-PER", "iob2"), ("o", "bioes")]
)
def test_a_tag_outside_its_scheme_is_malformed(tag, scheme):
    with pytest.raises(TagError, match=f"tag {tag!r} is not O or") as refused:
        to_iob2([tag], scheme)
    assert refused.value.reason == "malformed_tag"


@st.composite
def iob2_sequences(draw):
    """Valid IOB2: entities of a few types, some adjacent, with O between others."""
    tags = []
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.sampled_from(["O", "PER", "geo-loc"]))
        if kind == "O":
            tags.append("O")
        else:
            tags += [f"B-{kind}"] + [f"I-{kind}"] * draw(st.integers(0, 3))
    return tags


def as_bioes(iob2: list[str]) -> list[str]:
    out = []
    for position, tag in enumerate(iob2):
        following = iob2[position + 1] if position + 1 < len(iob2) else "O"
        last = following != f"I-{tag[2:]}"
        out.append(
            tag if tag == "O" else f"{('S' if last else 'B') if tag[0] == 'B' else ('E' if last else 'I')}-{tag[2:]}"
        )
    return out


def as_iob1(iob2: list[str]) -> list[str]:
    out, before = [], "O"
    for tag in iob2:
        same_type_follows = tag.startswith("B-") and before != "O" and before[2:] == tag[2:]
        out.append(tag if tag == "O" or same_type_follows else f"I-{tag[2:]}")
        before = tag
    return out


@given(iob2_sequences())
def test_every_scheme_reads_back_the_same_entities(tags):
    assert to_iob2(tags, "iob2") == tags
    assert to_iob2(as_bioes(tags), "bioes") == tags
    assert to_iob2(as_iob1(tags), "iob1") == tags
