"""Entity tag schemes read into IOB2, the one scheme stored past ingest.

- IOB2 (`iob2`): every entity opens with `B-TYPE`, continues with `I-TYPE`; `O` is outside.
- IOB1 (`iob1`, CoNLL-2003's original files): `I-TYPE` opens an entity too, `B-TYPE` only where it
  directly follows an entity of the same type.
- BIOES (`bioes`): `S-TYPE` a one-word entity, `B-`/`I-`/`E-` its begin, inside and end.

A sequence that breaks its scheme is refused, not repaired: under IOB2 an `I-` that continues nothing
(after `O`, or after another type) means the file is not IOB2 (often IOB1 declared as IOB2), and a
repair would change its entity counts without a word; under BIOES an entity left open or closed twice.
The message says which tag, where, and which scheme would read it.
"""

from __future__ import annotations

SCHEMES = ("iob1", "iob2", "bioes")
OUTSIDE = "O"
_PREFIXES = {"iob1": ("B", "I"), "iob2": ("B", "I"), "bioes": ("B", "I", "E", "S")}


class TagError(ValueError):
    """A tag sequence that breaks its scheme: (reason, detail) as a reject row gives them."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def split_tag(tag: str, scheme: str) -> tuple[str, str | None]:
    """(prefix, entity type) of a tag; ("O", None) outside. The type is everything after the first '-'
    (WNUT's `B-geo-loc` is of type `geo-loc`)."""
    if tag == OUTSIDE:
        return OUTSIDE, None
    prefix, dash, kind = tag.partition("-")
    if not dash or not kind or prefix not in _PREFIXES[scheme]:
        allowed = ", ".join(f"{p}-TYPE" for p in _PREFIXES[scheme])
        raise TagError("malformed_tag", f"tag {tag!r} is not O or {allowed} (ingest.tag_scheme={scheme})")
    return prefix, kind


def to_iob2(tags: list[str], scheme: str) -> list[str]:
    """The same entities in IOB2; TagError for a sequence that breaks `scheme`."""
    parsed = [split_tag(tag, scheme) for tag in tags]
    if scheme == "iob1":
        return _from_iob1(parsed)
    if scheme == "bioes":
        return _from_bioes(parsed, tags)
    before = [None, *(kind for _, kind in parsed)][: len(parsed)]  # the type of the word before each
    for position, ((prefix, kind), before_kind) in enumerate(zip(parsed, before, strict=True)):
        if prefix == "I" and before_kind != kind:
            opened = "after O" if before_kind is None else f"after an entity of type {before_kind!r}"
            raise TagError(
                "invalid_tag_sequence",
                f"word {position + 1}: {tags[position]!r} {opened} continues no entity under IOB2 "
                "(is the file IOB1? then set ingest.tag_scheme: iob1)",
            )
    return list(tags)


def _from_iob1(parsed: list[tuple[str, str | None]]) -> list[str]:
    out, before = [], None  # the type of the entity the previous word is in
    for prefix, kind in parsed:
        if kind is None:
            out.append(OUTSIDE)
        else:
            out.append(f"{'I' if prefix == 'I' and before == kind else 'B'}-{kind}")
        before = kind
    return out


def _from_bioes(parsed: list[tuple[str, str | None]], tags: list[str]) -> list[str]:
    out, open_kind = [], None  # the type of an entity opened by B- and not yet closed by E-
    for position, (prefix, kind) in enumerate(parsed):
        where = f"word {position + 1}: {tags[position]!r}"
        if open_kind is not None and (prefix not in ("I", "E") or kind != open_kind):
            raise TagError(
                "invalid_tag_sequence", f"{where} while the {open_kind!r} entity opened by B- is not closed by E-"
            )
        if open_kind is None and prefix in ("I", "E"):
            raise TagError("invalid_tag_sequence", f"{where} continues no entity under BIOES (open one with B- or S-)")
        out.append(OUTSIDE if kind is None else f"{'B' if prefix in ('B', 'S') else 'I'}-{kind}")
        open_kind = kind if prefix in ("B", "I") else None
    if open_kind is not None:
        raise TagError("invalid_tag_sequence", f"the sentence ends inside a {open_kind!r} entity (no E- tag closes it)")
    return out


def mention_types(tags: list[str]) -> list[str]:
    """The type of each entity mention of an IOB2 sequence, in order."""
    return [tag[2:] for tag in tags if tag.startswith("B-")]


def tag_names(types: list[str]) -> list[str]:
    """The IOB2 tags of `types` in tag-id order: O, then B- and I- of each type in its order."""
    return [OUTSIDE, *(f"{prefix}-{kind}" for kind in types for prefix in ("B", "I"))]


def continuation_ids(names: list[str]) -> list[int]:
    """Per tag id, the tag a word's later sub-tokens take when every sub-token is labelled: I- for B-."""
    return [names.index(f"I-{name[2:]}") if name.startswith("B-") else i for i, name in enumerate(names)]
