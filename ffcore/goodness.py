"""Goodness, length-only layer normalization and the layer-local FF losses (paper section 2).

Every function here is pure: tensors in, tensors out. Shapes: ``y`` is ``(B, N)``, a batch of
activity vectors of one layer *before* layer normalization.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: The goodness measures of the paper. ``max_*``: positive data should have HIGH activity;
#: ``min_*``: positive data should have LOW activity (section 2 "negative sum of squares", and
#: the unsquared variant of section 7 / footnote 21).
GOODNESS_KINDS = ("max_ssq", "min_ssq", "max_sum", "min_sum")
LOSS_KINDS = ("logistic", "symmetric")

_EPS = 1e-8


def _check_kind(kind: str) -> None:
    if kind not in GOODNESS_KINDS:
        raise ValueError(f"unknown goodness {kind!r}; choose one of {', '.join(GOODNESS_KINDS)}")


def _is_squared(kind: str) -> bool:
    return kind.endswith("ssq")


def goodness_sign(kind: str) -> float:
    """+1 when positive data should have high activity, -1 when it should have low activity."""
    _check_kind(kind)
    return 1.0 if kind.startswith("max") else -1.0


def activity_measure(y: torch.Tensor, kind: str = "max_ssq") -> torch.Tensor:
    """Sum of squared (``*_ssq``) or of absolute (``*_sum``) activities: ``(B, N) -> (B,)``."""
    _check_kind(kind)
    return y.square().sum(dim=-1) if _is_squared(kind) else y.abs().sum(dim=-1)


def goodness(y: torch.Tensor, kind: str = "max_ssq") -> torch.Tensor:
    """Goodness of each activity vector, signed so that higher always means "more positive"."""
    return goodness_sign(kind) * activity_measure(y, kind)


def positive_logit(y: torch.Tensor, threshold: float, kind: str = "max_ssq") -> torch.Tensor:
    """Logit of p(positive) (paper eq. 1): ``sigma(sum_j y_j^2 - theta)`` for ``max_ssq``.

    For the ``min_*`` kinds the sign flips: ``p(positive) = sigma(theta - sum_j y_j^2)``.
    """
    return goodness_sign(kind) * (activity_measure(y, kind) - threshold)


def p_positive(y: torch.Tensor, threshold: float, kind: str = "max_ssq") -> torch.Tensor:
    """Probability that each activity vector came from positive data (paper eq. 1)."""
    return torch.sigmoid(positive_logit(y, threshold, kind))


def layer_norm(y: torch.Tensor, kind: str = "max_ssq") -> torch.Tensor:
    """Length-only layer normalization: keeps the direction, removes all trace of goodness.

    No mean is subtracted (paper footnote 5). The vector is divided by its root-mean-square
    (its length over sqrt(N)), so each component stays O(1) whatever the width: the direction is
    the same as dividing by the length, and default weight initializations stay sensible.
    For the unsquared goodness the *sum* of activities is normalized instead (footnote 21).
    """
    _check_kind(kind)
    if _is_squared(kind):  # the RMS as the length over sqrt(N): one reduction instead of three ops
        scale = torch.linalg.vector_norm(y, dim=-1, keepdim=True) * (y.shape[-1] ** -0.5)
    else:
        scale = y.abs().mean(dim=-1, keepdim=True)
    return y / (scale + _EPS)


def direction(y: torch.Tensor) -> torch.Tensor:
    """Each activity vector's direction at unit RMS: what a readout reads, for every goodness kind.
    L1 and L2 normalization keep the same direction and differ only in scale, but a sparse vector
    divided by its mean absolute value has components of the order of (units / active units),
    170 for a 500-unit ReLU layer with 1% active; at unit RMS they stay near the square root of
    that, so one readout step size suits every kind."""
    return layer_norm(y, "max_ssq")


def ff_loss(
    y_pos: torch.Tensor | None,
    y_neg: torch.Tensor | None,
    threshold: float,
    kind: str = "max_ssq",
    temperature: float = 1.0,
) -> torch.Tensor:
    """The FF logistic loss: ``-log p(positive)`` on positive data plus ``-log p(negative)`` on negative.

    Either phase may be absent, so the positive and negative passes can be applied separately
    (online positive phase, offline "sleep" negative phase). Each present phase is averaged over
    its batch; the result is their sum. ``temperature`` T widens the logistic,
    ``p = sigma(logit / T)``, and scales the loss by T (1: the paper's eq. 1).
    """
    if y_pos is None and y_neg is None:
        raise ValueError("ff_loss needs positive data, negative data, or both")
    loss = torch.zeros(())
    if y_pos is not None:
        # softplus(-l) = -log sigma(l), numerically stable for large |l|
        loss = loss.to(y_pos) + temperature * F.softplus(-positive_logit(y_pos, threshold, kind) / temperature).mean()
    if y_neg is not None:
        loss = loss.to(y_neg) + temperature * F.softplus(positive_logit(y_neg, threshold, kind) / temperature).mean()
    return loss


def symmetric_loss(y_pos: torch.Tensor, y_neg: torch.Tensor, kind: str = "max_ssq", alpha: float = 4.0):
    """A loss on the positive-minus-negative goodness gap: ``softplus(-alpha * (G+ - G-))``.

    No threshold: it only asks that each positive example be better than its paired negative.
    ``alpha`` sets how sharp the logistic is; goodness is measured as a per-unit mean so that
    ``alpha`` does not depend on the layer width.
    """
    if y_pos.shape != y_neg.shape:
        raise ValueError(f"symmetric loss pairs examples: shapes {tuple(y_pos.shape)} and {tuple(y_neg.shape)}")
    n = y_pos.shape[-1]
    gap = (goodness(y_pos, kind) - goodness(y_neg, kind)) / n
    return F.softplus(-alpha * gap).mean()
