"""Weight deltas that travel: a layer-local update computed in one place (the sleep worker, from
a weight snapshot) and applied in another (the wake worker), as low-rank factors.

For a linear layer a batch's plain-SGD step is ``W += left.T @ right`` and ``b += left.sum(0)``,
with ``left`` (B, N) the scaled loss derivatives and ``right`` (B, D) the normalized inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from safetensors.torch import save as st_save

from ffcore.finite import all_finite
from ffcore.serial import load_tensors


@dataclass
class WeightDelta:
    factors: list[tuple[torch.Tensor, torch.Tensor]]  # per layer: (left (B, N_l), right (B, D_l))

    def dense(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The full (weight, bias) change of every layer: for inspection and tests."""
        return [(left.T @ right, left.sum(dim=0)) for left, right in self.factors]

    def is_finite(self) -> bool:
        return all_finite(t for pair in self.factors for t in pair)

    def to_bytes(self) -> bytes:
        """safetensors bytes (never pickle)."""
        tensors = {}
        for i, (left, right) in enumerate(self.factors):
            tensors[f"{i}.left"] = left.detach().cpu().contiguous()
            tensors[f"{i}.right"] = right.detach().cpu().contiguous()
        return st_save(tensors)

    @classmethod
    def from_bytes(cls, data: bytes) -> "WeightDelta":
        tensors = load_tensors(data, "weight delta",
                               lambda k: {f"{i}.{part}" for i in range(k // 2) for part in ("left", "right")})
        n = len(tensors) // 2
        return cls([(tensors[f"{i}.left"], tensors[f"{i}.right"]) for i in range(n)])
