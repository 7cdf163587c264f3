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

from ffcore.goodness import GOODNESS_KINDS, LOSS_KINDS, activity_measure, ff_loss, layer_norm, symmetric_loss

ACTIVATIONS = {
    "relu": F.relu,
    "gelu": F.gelu,
    "leaky_relu": lambda z: F.leaky_relu(z, 0.01),
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
}
OPTIMIZERS = ("sgd", "adam")


@dataclass(frozen=True)
class LayerConfig:
    """Hyperparameters of one FF layer's local learning (shared by every layer of a net)."""

    activation: str = "relu"
    goodness: str = "max_ssq"
    loss: str = "logistic"  # "logistic" (paper eq. 1 with a threshold) or "symmetric" (goodness gap)
    symmetric_alpha: float = 4.0
    peer_normalization: float = 0.0  # strength of the footnote-9 regularizer; 0 turns it off
    peer_momentum: float = 0.9  # running mean of each unit's activity
    optimizer: str = "sgd"
    lr: float = 1e-3
    momentum: float = 0.9  # SGD momentum (ignored by Adam)
    weight_decay: float = 3e-4
    # Width of the logistic's transition, as a fraction of the threshold: p(positive) =
    # sigma((G - theta) / T) with T = max(1, temperature * theta). 0 is the paper's eq. 1 (T = 1),
    # whose logits are of the order of the layer width, so the loss saturates and its steps are
    # all-or-nothing; T ~ theta / 4 makes them shrink smoothly near the threshold.
    temperature: float = 0.0

    def __post_init__(self):
        checks = [
            (self.activation in ACTIVATIONS, f"activation {self.activation!r} not in {sorted(ACTIVATIONS)}"),
            (self.goodness in GOODNESS_KINDS, f"goodness {self.goodness!r} not in {list(GOODNESS_KINDS)}"),
            (self.loss in LOSS_KINDS, f"loss {self.loss!r} not in {list(LOSS_KINDS)}"),
            (self.optimizer in OPTIMIZERS, f"optimizer {self.optimizer!r} not in {list(OPTIMIZERS)}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (self.peer_normalization >= 0, f"peer_normalization must be >= 0, got {self.peer_normalization}"),
            (self.temperature >= 0, f"temperature must be >= 0, got {self.temperature}"),
            (0 <= self.peer_momentum < 1, f"peer_momentum must be in [0, 1), got {self.peer_momentum}"),
            (0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


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
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=config.momentum, weight_decay=weight_decay)


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

    @abstractmethod
    def connect(self, x_normalized: torch.Tensor) -> torch.Tensor:
        """(B, D) length-normalized input -> (B, N) pre-activations."""

    def build_optimizer(self) -> None:
        """Every layer learns with its own optimizer: there is no global backward pass."""
        self.optimizer = make_optimizer(self.parameters(), self.config)

    def normalized_input(self, x: torch.Tensor) -> torch.Tensor:
        """Length-only normalization of the input (the direction of the layer below's activity)."""
        return layer_norm(x, self.config.goodness)

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        return self.connect(self.normalized_input(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (B, D) activities of the layer below (or the input). Returns (B, N) activities."""
        return self._act(self.pre_activation(x))

    def _peer_loss(self, z_pos: torch.Tensor, y_pos: torch.Tensor) -> torch.Tensor:
        # Dead ReLUs have no derivative; pretend they do (identity derivative) so their incoming
        # weights still grow towards the layer's mean activity (footnote 9).
        y = z_pos - (z_pos - y_pos).detach() if self.config.activation == "relu" else y_pos
        m = self.config.peer_momentum
        running = self.peer_running_mean.detach() * m + y.mean(dim=0) * (1 - m)
        self.peer_running_mean.copy_(running.detach())
        return (running - running.mean().detach()).square().mean()

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
            loss = ff_loss(y_pos, y_neg, self.threshold, cfg.goodness)
        if cfg.peer_normalization > 0 and z_pos is not None:
            loss = loss + cfg.peer_normalization * self._peer_loss(z_pos, y_pos)
        return loss, y_pos, y_neg

    def train_step(self, x_pos: torch.Tensor | None, x_neg: torch.Tensor | None) -> LayerStep:
        """One local update of this layer's weights from positive and/or negative data."""
        loss, y_pos, y_neg = self.local_loss(x_pos, x_neg)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
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


class FFLinear(FFLayer):
    """A fully connected FF layer."""

    def __init__(self, in_features: int, out_features: int, threshold: float, config: LayerConfig):
        super().__init__(out_features, threshold, config)
        self.in_features = in_features
        self.linear = nn.Linear(in_features, out_features)
        # The input is RMS-normalized (components O(1)), so std 1/sqrt(D) gives O(1) pre-activations.
        nn.init.normal_(self.linear.weight, std=1.0 / math.sqrt(in_features))
        nn.init.zeros_(self.linear.bias)
        self.build_optimizer()

    def connect(self, x_normalized: torch.Tensor) -> torch.Tensor:
        return self.linear(x_normalized)

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
