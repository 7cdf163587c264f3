"""The recurrent top-down FF network of paper section 3.4 (figure 3), as a streaming model.

Bottom layer: the frame. Top layer: a one-of-N label (the neutral label when unknown). Each
hidden layer's new activity comes from the *normalized* activities of the layer below and the
layer above at the previous time step, for all layers at once (synchronous), with damping:

    y_l(t) = damping * y_l(t-1) + (1 - damping) * f(W_l [norm(y_{l-1}(t-1)), norm(y_{l+1}(t-1))])

A static image is "a boring video": the same frame at every step. Learning is local in space and
time: each layer's update uses only that step's inputs and activities, so memory does not grow
with the number of iterations or frames. Positive and negative updates are separate calls, and a
negative update can be computed from a weight snapshot as a delta and applied later (section 4.1).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from ffcore.centering import CenteredInput
from ffcore.delta import WeightDelta
from ffcore.goodness import activity_measure, direction, goodness, layer_norm
from ffcore.layers import FFLinear, LayerConfig, LayerStackConfig
from ffcore.negatives import NEUTRAL_LABEL_VALUE, wrong_labels_hard, wrong_labels_uniform
from ffcore.readout import LinearReadout
from ffcore.state import RecurrentState


@dataclass(frozen=True)
class RecurrentConfig(LayerStackConfig):
    input_dim: int = 784
    num_classes: int = 10
    widths: tuple[int, ...] = (2000, 2000, 2000)
    damping: float = 0.3  # share of the previous pre-normalized state kept at each step
    iterations: int = 8  # K synchronous iterations per image
    eval_window: tuple[int, int] = (3, 5)  # average goodness over these iterations (1-based, inclusive)
    negatives: str = "hard"  # "hard": wrong labels from the model's own predictions; "uniform"
    negative_lr: float | None = None  # plain-SGD step of the negative update; None: the layer lr
    layer: LayerConfig = field(default_factory=LayerConfig)
    threshold_scale: float = 1.0
    threshold_pyramid: float = 0.0
    readout_lr: float = 1e-2
    readout_weight_decay: float = 3e-3
    # Subtract a running per-input mean from every frame before the bottom layer sees it
    # (ffcore.centering says why); learned online (``observe_inputs``).
    center_input: bool = False
    center_horizon: int = 10_000  # frames: a running average first, then an exponential one
    # Predict with an average of the readout's recent weights (Polyak averaging over about this
    # many frames) instead of the last SGD iterate, whose noise the served predictions would
    # carry; 0: the last iterate. Only the online learner (ffcore.online) keeps the average.
    readout_average: int = 0
    # Local receptive fields, bottom-up and top-down (ffcore.local.recurrent_masks): "topographic11"
    # is paper section 4's CIFAR-10 net (32 x 32 maps of 3 units per location, 11 x 11 fields;
    # widths equal to input_dim). None: fully connected. ``image_shape`` places the inputs.
    receptive_fields: str | None = None
    image_shape: tuple[int, int] | None = None

    def __post_init__(self):
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        if self.image_shape is not None:
            object.__setattr__(self, "image_shape", tuple(int(i) for i in self.image_shape))
        object.__setattr__(self, "eval_window", tuple(int(i) for i in self.eval_window))
        if not self.widths or min(self.widths) < 1:
            raise ValueError(f"widths must be a non-empty list of positive sizes, got {self.widths}")
        if not 0.0 <= self.damping < 1.0:
            raise ValueError(f"damping must be in [0, 1), got {self.damping}")
        if self.layer.lr_scale != "none":  # its negative deltas and the service's steps use layer.lr as is
            raise ValueError("the recurrent net takes layer.lr as is: lr_scale must be 'none'")
        if self.iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {self.iterations}")
        lo, hi = self.eval_window
        if not 1 <= lo <= hi <= self.iterations:
            raise ValueError(f"eval_window {self.eval_window} must satisfy 1 <= first <= last <= {self.iterations}")
        if self.negatives not in ("hard", "uniform"):
            raise ValueError(f"negatives must be 'hard' or 'uniform', got {self.negatives!r}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")
        if self.receptive_fields is not None:
            self.field_masks()  # the layout exists and fits the widths

    def field_masks(self) -> list[torch.Tensor] | None:
        """Each layer's 0/1 mask over its inputs ``[below, above]``, or None (fully connected)."""
        if self.receptive_fields is None:
            return None
        from ffcore.local import recurrent_masks

        if self.image_shape is None:
            raise ValueError("local receptive fields need image_shape")
        masks = recurrent_masks(self.receptive_fields, self.image_shape, self.input_dim, len(self.widths),
                                self.num_classes)
        dims = (self.input_dim, *self.widths, self.num_classes)
        wanted = [(dims[i + 1], dims[i] + dims[i + 2]) for i in range(len(self.widths))]
        if [tuple(m.shape) for m in masks] != wanted:
            raise ValueError(f"receptive fields {self.receptive_fields!r} make layers of "
                             f"{[m.shape[0] for m in masks]} units over {self.input_dim} inputs; widths are "
                             f"{list(self.widths)}, input_dim {self.input_dim}")
        return masks



