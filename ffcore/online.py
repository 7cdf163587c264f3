"""The online-learning contract of the recurrent FF net, shared by the in-process trainer and the
service's wake and sleep workers (in the spirit of River's ``learn_one`` / ``predict_one``).

    learner = OnlineLearner(model, OnlineConfig())
    out = learner.learn_step(frames, labels, state)   # predict first (prequential), then learn
    learner.apply(learner.take_positive())            # the positive phase, every W frames
    g = negative_gradient(snapshot, frames, labels)   # the negative phase, from a weight snapshot
    learner.apply(g)                                  # the same update rule for both phases

The positive phase of a step needs only that step: each layer's FF-loss gradient is a sum of
per-frame outer products ``dz.T @ x_norm``, added to a dense accumulator the size of the weights,
so memory does not depend on how many frames are accumulated and no activation is stored. The
negative phase is computed on a copy of the weights (a snapshot, "during sleep"), from the
states the dreamt frames' streams had, and travels as an :class:`FFGradient`. Both go through
one optimizer (SGD, optionally with momentum), so separated phases compose like interleaved ones.

Gradients are accumulated as *sums* over frames; ``apply`` steps down their *mean*, normalized
by each layer's input width (``|[x, 1]|^2 = D + 1`` for RMS-normalized inputs), so accumulating
W frames and applying once equals one batched step on those frames, and ``lr`` means the same
fraction of each pre-activation's loss derivative for any widths.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from safetensors.torch import save as st_save

from ffcore.finite import all_finite
from ffcore.goodness import activity_measure, goodness_sign
from ffcore.layers import ff_dz
from ffcore.recurrent import RecurrentFF
from ffcore.serial import load_tensors, metadata
from ffcore.state import RecurrentState


@dataclass(frozen=True)
class OnlineConfig:
    """How the online learner updates the FF layers (the readout keeps its own optimizer)."""

    lr: float = 1.0  # normalized step (see the module docstring); 1.0 measured best on 4 MNIST variants
    momentum: float = 0.0  # the service's default; not found to help in tuning
    weight_decay: float = 0.0
    freeze: bool = False  # FF layers fixed: only the readout learns (the control of every claim)
    unsupervised: bool = False  # every frame learns with the neutral label on top
    replay: int = 100  # frames kept (the most recent learned) for the negative phase of a step
    # A step's gradient is its frames' sum divided by max(frames, step_frames): a step of fewer
    # frames moves the weights proportionally less, so a trickle of frames (a window closed by
    # time, not by count) learns at the same rate per frame as a full window. With 1 (the mean,
    # whatever the count) a one-frame step is as large as a 50-frame one: one stream stepping
    # every frame measured 67.4% MNIST test error against 13.1% in windows of 50
    # (docs/RESULTS.md, "Online learning").
    step_frames: int = 1

    def __post_init__(self):
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.replay < 1:
            raise ValueError(f"replay must be >= 1, got {self.replay}")
        if self.step_frames < 1:
            raise ValueError(f"step_frames must be >= 1, got {self.step_frames}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")


# Labeled frames per step of the readout when many steps' frames are learned at once. Measured
# in-process on 50k MNIST images x 2 frames, 16 streams, 160-frame windows: a readout step per
# 16 frames 5.63% test error; the frames of 64- or 256-frame polls in chunks of 64: 5.97 / 5.98%,
# in chunks of 16: 5.68 / 5.76% (fewer, larger steps make the momentum's effect per frame late).
READOUT_CHUNK = 16
# Frames whose outer products wait, as factors, before one matrix product adds them to the dense
# sum: a rank-S update per step would read and write the whole weight-sized accumulator each time.
FOLD_ROWS = 256


class FFGradient:
    """The FF-loss gradient of every hidden layer, summed over ``count`` frames (dense, the size
    of the weights, plus at most FOLD_ROWS frames of factors: it does not grow with the frames it
    sums)."""

    def __init__(self, weights: list[torch.Tensor], biases: list[torch.Tensor], count: int = 0):
        self._weights, self._biases, self.count = weights, biases, int(count)
        self._pending: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in weights]
        self._rows = [0 for _ in weights]

    @classmethod
    def zeros_like(cls, model: RecurrentFF) -> "FFGradient":
        return cls([torch.zeros_like(layer.linear.weight) for layer in model.layers],
                   [torch.zeros_like(layer.linear.bias) for layer in model.layers])

    @property
    def weights(self) -> list[torch.Tensor]:
        """Every layer's dense weight gradient (N_l, D_l)."""
        for i in range(len(self._weights)):
            self._fold(i)
        return self._weights

    @property
    def biases(self) -> list[torch.Tensor]:
        """Every layer's dense bias gradient (N_l,)."""
        for i in range(len(self._biases)):
            self._fold(i)
        return self._biases

    def add_(self, i: int, dz: torch.Tensor, x_norm: torch.Tensor) -> None:
        """Add frames' gradient of layer ``i``: ``dz`` (B, N) loss derivatives, ``x_norm`` (B, D)."""
        self._pending[i].append((dz, x_norm))
        self._rows[i] += len(dz)
        if self._rows[i] >= FOLD_ROWS:
            self._fold(i)

    def _fold(self, i: int) -> None:
        if not self._pending[i]:
            return
        left = torch.cat([dz for dz, _ in self._pending[i]])
        right = torch.cat([x for _, x in self._pending[i]])
        self._weights[i].addmm_(left.T, right)
        self._biases[i].add_(left.sum(dim=0))
        self._pending[i], self._rows[i] = [], 0

    def scale_(self, factor: float) -> "FFGradient":
        for t in (*self.weights, *self.biases):
            t.mul_(factor)
        return self

    def is_finite(self) -> bool:
        return all_finite((*self.weights, *self.biases))

    def norms(self) -> list[float]:
        return [float(w.norm()) for w in self.weights]

    def to_bytes(self, dtype: torch.dtype | None = None) -> bytes:
        """safetensors bytes (never pickle); the frame count travels in the metadata. ``dtype``:
        rounded to it on the way (bfloat16: half the bytes); :meth:`from_bytes` gives float32."""
        tensors = {f"{i}.weight": w.detach().to(dtype or w.dtype).cpu().contiguous() for i, w in enumerate(self.weights)}
        tensors.update({f"{i}.bias": b.detach().to(dtype or b.dtype).cpu().contiguous()
                        for i, b in enumerate(self.biases)})
        return st_save(tensors, metadata={"count": str(self.count)})

    @classmethod
    def from_bytes(cls, data: bytes, device="cpu") -> "FFGradient":
        tensors = load_tensors(data, "FF gradient",
                               lambda k: {f"{i}.{part}" for i in range(k // 2) for part in ("weight", "bias")})
        n = len(tensors) // 2
        count = metadata(data).get("count", "0")
        if not count.isdigit():
            raise ValueError(f"a serialized gradient's count must be a whole number, got {count!r}")
        return cls([tensors[f"{i}.weight"].to(device, torch.float32) for i in range(n)],
                   [tensors[f"{i}.bias"].to(device, torch.float32) for i in range(n)], int(count))


def phase_iteration(model: RecurrentFF, frames: torch.Tensor, top: torch.Tensor, state: RecurrentState,
                    phase: str, grad: FFGradient | None, mask: torch.Tensor | None = None):
    """One damped synchronous iteration; adds the phase's gradient of the frames in ``mask``
    (all if None) to ``grad`` (if given). Returns (new state, goodness (B, L))."""
    ys, new, good = state.activities, [], []
    for i, layer in enumerate(model.layers):
        x_norm = model.normalized_inputs(frames, top, ys, i)
        z = layer.linear(x_norm)
        y = layer._act(z)
        kind = layer.config.goodness
        measure = activity_measure(y, kind)  # the loss's and the goodness's
        if grad is not None:
            dz = ff_dz(layer, z, y, phase, measure)
            if phase == "positive":
                add_peer_dz_(layer, z, y, dz, mask)
            if mask is None:
                grad.add_(i, dz, x_norm)
            elif mask.any():
                grad.add_(i, dz[mask], x_norm[mask])
        new.append(model._damp(ys[i], y))
        good.append(measure if goodness_sign(kind) > 0 else -measure)
    return RecurrentState(new), torch.stack(good, dim=1)


def add_peer_dz_(layer, z: torch.Tensor, y: torch.Tensor, dz: torch.Tensor, mask: torch.Tensor | None = None) -> None:
    """Footnote 9's peer normalization for frames learned a step at a time (call it in the
    positive phase only, as ``FFLinear`` does): the layer's running mean activity per unit moves
    towards these frames' (the rows in ``mask``, all if None), and each of those rows of ``dz``
    gets the paper's additional derivative, strength x (running_j - the layer's mean)
    (``FFLayer.peer_dz``). Per frame, not per batch: ``apply`` takes the step's mean, so a step
    equals ``FFLinear``'s closed form on the same rows. Nothing when the strength is 0."""
    rows = y if mask is None else y[mask]
    if layer.config.peer_normalization <= 0 or not len(rows):
        return
    peer, _ = layer.peer_dz(z if mask is None else z[mask], rows)
    if mask is None:
        dz += peer
    else:
        dz[mask] += peer


def normalized_step(layers, optimizer: torch.optim.Optimizer, grads: list[FFGradient], scale: float = 1.0,
                    step_frames: int = 1) -> None:
    """The one update rule of both phases: a step of ``optimizer`` (over the layers' weights and
    biases) down the sum of each gradient's *mean* over its frames (over ``step_frames`` when it
    has fewer), normalized by each layer's input width. Several gradients in one call are one step
    on their combined direction (the positive and negative phases of the same update, paper
    figure 5's curve (b))."""
    grads = [g for g in grads if g.count]
    if not grads:
        return
    for i, layer in enumerate(layers):
        # Normalized step: the layer's input is RMS-normalized, so |[x, 1]|^2 = D + 1 for every
        # frame; dividing by it makes a step change a pre-activation by lr times its own loss
        # derivative, whatever the width of the layer below.
        width = layer.linear.weight.shape[1] + 1
        layer.linear.weight.grad = layer.restrict(sum(
            g.weights[i].to(layer.linear.weight) * (scale / (max(g.count, step_frames) * width)) for g in grads))
        layer.linear.bias.grad = sum(g.biases[i].to(layer.linear.bias) * (scale / (max(g.count, step_frames) * width))
                                     for g in grads)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


@dataclass
class ReplaySample:
    """Frames a positive step learned from, with their labels and the state each frame's stream
    had when it arrived: what the negative phase needs to dream the same frames with wrong labels
    in the same context. ``frames`` (n, D), ``labels`` (n,), ``state`` n rows."""

    frames: torch.Tensor
    labels: torch.Tensor
    state: RecurrentState

    def __len__(self) -> int:
        return len(self.frames)

    @staticmethod
    def cat(parts: list["ReplaySample"]) -> "ReplaySample":
        return ReplaySample(torch.cat([p.frames for p in parts]), torch.cat([p.labels for p in parts]),
                            RecurrentState.cat([p.state for p in parts]))

    def last(self, n: int) -> "ReplaySample":
        return ReplaySample(self.frames[-n:], self.labels[-n:], RecurrentState([y[-n:] for y in self.state.activities]))

    def to_bytes(self) -> bytes:
        """safetensors bytes (never pickle)."""
        tensors = {"frames": self.frames.detach().cpu().contiguous(), "labels": self.labels.detach().cpu().contiguous()}
        tensors.update({f"state.{i}": y.detach().cpu().contiguous() for i, y in enumerate(self.state.activities)})
        return st_save(tensors)

    @classmethod
    def from_bytes(cls, data: bytes, device="cpu") -> "ReplaySample":
        tensors = load_tensors(data, "replay sample",
                               lambda k: {"frames", "labels", *(f"state.{i}" for i in range(max(k - 2, 1)))})
        layers = len(tensors) - 2
        return cls(tensors["frames"].to(device), tensors["labels"].to(device),
                   RecurrentState([tensors[f"state.{i}"].to(device) for i in range(layers)]))


@dataclass
class StepResult:
    state: RecurrentState  # the streams' states after this frame
    logits: torch.Tensor | None  # (S_labeled, C) the readout's predictions made BEFORE learning
    goodness: torch.Tensor  # (S, L) goodness of every layer after the step


class OnlineLearner:
    """Learns a :class:`RecurrentFF` from streams, one frame per stream per step.

    ``learn_step`` predicts (the readout on the frame's bottom-up features, as a client's predict
    would) before learning, trains the readout, advances every stream's state by one damped
    iteration and adds the positive phase's gradient to an accumulator; ``apply`` takes a
    gradient of either phase through the one optimizer.
    """

    def __init__(self, model: RecurrentFF, config: OnlineConfig | None = None):
        self.model = model
        self.config = config or OnlineConfig()
        self.positive = FFGradient.zeros_like(model)
        self._readout_velocity: torch.Tensor | None = None
        self._replay: list[ReplaySample] = []
        self._replay_size = 0
        self.optimizer = torch.optim.SGD([p for layer in model.layers for p in layer.linear.parameters()],
                                         lr=self.config.lr, momentum=self.config.momentum,
                                         weight_decay=self.config.weight_decay)

    @torch.no_grad()
    def learn_step(self, frames: torch.Tensor, labels: torch.Tensor, state: RecurrentState,
                   readout: bool = True) -> StepResult:
        """``frames`` (S, D), ``labels`` (S,) with -1 for unlabeled, ``state`` of these S streams.
        ``readout=False``: the caller trains the readout itself (``learn_readout``, for many
        steps' frames at once); ``logits`` is then None."""
        labeled = labels >= 0
        everything = bool(labeled.all()) or self.config.unsupervised
        logits = None
        if readout and labeled.any():
            logits = self.learn_readout(frames, labels) if everything and not self.config.unsupervised \
                else self.learn_readout(frames[labeled], labels[labeled])
        top = self.model.label_vector(None if self.config.unsupervised else labels, len(frames), frames.device)
        grad = None if self.config.freeze else self.positive
        new, good = phase_iteration(self.model, frames, top, state, "positive", grad, None if everything else labeled)
        self.model.observe_inputs(frames)
        if grad is not None:
            if everything:
                self.positive.count += len(frames)
                self._remember(ReplaySample(frames, labels, state.clone()))
            elif labeled.any():
                self.positive.count += int(labeled.sum())
                self._remember(ReplaySample(frames[labeled], labels[labeled], state.index(labeled.nonzero().squeeze(1))))
        return StepResult(new, logits, good)

    @torch.no_grad()
    def learn_readout(self, frames: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Predict labeled frames (B, D) in order with the readout on their bottom-up features,
        then learn from them, READOUT_CHUNK frames per step. Returns the (B, C) logits made before
        learning from each frame (prequential)."""
        # One bottom-up pass for them all: the readout's steps do not change the FF layers.
        features = self.model.bottom_up_features(frames)
        out = [self.readout_step(features[i : i + READOUT_CHUNK], labels[i : i + READOUT_CHUNK])
               for i in range(0, len(frames), READOUT_CHUNK)]
        return out[0] if len(out) == 1 else torch.cat(out)

    def _remember(self, part: ReplaySample) -> None:
        """Keep the most recent ``config.replay`` learned frames (bounded memory)."""
        self._replay.append(part)
        self._replay_size += len(part)
        while self._replay_size - len(self._replay[0]) >= self.config.replay:
            self._replay_size -= len(self._replay.pop(0))

    def take_replay(self) -> ReplaySample | None:
        """The most recent learned frames since the last call (at most ``config.replay``), or None."""
        if not self._replay:
            return None
        sample = ReplaySample.cat(self._replay).last(self.config.replay)
        self._replay, self._replay_size = [], 0
        return sample

    def readout_step(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """One step of the softmax readout down its cross-entropy summed over the frames (so its
        speed per frame does not depend on how many frames share a step). Returns the logits
        computed before the step: the prequential predictions."""
        readout, model = self.model.readout, self.model
        served = model.served_readout(features)
        logits = readout(features)
        error = torch.softmax(logits, dim=1)
        error[torch.arange(len(labels)), labels] -= 1.0  # d(cross-entropy)/d(logits), (B, C)
        # SGD with momentum and weight decay, torch.optim.SGD's rule written out (it costs less
        # than the optimizer's own bookkeeping at one small step per frame)
        w, group = readout.linear.weight, readout.optimizer.param_groups[0]
        step = torch.addmm(w, error.T, features, beta=group["weight_decay"])
        if self._readout_velocity is None:
            self._readout_velocity = step
        else:
            self._readout_velocity.mul_(group["momentum"]).add_(step)
        w.sub_(self._readout_velocity, alpha=group["lr"])
        if model.config.readout_average:  # exponential average over about readout_average frames
            rate = 1.0 - (1.0 - 1.0 / model.config.readout_average) ** len(labels)
            model.readout_mean.lerp_(readout.linear.weight.detach(), rate)
        return served

    def take_positive(self) -> FFGradient:
        """The accumulated positive gradient; the accumulator starts again from zero."""
        out, self.positive = self.positive, FFGradient.zeros_like(self.model)
        return out

    @torch.no_grad()
    def apply(self, grad: FFGradient, scale: float = 1.0) -> None:
        """One optimizer step down ``scale`` times ``grad`` (a sum over frames, either phase).
        Frozen: nothing changes, bit for bit."""
        if self.config.freeze or grad.count == 0:
            return
        normalized_step(self.model.layers, self.optimizer, [grad], scale, self.config.step_frames)

    @contextmanager
    def trial(self, grad: FFGradient):
        """The model with the step ``apply(grad)`` would take (momentum included), for the
        duration of the block; afterwards the weights and the optimizer's state are exactly as
        before. The weights a *deferred* positive step's negative phase is computed on: the live
        weights take the positive and the negative step together once the negatives are back, so
        the frames stepped meanwhile learn on weights where both phases are balanced (one step
        old) rather than on weights that have the positive step alone (benchmarks/online_learning.py:
        5.63% vs 6.54% MNIST test error with the negatives one step late)."""
        params = self.optimizer.param_groups[0]["params"]
        with torch.no_grad():
            saved = [p.detach().clone() for p in params]
        state = {p: {k: v.clone() if torch.is_tensor(v) else v for k, v in self.optimizer.state[p].items()}
                 for p in params if p in self.optimizer.state}
        self.apply(grad)
        try:
            yield self.model
        finally:
            with torch.no_grad():
                for p, before in zip(params, saved):
                    p.copy_(before)
            self.optimizer.state.clear()
            self.optimizer.state.update(state)
            for layer in self.model.layers:
                layer._updates += 1  # cached reduced-precision weights are stale

    def lookahead(self, grad: FFGradient) -> RecurrentFF:
        """An independent copy of the model after the step ``apply(grad)`` would take; this
        learner is unchanged (see :meth:`trial`)."""
        with self.trial(grad) as model:
            return copy.deepcopy(model)

    @torch.no_grad()
    def step_ratio(self, grad: FFGradient, scale: float = 1.0) -> list[float]:
        """How much a plain step down ``grad`` would change each layer's weights, as a fraction of
        their norm (to refuse an exploding update before applying it)."""
        if not grad.count:
            return [0.0 for _ in self.model.layers]
        lr = self.config.lr * scale / max(grad.count, self.config.step_frames)
        return [float(lr * w.norm() / (layer.linear.weight.shape[1] + 1) / layer.linear.weight.norm().clamp_min(1e-12))
                for layer, w in zip(self.model.layers, grad.weights)]

    # ---- checkpoints: the optimizer's momentum travels with the weights -----------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        out = {}
        for i, p in enumerate(self.optimizer.param_groups[0]["params"]):
            buf = self.optimizer.state.get(p, {}).get("momentum_buffer")
            if buf is not None:
                out[f"momentum.{i}"] = buf.detach().cpu().contiguous()
        return out

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        params = self.optimizer.param_groups[0]["params"]
        for i, p in enumerate(params):
            buf = tensors.get(f"momentum.{i}")
            if buf is not None:
                if buf.shape != p.shape:
                    raise ValueError(f"momentum.{i} has shape {tuple(buf.shape)}, the weight {tuple(p.shape)}")
                self.optimizer.state[p]["momentum_buffer"] = buf.to(p)


@torch.no_grad()
def negative_gradient(model: RecurrentFF, frames: torch.Tensor, neg_labels: torch.Tensor | None, iterations: int,
                      state: RecurrentState | None = None) -> FFGradient:
    """The negative phase from a weight snapshot (``model`` is not changed).

    Each negative frame runs ``iterations`` damped iterations with its wrong label on top (or the
    neutral label where ``neg_labels`` is None, as for hybrid frames), from ``state`` (the
    context its stream had when the frame arrived) or else a bottom-up pass. Layer l (0-based,
    of L) learns only from the iterations at which the top label has reached it (t >= L - l):
    before that its input is the positive frame's own, and pushing it down would undo the
    positive phase instead of separating right labels from wrong. Each layer's gradient is
    averaged over its iterations, so a negative frame weighs as much as a positive one: ``count``
    is the number of frames.
    """
    n_layers = len(model.layers)
    grad = FFGradient.zeros_like(model)
    top = model.label_vector(neg_labels, len(frames), frames.device)
    state = model.initial_state(frames) if state is None else state
    ys = state.activities
    counted = [0] * n_layers
    for t in range(1, iterations + 1):
        new = []
        for i, layer in enumerate(model.layers):
            x_norm = model.normalized_inputs(frames, top, ys, i)
            z = layer.linear(x_norm)
            y = layer._act(z)
            if t >= n_layers - i or t == iterations:
                grad.add_(i, ff_dz(layer, z, y, "negative"), x_norm)
                counted[i] += 1
            new.append(model._damp(ys[i], y))
        ys = new
    for i, k in enumerate(counted):
        grad.weights[i].div_(k)
        grad.biases[i].div_(k)
    grad.count = len(frames)
    return grad
