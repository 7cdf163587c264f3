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


def plot_receptive_fields(weight, image_shape: tuple[int, int], path: str | Path, count: int = 100,
                          title: str = "") -> Path:
    """The incoming weights of the first ``count`` units of a first layer over the image (its first
    H*W inputs; a recurrent layer's top-down inputs are not drawn), each on its own symmetric
    colour scale, in a square grid (paper figure 2)."""
    import math

    path = Path(path)
    h, w = image_shape
    fields = weight.detach().float().cpu()[:count, : h * w]
    side = math.ceil(math.sqrt(len(fields)))
    fig, axes = plt.subplots(side, side, figsize=(side, side))
    for ax in getattr(axes, "flat", [axes]):
        ax.axis("off")
    for ax, field in zip(getattr(axes, "flat", [axes]), fields):
        scale = float(field.abs().max()) or 1.0
        ax.imshow(field.reshape(h, w).numpy(), cmap="bwr", vmin=-scale, vmax=scale)
    fig.suptitle(title or "first-layer receptive fields")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
