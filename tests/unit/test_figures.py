import numpy as np
import pytest
from sklearn.metrics import precision_recall_fscore_support

from reprolab.results import evaluation_figures, figures

PNG = b"\x89PNG\r\n\x1a\n"


def test_two_class_figures_include_the_threshold_plot_and_are_byte_stable(tmp_path):
    labels = np.array([0, 1, 0, 1, 1])
    probs = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.45, 0.55], [0.9, 0.1]])
    results = {"transformer": probs, "baseline": probs[::-1]}
    files = evaluation_figures.test_figures(labels, results, ["ham", "spam"], tmp_path)
    assert [f.name for f in files] == ["confusion_matrix.png", "per_class.png", "roc.png", "pr.png", "threshold.png"]
    first = {f.name: f.read_bytes() for f in files}
    assert all(data[:8] == PNG for data in first.values())
    evaluation_figures.test_figures(labels, results, ["ham", "spam"], tmp_path)
    assert {f.name: f.read_bytes() for f in files} == first  # byte-stable for DVC


def test_many_classes_get_no_threshold_plot_and_say_how_curves_average(tmp_path):
    names = [f"a rather long class name {k}" for k in range(5)]
    rng = np.random.default_rng(0)
    labels = np.arange(50) % 5
    probs = rng.dirichlet(np.ones(5), size=50)
    files = evaluation_figures.test_figures(labels, {"transformer": probs}, names, tmp_path)
    assert [f.name for f in files] == ["confusion_matrix.png", "per_class.png", "roc.png", "pr.png"]
    assert evaluation_figures.averaging(names) == "micro-average over 5 classes, one-vs-rest"
    assert evaluation_figures.averaging(["ham", "spam"]) == "positive class: spam"
    assert figures.short(names[0]) == "a rather long cla…"


def test_threshold_scores_at_one_half_are_the_positive_class_scores_of_argmax():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 300)
    positive_probability = np.clip(labels * 0.3 + rng.random(300) * 0.7, 0, 1)
    probs = np.column_stack([1 - positive_probability, positive_probability])
    precision, recall, f1 = evaluation_figures.threshold_scores(labels == 1, positive_probability, np.array([0.5]))
    expected = precision_recall_fscore_support(labels, probs.argmax(axis=1), labels=[1], zero_division=0)
    assert (precision[0], recall[0], f1[0]) == pytest.approx([float(v[0]) for v in expected[:3]])
    nothing_called = evaluation_figures.threshold_scores(labels == 1, positive_probability, np.array([2.0]))
    assert [float(v[0]) for v in nothing_called] == [1.0, 0.0, 0.0]


def test_row_shares_normalise_each_actual_class():
    shares = evaluation_figures.row_shares(np.array([[90, 10], [3, 1], [0, 0]]))
    assert shares.tolist() == [[0.9, 0.1], [0.75, 0.25], [0.0, 0.0]]


def test_training_curves_draw_steps_and_epochs(tmp_path):
    steps = [{"step": s, "epoch": 1 + s // 10, "train_loss": 1 / s, "learning_rate": 1e-4} for s in range(1, 20)]
    history = [
        {"epoch": e, "step": 10 * e, "train_loss": 0.5 / e, "val_loss": 0.6 / e, "val_macro_f1": 0.8 + e / 100}
        for e in (1, 2)
    ]
    assert (
        figures.training_curves(steps, history, "val_macro_f1", "macro-F1", tmp_path / "c.png").read_bytes()[:8] == PNG
    )


def test_one_epoch_puts_validation_on_the_step_axis_with_its_value_written():
    """With one epoch (the default), the per-epoch panels were a lone dot each on an epoch axis: the
    validation loss is now a point at its step beside the training loss, its F1 written out."""
    steps = [{"step": s, "epoch": 1, "train_loss": 1 / s, "learning_rate": 1e-4} for s in range(20, 301, 20)]
    history = [{"epoch": 1, "step": 301, "train_loss": 0.17, "val_loss": 0.055, "val_macro_f1": 0.985711}]
    fig = figures.training_figure(steps, history, "val_macro_f1", "macro-F1")
    loss_ax, f1_ax = fig.axes
    training, validation = loss_ax.lines
    assert list(training.get_xdata()) == list(range(20, 301, 20)) and list(validation.get_xdata()) == [301]
    assert list(validation.get_ydata()) == [0.055]
    assert [t.get_text() for t in f1_ax.texts] == ["0.986"]
    low, high = f1_ax.get_ylim()
    assert 0.9 <= low < 0.985711 < high <= 1.01  # not 0-1, where 0.95 and 1.00 look alike


def test_scores_near_one_keep_their_distance_from_one():
    """An AUC of 0.99957 printed 1.000."""
    assert figures.score_text(0.99957) == "0.9996"
    assert figures.score_text(0.9876) == "0.988" and figures.score_text(1.0) == "1.000"
    assert figures.score_text(0.0004) == "0.0004" and figures.score_text(0.0) == "0.000"
    assert figures.score_limits([0.97, 0.99, 1.0]) == pytest.approx((0.95, 1.0025))
    assert figures.score_limits([0.2, 0.9])[0] == pytest.approx(0.15) and figures.score_limits([0.001, 1])[0] == 0


def test_per_class_scores_are_drawn_on_a_range_that_tells_them_apart():
    """On a 0-1 axis, per-class bars of 0.98 and 1.00 looked the same."""
    labels = np.array([0] * 50 + [1] * 50)
    probs = np.tile([[0.9, 0.1]], (100, 1))
    probs[50:] = [0.1, 0.9]
    probs[0] = [0.2, 0.8]  # one ham called spam: every score between 0.98 and 1.00
    worse = probs.copy()
    worse[50:60] = [0.8, 0.2]  # ten spam called ham: a baseline scoring 0.83-1.00
    figure = evaluation_figures.per_class_figure(labels, {"transformer": probs, "baseline": worse}, ["ham", "spam"])
    transformer, baseline = figure.axes
    written = sorted(t.get_text() for t in transformer.texts)
    assert written == sorted(["1.000", "0.980", "0.980", "1.000", "0.990", "0.990"])
    # One range for both panels, so that their points compare by eye: a round 0.05 below the lowest
    # score (the baseline's spam recall, 40/50 = 0.80), whichever panel holds it.
    assert transformer.get_ylim() == baseline.get_ylim() == pytest.approx((0.75, 1.0125))
