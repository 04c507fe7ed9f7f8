"""The CRF baseline: features by the CoNLL recipe, deterministic training, and better than always-O."""

import random

from reprolab.results.crf_baseline import CrfTagger, shape, word_features
from reprolab.results.entity_metrics import entity_f1

NAMES = ["Anna", "Bo", "Carla", "Dev", "Eli", "Fay", "Gus", "Hana"]
PLACES = ["Rome", "Oslo", "Lima", "Kyiv", "Doha", "Baku"]
FILLER = ["we", "saw", "today", "and", "then", "left", "happy", "with", "friends"]


def sentences(count: int, seed: int):
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        words, tags = [], []
        for _ in range(rng.randint(3, 8)):
            kind = rng.random()
            if kind < 0.2:
                words.append(rng.choice(NAMES)), tags.append("B-PER")
            elif kind < 0.3:
                words += ["in", rng.choice(PLACES)]
                tags += ["O", "B-LOC"]
            else:
                words.append(rng.choice(FILLER)), tags.append("O")
        out.append((words, tags))
    return out


def test_word_shape_and_neighbour_features():
    assert [shape(w) for w in ("Anna", "B2B", "2026-12", "@user")] == ["Xx", "XdX", "d-d", "@x"]
    features = word_features(["in", "Rome", "today"], 1)
    assert {
        "lower=rome",
        "title=True",
        "shape=Xx",
        "prefix2=Ro",
        "suffix3=ome",
        "-1:lower=in",
        "+1:lower=today",
    } <= set(features)
    assert "BOS" in word_features(["Rome"], 0) and "EOS" in word_features(["Rome"], 0)


def test_the_crf_beats_always_o_and_trains_the_same_model_twice():
    train, test = sentences(200, seed=1), sentences(60, seed=2)
    args = ([w for w, _ in train], [t for _, t in train], 0.1, 0.01, 50)
    crf, again = CrfTagger(*args), CrfTagger(*args)
    truth = [t for _, t in test]
    predicted = [crf.tag(w) for w, _ in test]
    assert entity_f1(truth, [["O"] * len(t) for t in truth]) == 0.0
    assert entity_f1(truth, predicted) > 0.9
    assert predicted == [again.tag(w) for w, _ in test]
    marginals = crf.marginals(test[0][0])
    assert len(marginals) == len(test[0][0]) and all(abs(sum(row) - 1) < 1e-6 for row in marginals)
    assert crf.labels == ["B-LOC", "B-PER", "O"]
