"""A black box between layers (paper section 6): an unknown, possibly stochastic transformation
of one layer's output before the next layer sees it. FF does not need its derivative -- each
layer learns from its own input, whatever produced it -- so FF trains through it as before.
Backprop cannot differentiate it; the best it can do is guess a derivative, for example the
identity ("straight-through"), or stop at it.

The box here is a fixed random network with noise: ``x -> relu(x_n A^T) B^T + noise``, where
``x_n`` is ``x`` RMS-normalized, ``A`` and ``B`` are random Gaussian matrices, and the noise is
Gaussian with ``noise`` times the output's RMS. It runs outside autograd: what it returns has
no history, so no gradient can flow through it by accident.
"""

from __future__ import annotations

import math

import torch


class BlackBox:
    def __init__(self, dim: int, hidden: int | None = None, noise: float = 0.1, seed: int = 0):
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        if noise < 0:
            raise ValueError(f"noise must be >= 0, got {noise}")
        hidden = hidden or 2 * dim
        gen = torch.Generator().manual_seed(seed)
        self.a = torch.randn(hidden, dim, generator=gen) / math.sqrt(dim)
        self.b = torch.randn(dim, hidden, generator=gen) / math.sqrt(hidden)
        self.noise = float(noise)
        self.generator = torch.Generator().manual_seed(seed + 1)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(B, dim) -> (B, dim), detached from any graph."""
        x = x.detach()
        x_n = x / x.square().mean(dim=1, keepdim=True).sqrt().clamp_min(1e-8)
        out = torch.relu(x_n @ self.a.T.to(x)) @ self.b.T.to(x)
        if self.noise:
            rms = out.square().mean(dim=1, keepdim=True).sqrt()
            noise = torch.randn(out.shape, generator=self.generator).to(out)
            out = out + self.noise * rms * noise
        return out


class _StraightThrough(torch.autograd.Function):
    """Forward through the box; backward as if it were the identity (a guess, and a wrong one)."""

    @staticmethod
    def forward(ctx, x, box):
        return box(x)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def straight_through(box: BlackBox):
    """The box as backprop can use it: its output with the identity's derivative."""
    return lambda x: _StraightThrough.apply(x, box)
