"""The token classifier's classical peer: a linear-chain CRF (CRFsuite, through python-crfsuite) on
the standard word features of the CoNLL recipe: the lower-cased form, prefixes and suffixes of one to
three characters, the word's shape (`Xxxx`, `dd`), case and digit flags, the neighbouring words'
form and case, and the sentence's boundaries. L-BFGS with L1 and L2 penalties is deterministic:
the same sentences give the same model and tags on every run.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pycrfsuite

_SHAPES = ((re.compile(r"[A-Z]"), "X"), (re.compile(r"[a-z]"), "x"), (re.compile(r"[0-9]"), "d"))
_RUNS = re.compile(r"(.)\1+")


def shape(word: str) -> str:
    """`Anna` -> `Xx`, `B2B` -> `XdX`, `2026-12` -> `d-d`: character classes, runs folded."""
    for pattern, mark in _SHAPES:
        word = pattern.sub(mark, word)
    return _RUNS.sub(r"\1", word)


def _word(word: str, prefix: str) -> list[str]:
    return [
        f"{prefix}lower={word.lower()}",
        f"{prefix}title={word.istitle()}",
        f"{prefix}upper={word.isupper()}",
        f"{prefix}shape={shape(word)}",
    ]


def word_features(words: list[str], i: int) -> list[str]:
    """CRFsuite's string features of word `i` of a sentence."""
    word = words[i]
    features = [
        "bias",
        *_word(word, ""),
        f"digit={word.isdigit()}",
        f"has_digit={any(ch.isdigit() for ch in word)}",
        f"hyphen={'-' in word}",
        f"first_char={word[:1].isalnum()}",  # @mentions, #tags and punctuation
        *(f"prefix{n}={word[:n]}" for n in (1, 2, 3)),
        *(f"suffix{n}={word[-n:]}" for n in (1, 2, 3)),
    ]
    for offset in (-2, -1, 1, 2):
        j = i + offset
        if 0 <= j < len(words):
            features += (
                _word(words[j], f"{offset:+d}:") if abs(offset) == 1 else [f"{offset:+d}:lower={words[j].lower()}"]
            )
        elif abs(offset) == 1:
            features.append("BOS" if offset < 0 else "EOS")
    return features


def sentence_features(words: list[str]) -> list[list[str]]:
    return [word_features(words, i) for i in range(len(words))]


class CrfTagger:
    """A CRF trained on tagged sentences; `tag` gives each word's tag, `marginals` each tag's
    probability per word (rows: words, columns: `labels`)."""

    def __init__(self, sentences: list[list[str]], tags: list[list[str]], c1: float, c2: float, max_iterations: int):
        trainer = pycrfsuite.Trainer(verbose=False)
        for words, sentence_tags in zip(sentences, tags, strict=True):
            trainer.append(sentence_features(words), sentence_tags)
        trainer.set_params({"c1": c1, "c2": c2, "max_iterations": max_iterations, "feature.possible_transitions": True})
        with tempfile.TemporaryDirectory() as folder:
            model = Path(folder) / "crf.model"
            trainer.train(str(model))
            self.tagger = pycrfsuite.Tagger()
            self.tagger.open(str(model))  # read into memory: the file may go
        self.labels = sorted(self.tagger.labels())

    def tag(self, words: list[str]) -> list[str]:
        return self.tagger.tag(sentence_features(words))

    def probabilities(self, words: list[str], tags: list[str]) -> list[float]:
        """The marginal probability of each word's tag in `tags` (its predicted ones, say)."""
        self.tagger.set(sentence_features(words))
        return [self.tagger.marginal(tag, i) for i, tag in enumerate(tags)]

    def marginals(self, words: list[str]) -> list[list[float]]:
        self.tagger.set(sentence_features(words))
        return [[self.tagger.marginal(label, i) for label in self.labels] for i in range(len(words))]
