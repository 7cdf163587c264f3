"""Input centering: a running per-input mean subtracted before the bottom layer sees the input.

Layer normalization removes an input's scale but not its offset: when inputs share a large common
part (inverted or low-contrast images, sensor readings around a baseline), their normalized
directions nearly coincide, every example looks alike to the first layer, and each update pushes
all of them the same way (measured: the synthetic task at 0.45 + 0.1 x, chance-level error for
supervised and unsupervised FF without centering). The mean is a buffer of the model, so
checkpoints and snapshots carry it, and it is learned from the training inputs as they come.
"""

from __future__ import annotations

import torch


class CenteredInput:
    """Mixin for an ``nn.Module`` whose ``config`` has ``center_input`` and ``center_horizon``
    (listed before ``nn.Module`` among the bases)."""

    # Buffers added after the first checkpoints were written: older files load with their
    # defaults (a zero mean leaves the inputs unchanged). Subclasses may name more.
    later_buffers: tuple[str, ...] = ("input_mean", "input_count")

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        state_dict = dict(state_dict)
        for name in self.later_buffers:
            state_dict.setdefault(name, getattr(self, name))
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def init_centering(self, input_dim: int) -> None:
        self.register_buffer("input_mean", torch.zeros(input_dim))
        self.register_buffer("input_count", torch.zeros((), dtype=torch.float64))

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D) inputs as the bottom layer sees them: centered when ``config.center_input``."""
        return x - self.input_mean if self.config.center_input else x

    @torch.no_grad()
    def observe_inputs(self, x: torch.Tensor) -> None:
        """Move the running mean towards these (B, D) inputs: a plain average over the first
        ``center_horizon`` inputs, then an exponential one over about that many (no-op unless
        centering)."""
        if not self.config.center_input or not len(x):
            return
        self.input_count += len(x)
        rate = len(x) / min(float(self.input_count), float(self.config.center_horizon))
        self.input_mean += min(rate, 1.0) * (x.mean(dim=0) - self.input_mean)
