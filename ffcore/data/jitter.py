"""Jittered images (paper 3.3): every image shifted by up to ``max_shift`` pixels in each direction,
(2 max_shift + 1)^2 shifts in all (25 for the paper's 2 pixels), the uncovered border filled with
zeros. Training draws one of the shifts per image per batch, so over many epochs every shift is
seen, without storing 25 copies of the training set."""

from __future__ import annotations

import torch


def shifts(max_shift: int) -> list[tuple[int, int]]:
    """Every (down, right) shift with both in [-max_shift, max_shift]."""
    if max_shift < 0:
        raise ValueError(f"max_shift must be >= 0, got {max_shift}")
    return [(dy, dx) for dy in range(-max_shift, max_shift + 1) for dx in range(-max_shift, max_shift + 1)]


def shift_images(x: torch.Tensor, shape: tuple[int, int], dy: torch.Tensor | int, dx: torch.Tensor | int) -> torch.Tensor:
    """(B, H*W) images moved ``dy`` pixels down and ``dx`` right (per image, or one for all);
    pixels moved in from outside are 0."""
    h, w = shape
    b = len(x)
    dy = torch.as_tensor(dy, device=x.device).expand(b)
    dx = torch.as_tensor(dx, device=x.device).expand(b)
    rows = torch.arange(h, device=x.device)[None, :] - dy[:, None]  # (B, H): source row of each target row
    cols = torch.arange(w, device=x.device)[None, :] - dx[:, None]
    valid = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
    src = rows.clamp(0, h - 1)[:, :, None] * w + cols.clamp(0, w - 1)[:, None, :]  # (B, H, W)
    return (x.gather(1, src.reshape(b, -1)) * valid.reshape(b, -1)).to(x.dtype)


def all_shifts(x: torch.Tensor, shape: tuple[int, int], max_shift: int = 2) -> torch.Tensor:
    """(B, H*W) -> (S, B, H*W): every image under every shift of :func:`shifts`."""
    return torch.stack([shift_images(x, shape, dy, dx) for dy, dx in shifts(max_shift)])


def random_shifts(x: torch.Tensor, shape: tuple[int, int], max_shift: int,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Each image under one shift drawn uniformly from the (2 max_shift + 1)^2."""
    if max_shift == 0:
        return x
    k = 2 * max_shift + 1
    draw = torch.randint(0, k * k, (len(x),), generator=generator, device=generator.device if generator else "cpu")
    draw = draw.to(x.device)
    return shift_images(x, shape, draw // k - max_shift, draw % k - max_shift)
