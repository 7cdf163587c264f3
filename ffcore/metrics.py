"""Classification metrics reported for FF and backprop alike."""

from __future__ import annotations

import torch


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(C, C) counts: rows are true classes, columns predicted classes."""
    if pred.shape != target.shape:
        raise ValueError(f"pred shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
    idx = target.long().cpu() * num_classes + pred.long().cpu()
    return torch.bincount(idx, minlength=num_classes * num_classes).view(num_classes, num_classes)


def error_rate(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Fraction of wrong predictions."""
    if pred.shape != target.shape:
        raise ValueError(f"pred shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
    return (pred.cpu() != target.cpu()).float().mean().item()


def macro_f1(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> float:
    """Unweighted mean over classes of F1 = 2 TP / (2 TP + FP + FN); a class absent from
    both predictions and targets counts as F1 = 1 (nothing to get wrong)."""
    cm = confusion_matrix(pred, target, num_classes).double()
    tp = cm.diag()
    denom = 2 * tp + (cm.sum(0) - tp) + (cm.sum(1) - tp)
    f1 = torch.where(denom > 0, 2 * tp / denom.clamp_min(1), torch.ones_like(tp))
    return f1.mean().item()
