"""An FF layer: length-normalized input, a connectivity, an activation, and its own local objective.

The layer owns its optimizer and trains only on detached inputs, so no gradient ever crosses
from one layer into the layer below. ``FFLayer.connect`` is the seam for other connectivities
(locally connected receptive fields, paper footnote 8); ``FFLinear`` is the fully connected one.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ffcore.goodness import (GOODNESS_KINDS, LOSS_KINDS, activity_measure, ff_loss, goodness_sign, layer_norm,
                             symmetric_loss)
from ffcore.negatives import NEUTRAL_LABEL_VALUE

ACTIVATIONS = {
    "relu": F.relu,
    "gelu": F.gelu,
    "leaky_relu": lambda z: F.leaky_relu(z, 0.01),
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
}
OPTIMIZERS = ("sgd", "adam")
LR_SCALES = ("none", "fan_in")
# lr_scale "fan_in": ``lr`` is the rate of a layer whose units each read this many inputs.
LR_REFERENCE_FAN_IN = 1000


@dataclass(frozen=True)
class LayerConfig:
    """Hyperparameters of one FF layer's local learning (shared by every layer of a net)."""

    activation: str = "relu"
    goodness: str = "max_ssq"
    loss: str = "logistic"  # "logistic" (paper eq. 1 with a threshold) or "symmetric" (goodness gap)
    symmetric_alpha: float = 4.0
    # Footnote 9: each positive example pushes unit j's pre-activation by this times (the unit's
    # running mean activity - the layer's mean of them); 0 turns it off (FFLayer.peer_dz).
    peer_normalization: float = 0.0
    peer_momentum: float = 0.9  # running mean of each unit's activity
    optimizer: str = "sgd"
    lr: float = 1e-3
    # "fan_in": each layer's rate is lr * LR_REFERENCE_FAN_IN / (inputs per unit). A layer's input
    # is normalized to unit RMS, so its squared length is the number of inputs D, and one SGD step
    # moves a unit's pre-activation by about lr * D times its gradient: at a fixed lr, a net of
    # 2000-unit layers takes steps twice those of 1000-unit ones (measured: mnist-ff-4x2000 at lr
    # 1e-3 swings between 4% and 29% validation error for 35 epochs; at 5e-4 it is at 3.6% after 4).
    # Scaling by 1/D makes the step in pre-activation units the same for every width. "none": lr as is.
    lr_scale: str = "none"
    momentum: float = 0.9  # SGD momentum (ignored by Adam)
    weight_decay: float = 3e-4
    # False: biases are not decayed (the paper's code decays only the weights; a bias sets where a
    # unit turns on, not how large its weights grow)
    decay_biases: bool = True
    # Width of the logistic's transition, as a fraction of the threshold: p(positive) =
    # sigma((G - theta) / T) with T = max(1, temperature * theta). 0 is the paper's eq. 1 (T = 1),
    # whose logits are of the order of the layer width, so the loss saturates and its steps are
    # all-or-nothing; T ~ theta / 4 makes them shrink smoothly near the threshold. The loss is
    # T * softplus(...), so far from the threshold a step has the same size for any T.
    temperature: float = 0.0
    # Precision of the layer's matrix products: "float32", or "bfloat16" (about twice the
    # throughput on CPUs with AVX-512 BF16 and on GPUs; weights, their updates and everything
    # else stay float32).
    matmul_dtype: str = "float32"

    def __post_init__(self):
        checks = [
            (self.activation in ACTIVATIONS, f"activation {self.activation!r} not in {sorted(ACTIVATIONS)}"),
            (self.goodness in GOODNESS_KINDS, f"goodness {self.goodness!r} not in {list(GOODNESS_KINDS)}"),
            (self.loss in LOSS_KINDS, f"loss {self.loss!r} not in {list(LOSS_KINDS)}"),
            (self.optimizer in OPTIMIZERS, f"optimizer {self.optimizer!r} not in {list(OPTIMIZERS)}"),
            (self.lr_scale in LR_SCALES, f"lr_scale {self.lr_scale!r} not in {list(LR_SCALES)}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (self.peer_normalization >= 0, f"peer_normalization must be >= 0, got {self.peer_normalization}"),
            (self.temperature >= 0, f"temperature must be >= 0, got {self.temperature}"),
            (self.matmul_dtype in ("float32", "bfloat16"),
             f"matmul_dtype must be 'float32' or 'bfloat16', got {self.matmul_dtype!r}"),
            (0 <= self.peer_momentum < 1, f"peer_momentum must be in [0, 1), got {self.peer_momentum}"),
            (0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


def layer_temperature(config: LayerConfig, threshold: float) -> float:
    """The logistic's width T for a layer (see LayerConfig.temperature): 1 is the paper's eq. 1."""
    return max(1.0, config.temperature * threshold)


def _activation_derivative(kind: str, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if kind == "relu":
        return (z > 0).to(z.dtype)
    if kind == "leaky_relu":
        return torch.where(z > 0, 1.0, 0.01).to(z.dtype)
    if kind == "tanh":
        return 1 - y.square()
    if kind == "sigmoid":
        return y * (1 - y)
    if kind == "gelu":  # exact gelu: Phi(z) + z phi(z)
        phi = torch.exp(-0.5 * z.square()) / (2 * torch.pi) ** 0.5
        return 0.5 * (1 + torch.erf(z / 2**0.5)) + z * phi
    raise ValueError(f"no derivative for activation {kind!r}")


def ff_dz(layer, z: torch.Tensor, y: torch.Tensor, phase: str, measure: torch.Tensor | None = None) -> torch.Tensor:
    """Closed-form derivative of each frame's FF logistic loss (paper eq. 1) with respect to the
    pre-activations ``z`` (B, N), for one phase; summed over frames it is the layer's gradient.
    ``measure``: ``activity_measure(y)`` if the caller has it already."""
    cfg = layer.config
    if cfg.loss != "logistic":
        raise ValueError("separate positive and negative phases need the logistic (threshold) loss")
    s = goodness_sign(cfg.goodness)
    squared = cfg.goodness.endswith("ssq")
    if measure is None:
        measure = y.square().sum(dim=1) if squared else y.abs().sum(dim=1)
    temperature = layer_temperature(cfg, layer.threshold)
    if squared and cfg.activation == "relu":
        # The common case in as few operations as it allows (it runs per layer per step of every
        # stream): with p = -1 for the positive phase and +1 for the negative, the derivative
        # below is 2 y p s sigma(p s (G - theta) / T).
        p = -1.0 if phase == "positive" else 1.0
        c = torch.sub(measure, layer.threshold).mul_(p * s / temperature).sigmoid_().mul_(2.0 * p * s)
        return y * c[:, None]
    logit = s * (measure - layer.threshold) / temperature
    # positive: loss T softplus(-logit), dL/d(s G) = -sigma(-logit); negative: T softplus(logit), sigma(logit)
    dlogit = -torch.sigmoid(-logit) if phase == "positive" else torch.sigmoid(logit)
    coefficient = (s * dlogit)[:, None]
    if cfg.activation == "relu":  # y = 0 wherever relu' = 0, so the derivative is already in y
        return coefficient * (2 * y if squared else (y > 0).to(y.dtype))
    dmeasure_dy = 2 * y if squared else torch.sign(y)
    return coefficient * dmeasure_dy * _activation_derivative(cfg.activation, z, y)



def threshold_schedule(widths: tuple[int, ...], scale: float = 1.0, pyramid: float = 0.0) -> tuple[float, ...]:
    """Per-layer thresholds ``theta_l = scale * width_l * (1 + pyramid * l)``.

    ``scale = 1`` asks for a mean squared activity of 1 per unit. ``pyramid > 0`` gives the
    monotonically increasing ("pyramidal") schedule of "Extending the Forward Forward Algorithm".
    """
    if scale <= 0:
        raise ValueError(f"threshold scale must be > 0, got {scale}")
    if pyramid < 0:
        raise ValueError(f"threshold pyramid must be >= 0 (increasing with depth), got {pyramid}")
    return tuple(scale * w * (1.0 + pyramid * i) for i, w in enumerate(widths))


class LayerStackConfig:
    """What the configs of layer stacks share (mixed into frozen dataclasses that have
    ``widths``, ``threshold_scale``, ``threshold_pyramid`` and a ``layer: LayerConfig``)."""

    @property
    def thresholds(self) -> tuple[float, ...]:
        return threshold_schedule(self.widths, self.threshold_scale, self.threshold_pyramid)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        d = dict(d)
        d["layer"] = LayerConfig(**d.get("layer", {}))
        return cls(**d)


def make_optimizer(params, config: LayerConfig, lr: float | None = None, weight_decay: float | None = None):
    lr = config.lr if lr is None else lr
    weight_decay = config.weight_decay if weight_decay is None else weight_decay
    params = list(params)
    if not config.decay_biases and weight_decay > 0:
        # two groups only where they differ, so that optimizer states saved with one group still load
        params = [{"params": [p for p in params if p.dim() > 1]},
                  {"params": [p for p in params if p.dim() <= 1], "weight_decay": 0.0}]
    # fused: one kernel per step instead of several passes over the weights (the step of a
    # 1000x1000 layer is memory-bound, and FF takes one per layer per batch)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    return torch.optim.SGD(params, lr=lr, momentum=config.momentum, weight_decay=weight_decay, fused=True)


@dataclass
class LayerStep:
    """What one local update returns: the activities it saw (detached) and its numbers."""

    y_pos: torch.Tensor | None  # (B, N) activities before layer normalization
    y_neg: torch.Tensor | None
    loss: float
    goodness_pos: float  # mean activity measure (e.g. sum of squares) on positive data
    goodness_neg: float


class FFLayer(nn.Module, ABC):
    """Base class: subclasses define ``connect`` (normalized input -> pre-activation)."""

    def __init__(self, out_features: int, threshold: float, config: LayerConfig):
        super().__init__()
        self.out_features = out_features
        self.threshold = float(threshold)
        self.config = config
        self._act = ACTIVATIONS[config.activation]
        # Footnote 9: running mean of each unit's activity, regressed towards the layer's mean.
        self.register_buffer("peer_running_mean", torch.full((out_features,), 0.5))
        self._updates = 0  # optimizer steps taken (invalidates cached low-precision weights)

    @abstractmethod
    def connect(self, x_normalized: torch.Tensor) -> torch.Tensor:
        """(B, D) length-normalized input -> (B, N) pre-activations."""

    @property
    @abstractmethod
    def fan_in(self) -> int:
        """Inputs each unit reads (what ``lr_scale="fan_in"`` divides by)."""

    def layer_lr(self) -> float:
        """This layer's learning rate: ``config.lr``, scaled by its fan-in when ``lr_scale`` says so."""
        if self.config.lr_scale == "fan_in":
            return self.config.lr * LR_REFERENCE_FAN_IN / self.fan_in
        return self.config.lr

    def build_optimizer(self) -> None:
        """Every layer learns with its own optimizer: there is no global backward pass."""
        self.optimizer = make_optimizer(self.parameters(), self.config, lr=self.layer_lr())

    def normalized_input(self, x: torch.Tensor) -> torch.Tensor:
        """Length-only normalization of the input (the direction of the layer below's activity)."""
        return layer_norm(x, self.config.goodness)

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        return self.connect(self.normalized_input(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (B, D) activities of the layer below (or the input). Returns (B, N) activities."""
        return self._act(self.pre_activation(x))

    def _peer_loss(self, z_pos: torch.Tensor, y_pos: torch.Tensor) -> torch.Tensor:
        """Footnote 9 through autograd (``peer_dz`` is the closed form): a term whose gradient is
        the regularizer's derivative, ``deviation_j`` per positive row of unit j, and whose value
        is 0.5 * sum_j deviation_j^2 (``config.peer_normalization`` multiplies both)."""
        # Dead ReLUs have no derivative; pretend they do (identity derivative) so their incoming
        # weights still grow towards the layer's mean activity (footnote 9).
        y = z_pos - (z_pos - y_pos).detach() if self.config.activation == "relu" else y_pos
        _, deviation = self.peer_dz(z_pos, y_pos)  # moves the running mean (no graph: see peer_dz)
        surrogate = (deviation * y.mean(dim=0)).sum()
        return surrogate - surrogate.detach() + 0.5 * deviation.square().sum()

    def local_loss(self, x_pos: torch.Tensor | None, x_neg: torch.Tensor | None):
        """Local objective on detached inputs. Returns (loss, y_pos, y_neg)."""
        if x_pos is None and x_neg is None:
            raise ValueError("a local update needs positive data, negative data, or both")
        z_pos = self.pre_activation(x_pos.detach()) if x_pos is not None else None
        z_neg = self.pre_activation(x_neg.detach()) if x_neg is not None else None
        y_pos = self._act(z_pos) if z_pos is not None else None
        y_neg = self._act(z_neg) if z_neg is not None else None
        cfg = self.config
        if cfg.loss == "symmetric":
            if y_pos is None or y_neg is None:
                raise ValueError("the symmetric loss compares positive with negative data: it needs both")
            loss = symmetric_loss(y_pos, y_neg, cfg.goodness, cfg.symmetric_alpha)
        else:
            loss = ff_loss(y_pos, y_neg, self.threshold, cfg.goodness, layer_temperature(cfg, self.threshold))
        if cfg.peer_normalization > 0 and z_pos is not None:
            loss = loss + cfg.peer_normalization * self._peer_loss(z_pos, y_pos)
        return loss, y_pos, y_neg

    def closed_form(self) -> bool:
        """Whether ``train_step`` can skip autograd: a fully connected layer with the logistic loss."""
        return hasattr(self, "linear") and self.config.loss == "logistic"

    def train_step(self, x_pos: torch.Tensor | None, x_neg: torch.Tensor | None) -> LayerStep:
        """One local update of this layer's weights from positive and/or negative data."""
        if self.closed_form():
            return self._closed_form_step(x_pos, x_neg)
        loss, y_pos, y_neg = self.local_loss(x_pos, x_neg)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self._updates += 1
        with torch.no_grad():
            kind = self.config.goodness
            g_pos = activity_measure(y_pos, kind).mean().item() if y_pos is not None else float("nan")
            g_neg = activity_measure(y_neg, kind).mean().item() if y_neg is not None else float("nan")
        return LayerStep(
            y_pos=y_pos.detach() if y_pos is not None else None,
            y_neg=y_neg.detach() if y_neg is not None else None,
            loss=loss.item(),
            goodness_pos=g_pos,
            goodness_neg=g_neg,
        )


    @torch.no_grad()
    def _closed_form_step(self, x_pos: torch.Tensor | None, x_neg: torch.Tensor | None) -> LayerStep:
        """The same update as the autograd path, in two matrix products for both phases: one
        forward pass over the positive and negative rows together, and the weight gradient
        ``dz.T @ x_norm`` in closed form (``ff_dz``). No graph is built and nothing flows to the
        input: FF never needs the gradient with respect to a layer's input."""
        if x_pos is None and x_neg is None:
            raise ValueError("a local update needs positive data, negative data, or both")
        parts = [x for x in (x_pos, x_neg) if x is not None]
        x_norm = self.normalized_input(torch.cat(parts) if len(parts) == 2 else parts[0])
        n_pos = len(x_pos) if x_pos is not None else 0
        return self._step_from(self.connect(x_norm), n_pos, x_pos is not None, x_neg is not None,
                               lambda dz: self.weight_gradient(dz, x_norm))

    def _step_from(self, z: torch.Tensor, n_pos: int, has_pos: bool, has_neg: bool, weight_gradient) -> LayerStep:
        """The closed-form step from the pre-activations ``z`` of the positive rows (the first
        ``n_pos``) and the negative rows; ``weight_gradient(dz)`` gives the weights' gradient."""
        y = self._act(z)
        grads, loss = [], 0.0
        cfg, kind = self.config, self.config.goodness
        temperature = layer_temperature(cfg, self.threshold)
        y_pos = y[:n_pos] if has_pos else None
        y_neg = y[n_pos:] if has_neg else None
        for phase, rows, yy in (("positive", slice(0, n_pos), y_pos), ("negative", slice(n_pos, None), y_neg)):
            if yy is None:
                continue
            grads.append(ff_dz(self, z[rows], yy, phase) / len(yy))  # each phase averaged over its rows
            logit = goodness_sign(kind) * (activity_measure(yy, kind) - self.threshold) / temperature
            loss += float(temperature * F.softplus(-logit if phase == "positive" else logit).mean())
        if cfg.peer_normalization > 0 and y_pos is not None:
            loss += self._peer_gradient(z[:n_pos], y_pos, grads[0])
        dz = torch.cat(grads) if len(grads) == 2 else grads[0]
        self.linear.weight.grad = weight_gradient(dz)
        self.linear.bias.grad = dz.sum(dim=0)
        self.optimizer.step()
        self._updates += 1
        self.optimizer.zero_grad(set_to_none=True)
        g_pos = activity_measure(y_pos, kind).mean().item() if y_pos is not None else float("nan")
        g_neg = activity_measure(y_neg, kind).mean().item() if y_neg is not None else float("nan")
        return LayerStep(y_pos=y_pos, y_neg=y_neg, loss=loss, goodness_pos=g_pos, goodness_neg=g_neg)

    def _peer_gradient(self, z_pos: torch.Tensor, y_pos: torch.Tensor, dz_pos: torch.Tensor) -> float:
        """Footnote 9 in closed form, as ``_peer_loss`` through autograd: updates the running mean
        and adds the regularizer's derivative to the positive rows' ``dz_pos`` (in place).
        Returns the regularizer's value (times its strength), as ``_peer_loss`` reports it."""
        dz, deviation = self.peer_dz(z_pos, y_pos, per=len(y_pos))
        dz_pos += dz
        return float(self.config.peer_normalization * 0.5 * deviation.square().sum())

    @torch.no_grad()  # a closed form: no graph may reach the running-mean buffer
    def peer_dz(self, z_pos: torch.Tensor, y_pos: torch.Tensor, per: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Moves the running mean towards these positive rows and returns (each row's derivative
        of the regularizer with respect to its pre-activations, divided by ``per``; each unit's
        deviation from the layer's mean). ``per`` = the rows for a batch's mean loss (``FFLinear``),
        1 for a sum over frames whose mean is taken later (``ffcore.online``)."""
        cfg = self.config
        m = cfg.peer_momentum
        running = self.peer_running_mean * m + y_pos.mean(dim=0) * (1 - m)
        self.peer_running_mean.copy_(running)
        deviation = running - running.mean()
        # The paper's "additional derivative" (footnote 9, as in its author's code): each positive
        # row's unit j is pushed by strength x (running_j - the layer's mean), a step in the units
        # of the FF derivative whatever the width. (Until 2026-12-01 this was the derivative of
        # strength x mean_j deviation_j^2 through the running mean, 2 (1 - m) / width times as
        # large: at 0.03 and 2000 units, 3e-6, so the regularizer did nothing.)
        dy = (cfg.peer_normalization * deviation / per)[None, :]
        # Dead ReLUs count as having slope 1 here (see _peer_loss), so they can come back.
        if cfg.activation == "relu":
            return dy, deviation
        return dy * _activation_derivative(cfg.activation, z_pos, y_pos), deviation

    def weight_gradient(self, dz: torch.Tensor, x_norm: torch.Tensor) -> torch.Tensor:
        """``dz.T @ x_norm``: the weight gradient of a batch, a sum of outer products."""
        return self.matmul(dz.T, x_norm)

    def matmul(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``a @ b`` in the layer's matmul precision (float32, or bfloat16 products with float32 results)."""
        if self.config.matmul_dtype == "bfloat16":
            return (a.to(torch.bfloat16) @ b.to(torch.bfloat16)).float()
        return a @ b


class FFLinear(FFLayer):
    """A fully connected FF layer."""

    def __init__(self, in_features: int, out_features: int, threshold: float, config: LayerConfig):
        super().__init__(out_features, threshold, config)
        self.in_features = in_features
        self.linear = nn.Linear(in_features, out_features)
        # The input is RMS-normalized (components O(1)), so std 1/sqrt(D) gives O(1) pre-activations.
        nn.init.normal_(self.linear.weight, std=1.0 / math.sqrt(in_features))
        nn.init.zeros_(self.linear.bias)
        # Local receptive fields kept by a 0/1 mask (N, D) (ffcore.local.restrict_linear); None: all.
        self.register_buffer("mask", None, persistent=False)
        self.build_optimizer()

    @property
    def fan_in(self) -> int:
        if getattr(self, "mask", None) is not None:
            return int(self.mask.sum(dim=1).max())
        return self.in_features

    def restrict(self, weight_change: torch.Tensor) -> torch.Tensor:
        """The part of a weight gradient or change that this layer's connectivity allows."""
        return weight_change if self.mask is None else weight_change * self.mask

    def weight_gradient(self, dz: torch.Tensor, x_norm: torch.Tensor) -> torch.Tensor:
        return self.restrict(super().weight_gradient(dz, x_norm))

    def connect(self, x_normalized: torch.Tensor, columns: int | None = None) -> torch.Tensor:
        """Pre-activations of normalized inputs; ``columns``: the inputs are only the first
        ``columns`` of the layer's (the rest are zero), so the product skips the others."""
        w, b = self.linear.weight, self.linear.bias
        if self.config.matmul_dtype == "bfloat16":  # bf16 products (AVX-512 BF16, tensor cores), fp32 master weights
            if torch.is_grad_enabled() and w.requires_grad:  # the autograd path: cast in the graph
                w, b = w.to(torch.bfloat16), b.to(torch.bfloat16)
            else:
                w, b = self._bf16_weights()
            return F.linear(x_normalized.to(torch.bfloat16), w if columns is None else w[:, :columns], b).float()
        if columns is None:
            return self.linear(x_normalized)
        return F.linear(x_normalized, w[:, :columns], b)

    # ---- a first layer whose input starts with a label (supervised FF, paper 3.3) ----------------
    # Its neutral, positive and negative inputs differ only in the first C entries, so the
    # product with the other D - C inputs is shared: one matrix product instead of three, and one
    # weight gradient over the rest instead of two; the label columns are a gather and a scatter.

    @torch.no_grad()
    def shared_product(self, rest: torch.Tensor, num_classes: int) -> torch.Tensor:
        """``rest @ W[:, C:].T`` (B, N) for inputs ``[label, rest]`` whose label has C entries."""
        return self.matmul(rest, self.linear.weight[:, num_classes:].T)

    def rest_size(self, rest: torch.Tensor) -> torch.Tensor:
        """(B,): what ``layer_norm`` measures of the non-label inputs (sum of squares, or of
        absolute values for the ``*_sum`` goodness kinds); computed once for all three passes."""
        return rest.square().sum(dim=1) if self.config.goodness.endswith("ssq") else rest.abs().sum(dim=1)

    def label_pre_activation(self, shared: torch.Tensor, rest_size: torch.Tensor, labels: torch.Tensor | None,
                             num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Pre-activations (B, N) for the inputs ``[one-of-C labels (neutral when None), rest]``,
        from ``shared_product`` and ``rest_size``, and each row's normalizing scale (B, 1), as
        ``layer_norm`` has it."""
        w_label = self.linear.weight[:, :num_classes]
        squared = self.config.goodness.endswith("ssq")
        if labels is None:
            value = NEUTRAL_LABEL_VALUE
            label_term = value * w_label.sum(dim=1)[None, :]
            label_size = num_classes * (value**2 if squared else value)
        else:
            label_term = w_label.T[labels]
            label_size = 1.0
        mean = (rest_size + label_size) / self.in_features
        scale = (mean.sqrt() if squared else mean)[:, None] + 1e-8
        return (shared + label_term) / scale + self.linear.bias, scale

    @torch.no_grad()
    def label_step(self, shared: torch.Tensor, rest: torch.Tensor, rest_size: torch.Tensor,
                   pos_labels: torch.Tensor, neg_labels: torch.Tensor, num_classes: int) -> LayerStep:
        """``train_step`` on positive inputs ``[one-hot pos_labels, rest]`` and negative inputs
        ``[one-hot neg_labels, rest]``, from ``shared_product(rest)``: the same update."""
        # one-hot labels of either phase have the same size, so both phases share one scale
        z_pos, scale = self.label_pre_activation(shared, rest_size, pos_labels, num_classes)
        z_neg, _ = self.label_pre_activation(shared, rest_size, neg_labels, num_classes)
        n = len(rest)

        def weight_gradient(dz: torch.Tensor) -> torch.Tensor:
            dz_pos, dz_neg = dz[:n] / scale, dz[n:] / scale  # the normalization folded into dz
            grad = torch.empty_like(self.linear.weight)
            grad[:, num_classes:] = self.matmul((dz_pos + dz_neg).T, rest)
            label = torch.zeros(num_classes, grad.shape[0], dtype=dz.dtype, device=dz.device)
            label.index_add_(0, pos_labels, dz_pos).index_add_(0, neg_labels, dz_neg)
            grad[:, :num_classes] = label.T
            return grad

        return self._step_from(torch.cat((z_pos, z_neg)), n, True, True, weight_gradient)

    def _bf16_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """bf16 copies of the weights, made once per update (the neutral pass, the positive and
        negative passes and evaluation between two updates share them)."""
        w, b = self.linear.weight, self.linear.bias
        # fused optimizer steps do not bump _version: the layer counts its own updates too
        key = (w._version, b._version, w.data_ptr(), self._updates)
        if getattr(self, "_bf16_key", None) != key:
            with torch.no_grad():
                self._bf16 = (w.to(torch.bfloat16), b.to(torch.bfloat16))
            self._bf16_key = key
        return self._bf16

    def delta_factors(self, x: torch.Tensor, phase: str, lr: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A plain-SGD step of the FF loss for one phase, as low-rank factors, without changing weights.

        For a linear layer the weight gradient of a batch is a sum of outer products, so the step
        is ``W += left.T @ right`` and ``b += left.sum(0)`` with ``left = -lr * dL/dz`` (B, N) and
        ``right`` the normalized input (B, D): compact whenever B < min(N, D).
        Returns (left, right, y) where y (B, N) is the activity the layer computed.
        """
        if phase not in ("positive", "negative"):
            raise ValueError(f"phase must be 'positive' or 'negative', got {phase!r}")
        if self.config.loss != "logistic":
            raise ValueError("separate positive and negative updates need the logistic (threshold) loss")
        right = self.normalized_input(x.detach())
        z = self.linear(right).detach().requires_grad_(True)
        y = self._act(z)
        y_pos, y_neg = (y, None) if phase == "positive" else (None, y)
        loss = ff_loss(y_pos, y_neg, self.threshold, self.config.goodness)
        (dz,) = torch.autograd.grad(loss, z)
        return -lr * dz, right, y.detach()
