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

from ffcore.goodness import activity_measure, goodness_sign
from ffcore.state import RecurrentState

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


# ---- a correction learned at once (the service's ``learn=fast``) -------------------------------
# Equation 4 raises the goodness of one input; but the same frame with another label on top is
# almost the same input (only the label part differs), so every other label's goodness rises
# almost as much and the classifier's answer hardly moves (docs/RESULTS.md, "Learning fast").
# Taking the step along the part of the input that the other labels' inputs do not span keeps
# equation 4's property for the corrected input (every pre-activation scaled by 1 + eps: its
# normalized output unchanged, its goodness at S*) and leaves the pre-activations of the frame
# with every other label on top exactly as they were.

# The corrected label's total goodness over the best other label's, and its readout logit over
# every other one: small, because every step also moves the answers for frames that share the
# corrected one's features, the more the larger it is (tried on the half-trained net of
# tests/ffcore/test_fast.py while building this: larger margins corrected no more frames and
# cost the others more). What these values do on MNIST: benchmarks/correction.py.
FAST_MARGIN = 0.02
LOGIT_MARGIN = 0.5
FAST_STEPS = 3  # at most this many fast steps of the FF layers per correction


@torch.no_grad()
def contrastive_fast_step(layer, x: torch.Tensor, others: torch.Tensor, target: float) -> float | None:
    """Equation 4 for one layer and one input ``x`` ((D,) or (1, D), the layer's raw input), taken
    along the part of ``[x_norm, 1]`` that the inputs ``others`` ((K, D), normalized the same way)
    do not span (per unit, within its receptive field when the layer has one): the
    pre-activations for ``x`` are scaled by 1 + eps so that its activity measure becomes
    ``target``; those for every row of ``others`` do not change. Returns eps, or None when ``x``
    is (nearly) in that span (nothing is changed)."""
    if layer.config.activation not in HOMOGENEOUS:
        raise ValueError(f"learning fast needs an activation that scales with its input ({', '.join(HOMOGENEOUS)}); "
                         f"this layer uses {layer.config.activation}")
    xt = layer.normalized_input(x.reshape(1, -1))[0]
    xo = layer.normalized_input(others.reshape(-1, len(xt)))  # (K, D)
    k = len(xo)
    weight, bias = layer.linear.weight, layer.linear.bias
    z = weight @ xt + bias  # (N,)
    eps = fast_epsilon(float(activity_measure(layer._act(z)[None], layer.config.goodness)), target, layer.config.goodness)
    mask = getattr(layer, "mask", None)
    # Per unit j, inner products over its own inputs (its field) and the bias's constant 1:
    # the Gram matrix of the others G_j (K, K) and their products with x, b_j (K,).
    pairs = torch.cat(((xo[:, None, :] * xo[None, :, :]).reshape(k * k, -1), xo * xt[None, :], (xt * xt)[None]))
    sums = (mask @ pairs.T if mask is not None else pairs.sum(dim=1).expand(len(z), -1)) + 1.0  # (N, K*K + K + 1)
    gram, b, tt = sums[:, : k * k].view(-1, k, k), sums[:, k * k : k * k + k], sums[:, -1]
    ridge = 1e-6 * gram.diagonal(dim1=1, dim2=2).mean(dim=1)[:, None, None] * torch.eye(k, dtype=z.dtype, device=z.device)
    coef = torch.linalg.solve(gram + ridge, b[..., None])[..., 0]  # (N, K): x's projection on the others
    denominator = tt - (coef * b).sum(dim=1)  # |part of x the others do not span|^2, per unit
    if float(denominator.min()) <= 1e-4 * float(tt.max()):  # x is within 1% (in norm) of their span
        return None
    scale = eps * z / denominator  # (N,)
    change = scale[:, None] * (xt[None, :] - coef @ xo)  # d_j = x - sum_k coef_jk x_k, per unit
    weight.add_(change if mask is None else change * mask)
    bias.add_(scale * (1.0 - coef.sum(dim=1)))
    layer._updates += 1  # cached reduced-precision weights are stale
    return eps


def _settled_inputs(model, frame: torch.Tensor, state=None) -> list[torch.Tensor]:
    """Each layer's inputs ``[below, above]`` (C, D_l) at the last iteration of the evaluation
    window, with each label clamped on top in turn (as ``label_goodness`` runs them), from
    ``state`` (one row) or a bottom-up pass."""
    c = model.config.num_classes
    x = frame.reshape(1, -1).repeat(c, 1)
    labels = torch.arange(c, device=x.device)
    top = model.label_vector(labels, c, x.device)
    state = model.initial_state(x) if state is None else RecurrentState([y.repeat(c, 1) for y in state.activities])
    for _ in range(model.config.eval_window[1] - 1):
        state, _ = model.step(x, labels, state)
    return [model._inputs(x, top, state.activities, i) for i in range(len(model.layers))]


