"""The recurrent state of S independent streams: the current activity of every hidden layer,
nothing older (no history is stored, so memory does not grow with the frames seen)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from safetensors.torch import save as st_save

from ffcore.serial import load_tensors


@dataclass
class RecurrentState:
    """``activities[l]``: (S, width_l) activity of hidden layer l, before layer normalization."""

    activities: list[torch.Tensor]

    def __post_init__(self):
        sizes = {len(y) for y in self.activities}
        if len(sizes) > 1:
            raise ValueError(f"every layer must hold the same number of streams, got sizes {sorted(sizes)}")

    @property
    def num_streams(self) -> int:
        return len(self.activities[0]) if self.activities else 0

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(y.shape[1] for y in self.activities)

    def __len__(self) -> int:
        return self.num_streams

    def clone(self) -> "RecurrentState":
        return RecurrentState([y.clone() for y in self.activities])

    def index(self, idx: torch.Tensor | list[int] | slice) -> "RecurrentState":
        """The state of a subset of streams (a copy for index tensors and lists)."""
        if isinstance(idx, list):
            idx = torch.tensor(idx, dtype=torch.long, device=self.activities[0].device)
        return RecurrentState([y[idx] for y in self.activities])

    def scatter(self, idx: torch.Tensor | list[int], part: "RecurrentState") -> None:
        """Write ``part`` (the states of streams ``idx``) back in place."""
        if isinstance(idx, list):
            idx = torch.tensor(idx, dtype=torch.long, device=self.activities[0].device)
        for y, p in zip(self.activities, part.activities):
            y[idx] = p

    @staticmethod
    def cat(states: list["RecurrentState"]) -> "RecurrentState":
        """Streams of several states side by side (grow)."""
        return RecurrentState([torch.cat(ys, dim=0) for ys in zip(*(s.activities for s in states))])

    def drop(self, idx: torch.Tensor | list[int]) -> "RecurrentState":
        """The state without streams ``idx`` (shrink)."""
        keep = torch.ones(self.num_streams, dtype=torch.bool, device=self.activities[0].device)
        keep[torch.as_tensor(idx, dtype=torch.long, device=keep.device)] = False
        return RecurrentState([y[keep] for y in self.activities])

    def to(self, device) -> "RecurrentState":
        return RecurrentState([y.to(device) for y in self.activities])

    def to_bytes(self) -> bytes:
        """safetensors bytes (never pickle): one tensor per layer."""
        return st_save({f"layer_{i}": y.detach().cpu().contiguous() for i, y in enumerate(self.activities)})

    @classmethod
    def from_bytes(cls, data: bytes, device="cpu") -> "RecurrentState":
        tensors = load_tensors(data, "recurrent state", lambda k: {f"layer_{i}" for i in range(k)})
        return cls([tensors[f"layer_{i}"].to(device) for i in range(len(tensors))])