class FFRecurrentLayer(FFLinear):
    """A hidden layer fed bottom-up by the layer below and top-down by the layer above.

    Its input is the concatenation ``[y_below, y_above]``; each part is length-normalized on its
    own, so the layer sees only the two directions (paper figure 3).
    """

    def __init__(self, below: int, above: int, out_features: int, threshold: float, config: LayerConfig):
        super().__init__(below + above, out_features, threshold, config)
        self.below, self.above = below, above

    def normalized_input(self, x: torch.Tensor) -> torch.Tensor:
        x_below, x_above = x.split((self.below, self.above), dim=1)
        return self.normalized_parts(x_below, x_above)

    def normalized_parts(self, x_below: torch.Tensor, x_above: torch.Tensor) -> torch.Tensor:
        """``normalized_input`` of ``[x_below, x_above]``, without joining them first."""
        kind = self.config.goodness
        return torch.cat((layer_norm(x_below, kind), layer_norm(x_above, kind)), dim=1)

    def bottom_up(self, x_below: torch.Tensor) -> torch.Tensor:
        """``forward`` with nothing above yet: the top-down part of the input is zero, and so is its
        normalized direction, so only the bottom-up columns of the weights take part (the same
        activities as ``forward([x_below, 0])`` without the product with the zeros)."""
        return self._act(self.connect(layer_norm(x_below, self.config.goodness), columns=self.below))


