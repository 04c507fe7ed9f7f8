"""Entity scores against figures computed by hand on a constructed example."""

import pytest

from reprolab.results.entity_metrics import entity_agreement, entity_f1, entity_scores, spans

# Truth: PER "Anna Lee", LOC "Rome" | ORG "Acme", LOC "Oslo".
TRUTH = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O", "B-LOC"]]
# Predicted: PER right; "Rome" as ORG (a wrong type: one false positive ORG, one missed LOC);
# "Acme" right; "Oslo" missed; an extra PER on "O" of sentence 2.
PREDICTED = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "B-PER", "O"]]


def test_entity_scores_match_the_hand_count():
    scores = entity_scores(TRUTH, PREDICTED)
    # 4 true entities, 4 predicted, 2 right: precision 2/4, recall 2/4, F1 0.5.
    assert scores["entity_micro_precision"] == pytest.approx(0.5)
    assert scores["entity_micro_recall"] == pytest.approx(0.5)
    assert scores["entity_micro_f1"] == pytest.approx(0.5) == entity_f1(TRUTH, PREDICTED)
    # Per type: PER p=1/2 r=1/1 f=2/3; ORG p=1/2 r=1/1 f=2/3; LOC p=0 r=0 f=0. Macro F1 = 4/9.
    assert scores["per_type"]["PER"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})
    assert scores["per_type"]["LOC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    assert scores["entity_macro_f1"] == pytest.approx(4 / 9)
    assert scores["token_accuracy"] == pytest.approx(4 / 7)  # 7 words, 4 tags right
    assert scores["entities"] == 4 and scores["mode"] == "conlleval"


def test_conlleval_mode_counts_a_stray_i_as_an_entity_and_strict_mode_does_not():
    truth = [["B-PER", "O"]]
    stray = [["I-PER", "O"]]
    assert entity_f1(truth, stray) == 1.0
    assert entity_f1(truth, stray, mode="strict") == 0.0
    with pytest.raises(ValueError, match="conlleval or strict"):
        entity_f1(truth, stray, mode="lenient")


def test_nothing_predicted_scores_zero_not_an_error():
    assert entity_f1(TRUTH, [["O"] * 4, ["O"] * 3]) == 0.0


def test_spans_are_the_entities_the_scores_count_and_agreement_is_shared_over_found():
    # Sentence 1: PER words 0-1, LOC word 3; a stray I-ORG starts an entity, as conlleval counts it.
    assert spans(["B-PER", "I-PER", "O", "B-LOC", "I-ORG"]) == [("PER", 0, 2), ("LOC", 3, 4), ("ORG", 4, 5)]
    # TRUTH holds 4 entities, PREDICTED 4; both find PER (0, 0-2) and ORG (1, 0-1): 2 of the 6 either finds.
    assert entity_agreement(TRUTH, PREDICTED) == pytest.approx(2 / 6)
    assert entity_agreement(TRUTH, TRUTH) == 1.0 and entity_agreement([["O"]], [["O"]]) == 1.0
