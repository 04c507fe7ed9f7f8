"""PNG figures drawn offline with matplotlib, whose bytes depend only on what they show (so DVC and git
see no change without one), and the training curves (train). The test-split figures are in
`reprolab.results.evaluation_figures`, so that a change to them does not re-run training.
"""

from __future__ import annotations

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


def training_curves(steps: list[dict], history: list[dict], dest: Path) -> Path:
    """Training loss per logged step; validation loss and macro-F1 per epoch (training loss beside)."""
    fig, (loss_ax, epoch_ax, f1_ax) = plt.subplots(1, 3, figsize=(15, 4))
    loss_ax.plot([r["step"] for r in steps], [r["train_loss"] for r in steps], color="tab:blue")
    loss_ax.set(
        xlabel="optimizer step",
        ylabel="training loss (mean over the logged window)",
        title="Training loss per logged step",
    )
    epochs = [int(r["epoch"]) for r in history]
    epoch_ax.plot(epochs, [r["train_loss"] for r in history], marker="o", label="training (epoch mean)")
    epoch_ax.plot(epochs, [r["val_loss"] for r in history], marker="o", label="validation")
    epoch_ax.set(xlabel="epoch", ylabel="loss", title="Loss per epoch", xticks=epochs)
    epoch_ax.legend()
    f1_ax.plot(epochs, [r["val_macro_f1"] for r in history], marker="o", color="tab:green")
    f1_ax.set(xlabel="epoch", ylabel="validation macro-F1", title="Validation macro-F1 per epoch", xticks=epochs)
    fig.tight_layout()
    return save_png(fig, dest)
