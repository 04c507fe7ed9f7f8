"""PNG figures whose bytes depend only on what they show, so DVC and git see no change without one."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from reprolab import storage


def save_png(fig, dest: Path) -> Path:
    """Write a matplotlib figure atomically, without the metadata (software version) that varies, and close it."""
    with storage.atomic_path(dest, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return dest