class RecurrentFF(CenteredInput, nn.Module):
    """The recurrent top-down FF net: ``step`` for streams, ``fit_batch``/``predict`` for images."""

    kind = "recurrent"

    def __init__(self, config: RecurrentConfig):
        super().__init__()
        self.config = config
        dims = (config.input_dim, *config.widths, config.num_classes)
        self.layers = nn.ModuleList(
            FFRecurrentLayer(dims[i], dims[i + 2], dims[i + 1], theta, config.layer)
            for i, theta in enumerate(config.thresholds)
        )
        masks = config.field_masks()
        if masks is not None:
            from ffcore.local import restrict_linear

            for layer, mask in zip(self.layers, masks):
                restrict_linear(layer, mask)
        self.readout = LinearReadout(sum(config.widths), config.num_classes, config.readout_lr,
                                     config.readout_weight_decay)
        self.register_buffer("readout_mean", torch.zeros_like(self.readout.linear.weight))
        self.init_centering(config.input_dim)  # prepare() and observe_inputs(): ffcore.centering

    # Buffers added after the first checkpoints were written: older files load with their defaults.
    later_buffers = ("readout_mean", "input_mean", "input_count")

    # ---- the top layer ---------------------------------------------------------------------
    def label_vector(self, labels: torch.Tensor | None, n: int, device) -> torch.Tensor:
        """(n, C) one-of-N labels, or the neutral label (all 0.1) where ``labels`` is None or -1."""
        c = self.config.num_classes
        neutral = torch.full((n, c), NEUTRAL_LABEL_VALUE, device=device)
        if labels is None:
            return neutral
        known = labels >= 0
        one_hot = F.one_hot(labels.clamp_min(0), c).float()
        return torch.where(known[:, None], one_hot, neutral)

    # ---- dynamics ---------------------------------------------------------------------------
    def _inputs(self, frames: torch.Tensor, top: torch.Tensor, ys: list[torch.Tensor], i: int) -> torch.Tensor:
        return torch.cat(self._input_parts(frames, top, ys, i), dim=1)

    def _input_parts(self, frames: torch.Tensor, top: torch.Tensor, ys: list[torch.Tensor],
                     i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer ``i``'s (bottom-up, top-down) inputs at the next iteration from activities ``ys``."""
        below = self.prepare(frames) if i == 0 else ys[i - 1]
        above = top if i == len(ys) - 1 else ys[i + 1]
        return below, above

    def normalized_inputs(self, frames: torch.Tensor, top: torch.Tensor, ys: list[torch.Tensor], i: int) -> torch.Tensor:
        """``layers[i].normalized_input(_inputs(...))``, the parts normalized before they are joined."""
        return self.layers[i].normalized_parts(*self._input_parts(frames, top, ys, i))

    @torch.no_grad()
    def initial_state(self, frames: torch.Tensor) -> RecurrentState:
        """One bottom-up pass (no top-down input yet) initializes the hidden layers."""
        ys, h = [], self.prepare(frames)
        for layer in self.layers:
            h = layer.bottom_up(h)
            ys.append(h)
        return RecurrentState(ys)

    def _damp(self, previous: torch.Tensor, computed: torch.Tensor) -> torch.Tensor:
        """``d * previous + (1 - d) * computed`` (one operation)."""
        return torch.lerp(computed, previous, self.config.damping)

    @torch.no_grad()
    def step(self, frames: torch.Tensor, labels: torch.Tensor | None, state: RecurrentState):
        """One damped synchronous iteration for S streams, each advanced by one frame.

        ``frames``: (S, D); ``labels``: (S,) ints with -1 for unknown, or None (all neutral).
        Returns ``(new_state, goodness)`` with goodness (S, L), one column per hidden layer.
        Every layer reads the *previous* state, so the order of the loop does not matter.
        """
        top = self.label_vector(labels, len(frames), frames.device)
        ys = state.activities
        new = [self._damp(ys[i], layer._act(layer.connect(self.normalized_inputs(frames, top, ys, i))))
               for i, layer in enumerate(self.layers)]
        kind = self.config.layer.goodness
        return RecurrentState(new), torch.stack([goodness(y, kind) for y in new], dim=1)

    def _learning_step(self, frames, labels, state: RecurrentState, phase: str) -> tuple[RecurrentState, dict]:
        """One iteration with the local update of every layer for ``phase``, from that step alone."""
        top = self.label_vector(labels, len(frames), frames.device)
        ys, new, stats = state.activities, [], {}
        for i, layer in enumerate(self.layers):
            x = self._inputs(frames, top, ys, i)
            result = layer.train_step(x, None) if phase == "positive" else layer.train_step(None, x)
            y = result.y_pos if phase == "positive" else result.y_neg
            new.append(self._damp(ys[i], y))
            stats[f"loss_{i}"] = result.loss
            stats[f"g_{phase[:3]}_{i}"] = result.goodness_pos if phase == "positive" else result.goodness_neg
        return RecurrentState(new), stats

    def positive_update(self, frames: torch.Tensor, labels: torch.Tensor | None, state: RecurrentState):
        """Step and raise every layer's goodness for (frame, true label). Returns (state, stats)."""
        return self._learning_step(frames, labels, state, "positive")

    # ---- negative phase: direct, or as a delta from a snapshot ---------------------------------
    def _negative_lr(self) -> float:
        return self.config.negative_lr or self.config.layer.lr

    @torch.no_grad()
    def negative_delta(self, frames: torch.Tensor, neg_labels: torch.Tensor, state: RecurrentState):
        """One negative-phase iteration computed without changing the weights.

        Returns ``(delta, new_state)``: ``delta`` is a compact low-rank :class:`WeightDelta`
        (a plain SGD step, no momentum, so it depends only on the weights it came from and can be
        computed offline from a snapshot, then applied later with ``apply_delta``); ``new_state``
        is the negative stream's state after this iteration.
        """
        top = self.label_vector(neg_labels, len(frames), frames.device)
        ys, lr, factors, new = state.activities, self._negative_lr(), [], []
        for i, layer in enumerate(self.layers):
            with torch.enable_grad():
                left, right, y = layer.delta_factors(self._inputs(frames, top, ys, i), "negative", lr)
            factors.append((left, right))
            new.append(self._damp(ys[i], y))
        return WeightDelta(factors), RecurrentState(new)

    @torch.no_grad()
    def delta_matrices(self, delta: WeightDelta) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The dense (weight, bias) change of every layer that ``delta`` stands for; checks it fits."""
        if len(delta.factors) != len(self.layers):
            raise ValueError(f"delta has {len(delta.factors)} layers, the model has {len(self.layers)}")
        out = []
        for layer, (left, right) in zip(self.layers, delta.factors):
            w = layer.linear.weight
            if left.shape[1] != w.shape[0] or right.shape[1] != w.shape[1] or len(left) != len(right):
                raise ValueError(f"delta factors {tuple(left.shape)} x {tuple(right.shape)} do not fit weight {tuple(w.shape)}")
            out.append((layer.restrict(left.to(w).T @ right.to(w)), left.to(w).sum(dim=0)))
        return out

    @torch.no_grad()
    def apply_matrices(self, changes: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        for layer, (dw, db) in zip(self.layers, changes):
            layer.linear.weight.add_(dw)
            layer.linear.bias.add_(db)

    @torch.no_grad()
    def apply_delta(self, delta: WeightDelta) -> None:
        self.apply_matrices(self.delta_matrices(delta))

    def negative_update(self, frames: torch.Tensor, neg_labels: torch.Tensor, state: RecurrentState) -> RecurrentState:
        """Lower every layer's goodness for (frame, wrong label) now; returns the negative state."""
        delta, new_state = self.negative_delta(frames, neg_labels, state)
        self.apply_delta(delta)
        return new_state

    # ---- labels -----------------------------------------------------------------------------
    @torch.no_grad()
    def readout_logits(self, state: RecurrentState) -> torch.Tensor:
        return self.served_readout(torch.cat([direction(y) for y in state.activities], dim=1))

    def served_readout(self, features: torch.Tensor) -> torch.Tensor:
        """(B, F) -> (B, C) logits of the readout that predictions use (averaged, if configured)."""
        if self.config.readout_average:
            return features @ self.readout_mean.T
        return self.readout(features)

    @torch.no_grad()
    def bottom_up_features(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, sum of widths): the normalized hidden activities of one bottom-up pass, the
        readout's input."""
        return torch.cat([direction(y) for y in self.initial_state(frames).activities], dim=1)

    @torch.no_grad()
    def predict_fast(self, frames: torch.Tensor) -> torch.Tensor:
        """Single-pass class probabilities (S, C): one bottom-up pass and the linear readout.
        The cheap estimate for large label sets, and the source of hard negative labels."""
        return torch.softmax(self.served_readout(self.bottom_up_features(frames)), dim=1)

    def negative_labels(self, frames: torch.Tensor, labels: torch.Tensor, generator=None) -> torch.Tensor:
        if self.config.negatives == "hard":
            return wrong_labels_hard(self.predict_fast(frames), labels, generator)
        return wrong_labels_uniform(labels, self.config.num_classes, generator)

    @torch.no_grad()
    def label_goodness(self, frames: torch.Tensor, state: RecurrentState | None = None) -> torch.Tensor:
        """(B, C): goodness summed over hidden layers, averaged over the eval window of
        iterations, with each label clamped on top in turn (paper 3.4). ``state`` (B streams)
        starts the iterations from a stream's context instead of a bottom-up pass; it is not changed."""
        b, c = len(frames), self.config.num_classes
        lo, hi = self.config.eval_window
        x = frames.repeat(c, 1)  # label-major (C * B, D)
        labels = torch.arange(c, device=frames.device).repeat_interleave(b)
        if state is None:
            state = self.initial_state(x)
        else:
            state = RecurrentState([y.repeat(c, 1) for y in state.activities])
        total = torch.zeros(c * b, device=frames.device)
        for t in range(1, hi + 1):
            state, g = self.step(x, labels, state)
            if t >= lo:
                total += g.sum(dim=1)
        return (total / (hi - lo + 1)).view(c, b).T

    predict_methods = ("goodness", "softmax")

    @torch.no_grad()
    def predict(self, frames: torch.Tensor, method: str | None = None) -> torch.Tensor:
        method = method or "goodness"
        if method not in self.predict_methods:
            raise ValueError(f"the recurrent net predicts with {list(self.predict_methods)}, not {method!r}")
        scores = self.label_goodness(frames) if method == "goodness" else self.predict_fast(frames)
        return scores.argmax(dim=1)

    @torch.no_grad()
    def predict_proba(self, frames: torch.Tensor) -> torch.Tensor:
        return self.predict_fast(frames)

    # ---- training on static images ("boring videos") -----------------------------------------
    def train_batch(self, frames: torch.Tensor, labels: torch.Tensor, generator=None) -> dict:
        """K damped iterations on a batch of static images with interleaved positive and negative
        updates at every iteration; the readout learns from the bottom-up pass."""
        init = self.initial_state(frames)
        features = torch.cat([direction(y) for y in init.activities], dim=1)
        readout_loss, _ = self.readout.train_step(features, labels)
        neg_labels = self.negative_labels(frames, labels, generator)
        pos_state, neg_state = init, init.clone()
        stats: dict[str, float] = {}
        for _ in range(self.config.iterations):
            pos_state, s = self.positive_update(frames, labels, pos_state)
            stats.update(s)
            neg_state = self.negative_update(frames, neg_labels, neg_state)
            for i, y in enumerate(neg_state.activities):
                stats[f"g_neg_{i}"] = activity_measure(y, self.config.layer.goodness).mean().item()
        stats["loss"] = sum(v for k, v in stats.items() if k.startswith("loss_"))
        stats["readout_loss"] = readout_loss
        return stats
