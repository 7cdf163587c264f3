"""Learning-curve figures (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: write files only
import matplotlib.pyplot as plt  # noqa: E402


def plot_learning_curve(history: list[dict], path: str | Path, title: str = "") -> Path:
    """Training loss and validation error (per prediction method) against epochs.

    ``history``: the per-epoch records as written to metrics.jsonl.
    """
    path = Path(path)
    epochs = [r["epoch"] for r in history]
    fig, (ax_loss, ax_err) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [r["train_loss"] for r in history], marker="o")
    ax_loss.set(xlabel="epoch", ylabel="training loss (sum over layers)", title="loss")
    methods = sorted({m for r in history for m in r["val_error"]})
    for method in methods:
        pts = [(r["epoch"], 100 * r["val_error"][method]) for r in history if method in r["val_error"]]
        ax_err.plot(*zip(*pts), marker="o", label=method)
    ax_err.set(xlabel="epoch", ylabel="validation error (%)", title="validation error")
    if methods:
        ax_err.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
