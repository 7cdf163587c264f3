"""Per-stream recurrent state of the streams the wake worker is learning from."""

from __future__ import annotations

import time
from collections import OrderedDict, deque

import torch

from ffcore.state import RecurrentState


class StreamTable:
    """Per-stream recurrent state on the device: one row of a RecurrentState per stream."""

    def __init__(self):
        self.rows: OrderedDict[str, int] = OrderedDict()
        self.state: RecurrentState | None = None
        self.last_seen: dict[str, float] = {}
        self.hits: dict[str, deque] = {}

    def ensure(self, model, ids: list[str], frames: torch.Tensor, window: int,
               saved: dict[str, RecurrentState] | None = None) -> torch.Tensor:
        """Row indices for ``ids``; a new stream resumes from its ``saved`` state if given, else
        starts from one bottom-up pass of its first frame."""
        new = [i for i, s in enumerate(ids) if s not in self.rows]
        if new:
            init = model.initial_state(frames[new])
            for j, i in enumerate(new):
                if saved and ids[i] in saved:
                    init.scatter(torch.tensor([j], device=frames.device), saved[ids[i]])
            self.state = init if self.state is None else RecurrentState.cat([self.state, init])
            for i in new:
                self.rows[ids[i]] = len(self.rows)
                self.hits.setdefault(ids[i], deque(maxlen=window))
        now = time.monotonic()
        for s in ids:
            self.last_seen[s] = now
        return torch.tensor([self.rows[s] for s in ids], dtype=torch.long, device=frames.device)

    def new_ids(self, ids: list[str]) -> list[str]:
        return [s for s in dict.fromkeys(ids) if s not in self.rows]

    def evict_idle(self, idle_s: float) -> dict[str, RecurrentState]:
        """Drop streams idle longer than ``idle_s``; returns their last states."""
        now = time.monotonic()
        gone = {s: self.state.index([self.rows[s]]) for s, t in self.last_seen.items() if now - t > idle_s}
        if gone:
            self.state = self.state.drop([self.rows[s] for s in gone])
            for s in gone:
                del self.last_seen[s], self.hits[s], self.rows[s]
            self.rows = OrderedDict((s, i) for i, s in enumerate(self.rows))
        return gone