@torch.no_grad()
def fast_goodness_step(model, x: torch.Tensor, label: int, scores: torch.Tensor, state=None,
                       margin: float = FAST_MARGIN, boost: float = 1.0) -> list[float | None]:
    """One fast step of every FF layer of a recurrent net for the frame ``x`` (1, D): each layer's
    goodness with ``label`` on top, at the last iteration of the evaluation window, scaled by one
    factor, the factor that would put the label's window total (``scores``, as
    ``label_goodness`` gives them) ``1 + margin`` past the best other label's, by
    :func:`contrastive_fast_step` (all layers at once, from one pass; with any other label on top
    the pre-activations at that iteration stay as they were). ``boost``: that factor's change
    from 1 multiplied by this (for a window that follows only part of the step). Returns each
    layer's eps."""
    c = len(scores)
    others = torch.arange(c, device=x.device) != label
    kind = model.config.layer.goodness
    inputs = _settled_inputs(model, x, state)
    measures = [activity_measure(layer(xs), kind) for layer, xs in zip(model.layers, inputs)]  # (C,) each
    totals = goodness_sign(kind) * scores
    if goodness_sign(kind) > 0:
        factor = max(1.0, (1 + margin) * float(totals[others].max()) / max(float(totals[label]), 1e-12))
    else:
        factor = min(1.0, float(totals[others].min()) / ((1 + margin) * max(float(totals[label]), 1e-12)))
    if factor == 1.0:
        return [0.0] * len(model.layers)
    factor = max(1.0 + boost * (factor - 1.0), 1e-3)
    return [contrastive_fast_step(layer, xs[label], xs[others], factor * float(m[label]))
            for layer, xs, m in zip(model.layers, inputs, measures)]


@torch.no_grad()
def correct(model, frame: torch.Tensor, label: int, state=None, margin: float = FAST_MARGIN,
            logit_margin: float = LOGIT_MARGIN, ff_layers: bool = True, max_steps: int = FAST_STEPS) -> dict:
    """Learn one labeled frame at once (a user's correction of a wrong answer) in a
    :class:`ffcore.recurrent.RecurrentFF`: both of its classifiers answer ``label`` for this frame
    afterwards, and the weights move only along what tells this frame apart.

    * The FF layers: fast steps (:func:`fast_goodness_step`) until the goodness classifier answers
      ``label``, at most ``max_steps``. One step raises the label's goodness at the last iteration
      of the window exactly; the window's earlier iterations follow it only in part (damping), so
      one step often falls short (each next one asks for as much more as the last fell short).
    * The softmax readout, in one step: each class whose logit is not ``logit_margin`` below the
      label's at this frame's features closes half the gap and the label the other half (steps
      along the features), in the averaged readout that predictions use as well as in the
      learning one.

    ``state``: the stream's context (one row) to settle from; None: a bottom-up pass.
    ``ff_layers=False``: only the readout (FF layers frozen), and the goodness classifier is not
    run (``goodness_before`` is None). Returns the labels each classifier gave before, the fast
    steps taken and their layers' eps (None: not separable)."""
    x = frame.reshape(1, -1)
    c = model.config.num_classes
    if not 0 <= label < c:
        raise ValueError(f"label {label} is not one of the model's {c} classes")
    # (C,) signed goodness averaged over the window: a pass per label, only when the FF layers learn
    scores = model.label_goodness(x, state)[0] if ff_layers else None
    goodness_before = int(scores.argmax()) if ff_layers else None
    softmax_before = int(model.predict_fast(x)[0].argmax())
    epsilons, boost = [], 1.0
    while ff_layers and len(epsilons) < max_steps and int(scores.argmax()) != label:
        others = scores.clone()
        others[label] = -float("inf")
        wanted = float(others.max()) + margin * abs(float(others.max())) - float(scores[label])  # window gain
        step = fast_goodness_step(model, x, label, scores, state, margin, boost)
        if not any(step):  # nothing separable
            break
        epsilons.append(step)
        before, scores = float(scores[label]), model.label_goodness(x, state)[0]
        # the window followed only part of the step: the next asks for more, as much as it fell short
        followed = (float(scores[label]) - before) / wanted if wanted > 0 else 1.0
        boost = boost / min(max(followed, 0.1), 1.0)
    features = model.bottom_up_features(x)[0]
    unit = features / features.square().sum().clamp_min(1e-12)
    logits = model.served_readout(features[None])[0]
    rows = [model.readout.linear.weight] + ([model.readout_mean] if model.config.readout_average else [])
    # every class that the label does not beat by the margin gives up half the gap, the label
    # takes the other half: the answer moves only between those classes
    for k in (logits - logits[label] + logit_margin > 0).nonzero().squeeze(1).tolist():
        if k == label:
            continue
        half = float(logits[k] + logit_margin - logits[label]) / 2
        if half <= 0:  # the label's rise for an earlier class already cleared this one
            continue
        for w in rows:
            w[label] += half * unit
            w[k] -= half * unit
        logits = model.served_readout(features[None])[0]
    return {"goodness_before": goodness_before, "softmax_before": softmax_before, "fast_steps": len(epsilons),
            "epsilons": epsilons}
