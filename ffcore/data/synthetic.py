"""A small built-in dataset for tests and demos: noisy, randomly scaled and shifted copies of one
smooth prototype image per class. Learnable to high accuracy in seconds on a CPU."""

from __future__ import annotations

import torch

from ffcore.negatives import hybrid_masks


def make_synthetic(
    n: int,
    num_classes: int = 10,
    image_shape: tuple[int, int] = (14, 14),
    noise: float = 0.15,
    seed: int = 0,
    prototype_seed: int = 1234,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` examples: (n, H*W) float32 in [0, 1] and (n,) int64 labels.

    The class prototypes depend only on ``prototype_seed``, so splits made with different
    ``seed`` values come from the same distribution.
    """
    if n < 1 or num_classes < 2:
        raise ValueError(f"need n >= 1 and num_classes >= 2, got n={n}, num_classes={num_classes}")
    protos = hybrid_masks(num_classes, image_shape, blur_steps=3, generator=torch.Generator().manual_seed(prototype_seed))
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, (n,), generator=g)
    x = protos[labels]
    # Shift each example by up to one pixel so the task is not a lookup table.
    shifts = torch.randint(-1, 2, (n, 2), generator=g)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            idx = ((shifts[:, 0] == dy) & (shifts[:, 1] == dx)).nonzero().squeeze(1)
            x[idx] = x[idx].roll((dy, dx), dims=(1, 2))
    scale = 0.6 + 0.4 * torch.rand(n, 1, 1, generator=g)
    x = (x * scale + noise * torch.randn(x.shape, generator=g)).clamp(0, 1)
    return x.reshape(n, -1).float(), labels


def make_synthetic_color(
    n: int,
    num_classes: int = 10,
    image_shape: tuple[int, int] = (32, 32),
    noise: float = 0.05,
    seed: int = 0,
    prototype_seed: int = 1234,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` colour images in CIFAR-10's layout: (n, 3 * H * W) float32 in [0, 1], channel-major
    (the R, G and B planes), and (n,) int64 labels. Each image is its class's shape (the prototypes
    of :func:`make_synthetic`, shifted by up to a pixel) in a random colour, over a background of
    large random blobs in two other random colours: the class is in the shape alone, and every
    image has a confounding background of its own (a stand-in for CIFAR-10's, paper section 4)."""
    shapes, labels = make_synthetic(n, num_classes, image_shape, noise=0.0, seed=seed, prototype_seed=prototype_seed)
    g = torch.Generator().manual_seed(seed + 7919)
    h, w = image_shape
    shape = (shapes.reshape(n, 1, h, w) > 0).float()
    blobs = hybrid_masks(n, image_shape, blur_steps=3, generator=g)[:, None]
    colour = lambda: torch.rand(n, 3, 1, 1, generator=g)  # noqa: E731
    background = blobs * colour() + (1 - blobs) * colour()
    x = shape * colour() + (1 - shape) * background + noise * torch.randn(n, 3, h, w, generator=g)
    return x.clamp(0, 1).reshape(n, -1), labels
