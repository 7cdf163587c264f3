"""Whether weights or updates hold NaN or infinity: checked before anything is served, dreamt
with or applied, so it runs once or twice per positive step and must be cheap."""

from __future__ import annotations

from collections.abc import Iterable

import torch


def all_finite(tensors: Iterable[torch.Tensor]) -> bool:
    """No NaN or infinity in any of ``tensors``. One float64 sum per tensor instead of an
    elementwise test: the sum is NaN or infinite exactly when an element is (float32 values
    summed in float64 cannot overflow), and it reads each tensor once without a mask (5x faster
    on the service's default model)."""
    sums = [t.detach().sum(dtype=torch.float64) for t in tensors]
    return not sums or bool(torch.isfinite(torch.stack(sums)).all())
