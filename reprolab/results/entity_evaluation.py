"""Evaluation of a tagger: the fine-tuned model and the CRF baseline on the same test sentences.

The model's windows are read back to one tag per word (`word_alignment.words_of`), through the
prediction path `reprolab predict` takes; each model's section of metrics.json is seqeval's entity
scores (`entity_metrics`) with each tag's precision, recall and F1 over words; the paired comparison
is `entity_significance`'s, by document where the source has them. Per-word predictions are DVC plot
data (a confusion plot of tags), the classic per-type tables are reports/test_report.txt, and the tag
confusion is a figure.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
from seqeval.metrics import classification_report as entity_report
from sklearn.metrics import classification_report as tag_report

from reprolab import paths, storage
from reprolab.encoding.word_alignment import words_of
from reprolab.errors import StageError
from reprolab.model import runtime
from reprolab.params import Params
from reprolab.results import entity_metrics, evaluation_figures
from reprolab.results.crf_baseline import CrfTagger
from reprolab.results.entity_significance import compare_taggers
from reprolab.results.evaluation import Contenders, Evaluation
from reprolab.tasks.base import Task


def word_probabilities(test: runtime.TokenData, probs: np.ndarray, ids: list[str], words: list[list[str]]) -> list:
    """Each test sentence's tag probabilities per word (rows: words), in the clean split's order."""
    try:
        found, per_word = words_of(test.ids, test.word_index, probs)
    except ValueError as exc:
        raise StageError(f"{paths.token_split('test')}: {exc}; run `dvc repro` to tokenize again") from None
    if found != ids or any(len(p) != len(w) for p, w in zip(per_word, words, strict=True)):
        raise StageError(
            f"{paths.token_split('test')} and {paths.clean_split('test')} hold different sentences or words: "
            "run `dvc repro` to bring them in step"
        )
    return per_word


def _flat(sentences: list[list[str]]) -> list[str]:
    return list(itertools.chain.from_iterable(sentences))


def tag_scores(truth: list[list[str]], predicted: list[list[str]], names: list[str]) -> dict[str, Any]:
    """Each tag's precision, recall, F1 and support over words (sklearn), O included."""
    report = tag_report(_flat(truth), _flat(predicted), labels=names, output_dict=True, zero_division=0)
    return {tag: {k: (int(v) if k == "support" else float(v)) for k, v in report[tag].items()} for tag in names}


def predictions_csv(ids: list[str], words: list[list[str]], truth, predicted, scores) -> str:
    """One row per test word: its sentence, position, the word, its true and predicted tag and the
    predicted tag's probability; the words and ids are user data, so cells are guarded."""
    rows = [
        [sentence, position, word, actual, tag, float(score)]
        for sentence, sentence_words, true_tags, tags, sentence_scores in zip(
            ids, words, truth, predicted, scores, strict=True
        )
        for position, (word, actual, tag, score) in enumerate(
            zip(sentence_words, true_tags, tags, sentence_scores, strict=True)
        )
    ]
    return storage.csv_text(["id", "position", "word", "actual", "predicted", "score"], rows)


def evaluate_sentences(task: Task, params: Params, contenders: Contenders, files: paths.ScoredModel) -> Evaluation:
    """The tagger and its reference on the test split's sentences, per entity and per word: the CRF
    fitted on the clean training sentences, or another tagger through the prediction path."""
    names = task.label_names(params.ingest.class_names)
    test = runtime.TokenData.read(paths.token_split("test"))
    clean_test = storage.read_parquet(paths.clean_split("test"), ["id", "group", "tokens", "tags"]).to_pydict()
    ids, words, truth = clean_test["id"], clean_test["tokens"], clean_test["tags"]

    def tags_and_scores(predictor) -> tuple[list[list[str]], list[np.ndarray]]:
        per_word = word_probabilities(test, predictor.probabilities(test.sequences), ids, words)
        return [[names[i] for i in p.argmax(axis=1)] for p in per_word], [p.max(axis=1) for p in per_word]

    tags, scores = {}, {}
    tags[contenders.name], scores[contenders.name] = tags_and_scores(contenders.predictor)
    if contenders.reference_predictor is not None:
        tags[contenders.reference], scores[contenders.reference] = tags_and_scores(contenders.reference_predictor)
    else:
        clean_train = storage.read_parquet(paths.clean_split("train"), ["tokens", "tags"]).to_pydict()
        crf = params.evaluate.crf
        tagger = CrfTagger(clean_train["tokens"], clean_train["tags"], crf.c1, crf.c2, crf.max_iterations)
        tags[contenders.reference] = [tagger.tag(sentence) for sentence in words]
        scores[contenders.reference] = [
            tagger.probabilities(sentence, sentence_tags)
            for sentence, sentence_tags in zip(words, tags[contenders.reference], strict=True)
        ]
    metrics: dict[str, Any] = {
        model: entity_metrics.entity_scores(truth, predicted) | {"per_tag": tag_scores(truth, predicted, names)}
        for model, predicted in tags.items()
    }
    paired = compare_taggers(truth, tags[contenders.reference], tags[contenders.name], clean_test["group"])
    metrics[contenders.versus] = {
        f"{task.score}_difference": paired.difference,
        "interval_low": paired.interval[0],
        "interval_high": paired.interval[1],
        "randomization_p": paired.randomization_p,
        "resampled": f"{paired.units} {paired.unit}s",
        "verdict": paired.verdict_for(contenders.reference, contenders.name),
    }
    metrics |= {"test_rows": len(ids), "test_words": sum(map(len, words))}
    written = {
        files.plots / f"test_predictions_{model}.csv": predictions_csv(ids, words, truth, predicted, scores[model])
        for model, predicted in tags.items()
    }
    written[files.test_report] = "\n".join(
        f"{model} ({entity_metrics.MODE} entities)\n{entity_report(truth, predicted, digits=4, zero_division=0)}\n"
        f"{model} (tags, per word)\n"
        f"{tag_report(_flat(truth), _flat(predicted), labels=names, digits=4, zero_division=0)}"
        for model, predicted in tags.items()
    )
    # The confusion of the tags scored above (the CRF's Viterbi path, not its per-word marginals' argmax).
    tag_id = {name: i for i, name in enumerate(names)}
    word_truth = np.array([tag_id[tag] for sentence in truth for tag in sentence])
    one_hot = {
        model: np.eye(len(names))[[tag_id[tag] for sentence in predicted for tag in sentence]]
        for model, predicted in tags.items()
    }
    drawn = [evaluation_figures.confusion_matrices(word_truth, one_hot, names, files.figures / "tag_confusion.png")]
    return Evaluation(metrics, written, drawn)
