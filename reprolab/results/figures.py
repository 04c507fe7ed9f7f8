"""PNG figures drawn offline with matplotlib, whose bytes depend only on what they show (so DVC and git
see no change without one), and the training curves (train). The test-split figures are in
`reprolab.results.evaluation_figures`, so that a change to them does not re-run training. Scores are
written with `score_text` and drawn on `score_limits`, so that figures near 1 stay readable.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt

from reprolab import storage

LABEL_CHARS = 18  # class names are cut to this on axes, so many classes stay legible


def save_png(fig, dest: Path) -> Path:
    """Write a matplotlib figure atomically, without the metadata (software version) that varies, and close it."""
    with storage.atomic_path(dest, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return dest


def short(name: str) -> str:
    return name if len(name) <= LABEL_CHARS else name[: LABEL_CHARS - 1] + "…"


def score_text(value: float, digits: int = 3) -> str:
    """A score in [0, 1] with the fewest digits (from `digits`) that do not round it to 0 or 1 when it
    is neither: an AUC of 0.99957 reads 0.9996, not a perfect 1.000."""
    while digits < 8 and 0 < value < 1 and round(value, digits) in (0, 1):
        digits += 1
    return f"{value:.{digits}f}"


def score_limits(values) -> tuple[float, float]:
    """The y range of a score axis: from a round 0.05 below the lowest score (never below 0) to just
    above 1, so that differences between scores near 1 are visible."""
    low = max(0.0, math.floor((min(values) - 0.01) * 20) / 20)
    return low, 1 + (1 - low) * 0.05


def training_curves(steps: list[dict], history: list[dict], score: str, title: str, dest: Path) -> Path:
    return save_png(training_figure(steps, history, score, title), dest)


def training_figure(steps: list[dict], history: list[dict], score: str, title: str):
    """Loss against the optimizer step: training per logged step, validation at each epoch's end (on the
    same axis, so one epoch is a point at its step, not a lone dot on an epoch axis); and the validation
    `score` (the early-stopping one, named `title`) at each epoch's end, its value written beside it, on a range that
    shows small changes."""
    fig, (loss_ax, f1_ax) = plt.subplots(1, 2, figsize=(12, 4), sharex=True)
    ends = [r["step"] for r in history]
    loss_ax.plot(
        [r["step"] for r in steps], [r["train_loss"] for r in steps], color="tab:blue", label="training (logged window)"
    )
    loss_ax.plot(ends, [r["val_loss"] for r in history], marker="o", color="tab:orange", label="validation (epoch end)")
    f1 = [r[score] for r in history]
    f1_ax.plot(ends, f1, marker="o", color="tab:green")
    for step, value in zip(ends, f1, strict=True):
        f1_ax.annotate(score_text(value), (step, value), textcoords="offset points", xytext=(0, 6), ha="center")
    for ax in (loss_ax, f1_ax):
        for step in ends[:-1]:
            ax.axvline(step, color="grey", linestyle=":", linewidth=0.8)  # epoch boundaries
    loss_ax.set(xlabel="optimizer step", ylabel="loss", title="Loss", xlim=(0, max([*ends, 1]) * 1.03))
    loss_ax.legend()
    f1_ax.set(
        xlabel="optimizer step",
        ylabel=f"validation {title}",
        title=f"Validation {title} at each epoch end",
        ylim=score_limits(f1),
    )
    fig.tight_layout()
    return fig
