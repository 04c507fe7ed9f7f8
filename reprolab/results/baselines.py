"""The classical peers the fine-tuned model is scored against, on the same rows."""

from __future__ import annotations

import numpy as np
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from reprolab.params import BaselineParams


def top_terms(texts: list[str], ngram_max: int, max_features: int) -> list[str]:
    """The `max_features` most frequent word n-grams, equal counts broken by the term itself.

    sklearn's own `max_features` cut breaks ties with an unstable argsort whose order depends on the
    SIMD sort numpy dispatches to (AVX-512 or not), so the same data gave a different vocabulary, and
    so different baseline metrics, on different CPUs. A stable sort over the alphabetical vocabulary
    picks the same terms everywhere."""
    counter = CountVectorizer(ngram_range=(1, ngram_max))
    counts = np.asarray(counter.fit_transform(texts).sum(axis=0)).ravel()
    alphabetical = counter.get_feature_names_out()
    return sorted(alphabetical[np.argsort(-counts, kind="stable")[:max_features]].tolist())


def tfidf_probs(
    train_texts: list[str],
    train_labels: list[int],
    test_texts: list[str],
    p: BaselineParams,
    num_labels: int,
    class_weights: str = "none",
) -> np.ndarray:
    """TF-IDF (word n-grams, sublinear tf) + logistic regression, its classes weighted as the
    transformer's loss is (train.class_weights: none or balanced)."""
    vocabulary = top_terms(train_texts, p.ngram_max, p.max_features)
    model = make_pipeline(
        TfidfVectorizer(vocabulary=vocabulary, ngram_range=(1, p.ngram_max), sublinear_tf=True),
        LogisticRegression(C=p.C, max_iter=2000, class_weight=None if class_weights == "none" else class_weights),
    )
    model.fit(train_texts, train_labels)
    probs = np.zeros((len(test_texts), num_labels))
    probs[:, model.classes_] = model.predict_proba(test_texts)
    return probs
