"""Positive and negative data: labels written into the input, wrong labels, hybrid images.

Shapes: ``x`` is ``(B, D)`` flattened inputs with values in [0, 1]; ``labels`` is ``(B,)`` int64.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NEUTRAL_LABEL_VALUE = 0.1  # paper 3.3: "a neutral label composed of ten entries of 0.1"


def embed_label(x: torch.Tensor, labels: torch.Tensor | None, num_classes: int) -> torch.Tensor:
    """Replace the first ``num_classes`` inputs by a one-of-N label (paper 3.3).

    ``labels=None`` writes the neutral label (every entry 0.1) instead.
    """
    if x.shape[-1] <= num_classes:
        raise ValueError(f"input of width {x.shape[-1]} has no room for a {num_classes}-way label")
    out = x.clone()
    if labels is None:
        out[:, :num_classes] = NEUTRAL_LABEL_VALUE
    else:
        out[:, :num_classes] = F.one_hot(labels, num_classes).to(x.dtype)
    return out


def all_label_inputs(x: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Every label written into every input: ``(B, D) -> (C * B, D)``, label-major."""
    labels = torch.arange(num_classes, device=x.device).repeat_interleave(x.shape[0])
    return embed_label(x.repeat(num_classes, 1), labels, num_classes)


def wrong_labels_uniform(labels: torch.Tensor, num_classes: int, generator: torch.Generator | None = None):
    """A wrong label for each example, uniform over the other classes."""
    offset = torch.randint(1, num_classes, labels.shape, generator=generator, device=labels.device)
    return (labels + offset) % num_classes


def wrong_labels_hard(probs: torch.Tensor, labels: torch.Tensor, generator: torch.Generator | None = None):
    """Hard negative labels: sampled in proportion to the model's own predicted probabilities,
    with the true class masked out (paper 3.3 and 3.4). ``probs``: (B, C)."""
    # The small floor keeps a model that is certain of the true class from leaving nothing to sample.
    masked = probs.detach().float().clamp_min(0) + 1e-6
    masked.scatter_(1, labels[:, None], 0.0)
    return torch.multinomial(masked, 1, generator=generator).squeeze(1)


def _generator_device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def _blur(images: torch.Tensor) -> torch.Tensor:
    """One pass of the [1/4, 1/2, 1/4] filter horizontally then vertically, edges replicated.
    ``(B, H, W)``. Written as shifted sums: 10x faster than ``conv2d`` with a 1-channel 1 x 3
    kernel on a CPU, and bit for bit the same on 0/1 images (every partial sum is a multiple of
    4^-steps, exact in float32 for the blur steps used here)."""
    x = torch.cat((images[..., :1], images, images[..., -1:]), dim=-1)
    x = 0.25 * x[..., :-2] + 0.5 * x[..., 1:-1] + 0.25 * x[..., 2:]
    x = torch.cat((x[..., :1, :], x, x[..., -1:, :]), dim=-2)
    return 0.25 * x[..., :-2, :] + 0.5 * x[..., 1:-1, :] + 0.25 * x[..., 2:, :]


def hybrid_masks(
    n: int,
    image_shape: tuple[int, int],
    blur_steps: int = 6,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Masks with large regions of ones and zeros (paper 3.2): a random bit image, blurred
    ``blur_steps`` times with [1/4, 1/2, 1/4] in both directions, thresholded at 0.5.
    Returns ``(n, H, W)`` float 0/1."""
    if blur_steps < 1:
        raise ValueError(f"blur_steps must be >= 1, got {blur_steps}")
    # Drawn where the generator lives (a CUDA generator cannot fill a CPU tensor), then moved.
    bits = torch.randint(0, 2, (n, *image_shape), generator=generator, device=_generator_device(generator))
    bits = bits.float().to(device)
    for _ in range(blur_steps):
        bits = _blur(bits)
    return (bits > 0.5).float()


def hybrid_images(
    x: torch.Tensor,
    image_shape: tuple[int, int],
    blur_steps: int = 6,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Negative data for unsupervised FF: one image times a mask plus a *different* image times
    the inverted mask, so short-range correlations look real but long-range ones do not."""
    b = x.shape[0]
    if b < 2:
        raise ValueError("hybrid images mix two different images: need a batch of at least 2")
    # A random non-zero cyclic shift pairs every image with a different one.
    shift = int(torch.randint(1, b, (1,), generator=generator, device=_generator_device(generator)))
    other = x.roll(shift, dims=0)
    mask = hybrid_masks(b, image_shape, blur_steps, generator, x.device).reshape(b, -1).to(x.dtype)
    return x * mask + other * (1 - mask)
