"""Learning fast (paper section 6): one weight update that makes every layer reach a desired
goodness S* for one input, without changing any layer's normalized output for that input.

For a fully connected layer with input ``x`` (the normalized activity below, with the bias as a
constant 1: ``x~ = [x, 1]``), the update of unit j's incoming weights

    delta w_j = eps * z_j * x~ / |x~|^2

changes its pre-activation for that input by ``eps * z_j``: every pre-activation is scaled by
``1 + eps``. With a positively homogeneous activation (ReLU, leaky ReLU) every activity is then
scaled by ``1 + eps`` as well (inactive ReLU units stay inactive), so the direction of the activity
vector -- all the next layer sees after layer normalization -- is unchanged, and the goodness is
scaled by ``(1 + eps)^2`` (sum of squares) or ``1 + eps`` (sum). Reaching S* from the current
goodness S takes

    eps = sqrt(S* / S) - 1        (sum of squares: the paper's equation 4)
    eps = S* / S - 1              (sum of absolute activities)

The paper writes the update with ``y_j`` in place of ``z_j``, which is the same for ReLU; ``z_j``
also keeps leaky ReLU exact. Because no layer's normalized output changes for this input, every
layer can be updated at once from one forward pass.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ffcore.goodness import activity_measure

# Activations for which scaling the pre-activation scales the activity by the same factor.
HOMOGENEOUS = ("relu", "leaky_relu")


def fast_epsilon(current: float, target: float, kind: str) -> float:
    """The step that scales a layer's activity measure from ``current`` to ``target`` (eq. 4)."""
    if not target >= 0 or not math.isfinite(target):
        raise ValueError(f"the desired goodness must be a finite number >= 0, got {target}")
    if not current > 0:
        raise ValueError("no unit of the layer is active for this input: its goodness cannot be scaled")
    ratio = target / current
    return math.sqrt(ratio) - 1.0 if kind.endswith("ssq") else ratio - 1.0


@torch.no_grad()
def fast_update(layers: Sequence, x: torch.Tensor, target: float | Sequence[float]) -> list[float]:
    """Update every layer of a feed-forward stack of fully connected FF layers (an
    :class:`ffcore.mlp.FFMLP`'s ``layers``) so that, for the one input ``x`` (the first layer's
    input, (D,) or (1, D), label already written in), layer l's activity measure (sum of squared
    activities, or of absolute ones for the ``*_sum`` goodness kinds) becomes ``target`` (one
    value, or one per layer). Returns each layer's ``eps``. The layers' optimizers are not used."""
    targets = [float(target)] * len(layers) if isinstance(target, (int, float)) else [float(t) for t in target]
    if len(targets) != len(layers):
        raise ValueError(f"{len(targets)} desired goodness values for {len(layers)} layers")
    h = x.reshape(1, -1)
    epsilons = []
    for layer, s_star in zip(layers, targets):
        if layer.config.activation not in HOMOGENEOUS:
            raise ValueError(f"learning fast needs an activation that scales with its input ({', '.join(HOMOGENEOUS)}); "
                             f"this layer uses {layer.config.activation}")
        if not hasattr(layer, "linear"):
            raise ValueError("learning fast is exact for fully connected layers only")
        x_norm = layer.normalized_input(h)
        weight, bias = layer.linear.weight, layer.linear.bias
        z = x_norm @ weight.T + bias  # fp32 whatever the layer's matmul precision: the step is exact
        kind = layer.config.goodness
        eps = fast_epsilon(float(activity_measure(layer._act(z), kind)), s_star, kind)
        scale = eps / (float(x_norm.square().sum()) + 1.0)  # |x~|^2 with the bias's constant input
        weight.addmm_(z.T, x_norm, alpha=scale)
        bias.add_(z[0], alpha=scale)
        layer._updates += 1  # cached reduced-precision weights are stale
        epsilons.append(eps)
        h = layer._act(x_norm @ weight.T + bias)
    return epsilons
