"""One training loop for every model (FF supervised, FF unsupervised, backprop).

Models follow a small contract: ``train_batch(x, y, generator) -> dict of floats``,
``predict(x, method) -> (B,) labels``, ``predict_methods`` and their optimizers reachable as
``torch.optim.Optimizer`` attributes of their modules. The loop shuffles, steps, cools the learning
rate down linearly over the last half of training, and evaluates; progress goes to callbacks so
the CLI can draw bars and write logs while notebooks stay quiet.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from ffcore.data.datasets import Splits
from ffcore.data.jitter import random_shifts
from ffcore.metrics import error_rate, macro_f1

EVAL_BATCH = 1000


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    val_error: dict[str, float]  # per prediction method
    seconds: float
    samples_per_second: float
    stats: dict[str, float] = field(default_factory=dict)  # epoch means of the per-batch numbers
    epochs_planned: int = 0  # the run's length as planned after this epoch (fewer under a time budget)


@dataclass
class TrainState:
    """Where a run stands, besides its model and optimizers: what resuming it needs. ``fit``
    updates it after every epoch and continues from it when ``epochs_done`` > 0."""

    epochs_done: int = 0
    planned: int = 0  # the run's length as planned so far (fewer than asked under a time budget)
    elapsed: float = 0.0  # seconds of training and validation so far (the time budget's clock)
    generator: torch.Tensor | None = None  # RNG state of the model's generator (negatives)
    shuffle: torch.Tensor | None = None  # RNG state of the order and jitter generator


def optimizers_of(model: torch.nn.Module) -> list[torch.optim.Optimizer]:
    """Every optimizer owned by the model or its submodules (FF: one per layer plus the readout)."""
    found = []
    for module in model.modules():
        opt = getattr(module, "optimizer", None)
        if isinstance(opt, torch.optim.Optimizer) and opt not in found:
            found.append(opt)
    return found


def cooldown_factor(epoch: int, epochs: int) -> float:
    """1 for the first half of training, then a linear decay that reaches 1/(epochs/2) at the end."""
    half = epochs // 2
    if epoch < half:
        return 1.0
    return 1.0 - (epoch - half) / (epochs - half)


def plan_epochs(requested: int, done: int, elapsed: float, budget: float | None, planned: int) -> int:
    """How many epochs a run with a time budget trains, re-planned after each epoch.

    The plan is what fits the budget at the mean pace so far, and changes only while the
    learning rate is still at its peak (the first half of the current plan), so a run under a
    budget still ends with its cool-down. Without a budget: ``requested``.
    """
    if budget is None or done >= planned // 2:
        return planned
    fits = done + int((budget - elapsed) / (elapsed / done))
    return max(done, min(requested, fits))


def set_lr_factor(model: torch.nn.Module, factor: float) -> None:
    for opt in optimizers_of(model):
        for group in opt.param_groups:
            group.setdefault("initial_lr", group["lr"])
            group["lr"] = group["initial_lr"] * factor


@torch.no_grad()
def predict_all(model, x: torch.Tensor, method: str | None = None, batch_size: int = EVAL_BATCH) -> torch.Tensor:
    return torch.cat([model.predict(x[i : i + batch_size], method) for i in range(0, len(x), batch_size)])


@torch.no_grad()
def evaluate_layers(model, x: torch.Tensor, y: torch.Tensor, batch_size: int = EVAL_BATCH) -> dict[str, float]:
    """Error of the goodness classifier on each hidden layer alone (``"layer 1"`` is the first),
    beside the sum the model classifies with (``"sum of layers 2, 3, 4"``): which layers carry
    the label. Supervised FF MLPs only (the label is written into the input)."""
    if not hasattr(model, "layer_label_goodness"):
        raise ValueError("per-layer errors need a supervised FF MLP (the label written into the input); "
                         f"this checkpoint is a {type(model).__name__}")
    scores = torch.cat([model.layer_label_goodness(x[i : i + batch_size]) for i in range(0, len(x), batch_size)],
                       dim=1)  # (L, N, C)
    out = {f"layer {i + 1}": error_rate(s.argmax(dim=1), y) for i, s in enumerate(scores)}
    used = model.config.goodness_layer_ids
    out["sum of layers " + ", ".join(str(i + 1) for i in used)] = error_rate(scores[list(used)].sum(0).argmax(1), y)
    return out


def evaluate(model, x: torch.Tensor, y: torch.Tensor, num_classes: int, methods=None) -> dict[str, dict]:
    """Error and macro F1 for each prediction method: ``{method: {"error": .., "macro_f1": ..}}``."""
    out = {}
    for method in methods or model.predict_methods:
        pred = predict_all(model, x, method)
        out[method] = {"error": error_rate(pred, y), "macro_f1": macro_f1(pred, y, num_classes)}
    return out


def fit(
    model,
    data: Splits,
    *,
    epochs: int,
    batch_size: int = 100,
    seed: int = 0,
    eval_every: int = 1,
    eval_methods: tuple[str, ...] | None = None,
    on_batch: Callable[[int, int, dict], None] | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    jitter: int = 0,
    time_budget_s: float | None = None,
    state: TrainState | None = None,
) -> list[EpochRecord]:
    """Train ``model`` on ``data.train_*`` for ``epochs``; validation error every ``eval_every`` epochs.

    ``on_batch(epoch, batch_index, stats)`` and ``on_epoch(record)`` report progress.
    ``jitter``: each training image shifted by a random one of the (2 jitter + 1)^2 shifts of up
    to ``jitter`` pixels each way, drawn afresh every batch (paper 3.3; ffcore.data.jitter).
    ``time_budget_s``: train for at most about this long (validation included): the number of
    epochs is cut to fit, decided while the learning rate is at its peak (``plan_epochs``).
    ``state``: kept up to date after every epoch; when it says epochs were done already (a
    resumed run, with the model and its optimizers restored), training continues from there
    exactly as if it had never stopped. Returns the records of the epochs trained in this call.
    """
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    if time_budget_s is not None and time_budget_s <= 0:
        raise ValueError(f"time_budget_s must be > 0, got {time_budget_s}")
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    shuffle = torch.Generator().manual_seed(seed)
    n = len(data.train_x)
    state = state if state is not None else TrainState()
    epoch, planned = state.epochs_done, state.planned or epochs
    if epoch:
        generator.set_state(state.generator)
        shuffle.set_state(state.shuffle)
    history = []
    run_start = time.perf_counter() - state.elapsed
    while epoch < planned:
        set_lr_factor(model, cooldown_factor(epoch, planned))
        start = time.perf_counter()
        order = torch.randperm(n, generator=shuffle).to(device)
        sums: dict[str, float] = {}
        batches = 0
        for b, i in enumerate(range(0, n, batch_size)):
            idx = order[i : i + batch_size]
            x = data.train_x[idx]
            if jitter:
                x = random_shifts(x, data.image_shape, jitter, shuffle)
            stats = model.train_batch(x, data.train_y[idx], generator)
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + v
            batches += 1
            if on_batch:
                on_batch(epoch, b, stats)
        seconds = time.perf_counter() - start
        means = {k: v / batches for k, v in sums.items()}
        val = {}
        planned = plan_epochs(epochs, epoch + 1, time.perf_counter() - run_start, time_budget_s, planned)
        if len(data.val_x) and ((epoch + 1) % eval_every == 0 or epoch + 1 == planned):
            val = {m: r["error"] for m, r in evaluate(model, data.val_x, data.val_y, data.num_classes, eval_methods).items()}
        record = EpochRecord(epoch + 1, means.get("loss", float("nan")), val, seconds, n / seconds, means, planned)
        history.append(record)
        state.epochs_done, state.planned, state.elapsed = epoch + 1, planned, time.perf_counter() - run_start
        state.generator, state.shuffle = generator.get_state(), shuffle.get_state()
        if on_epoch:
            on_epoch(record)
        epoch += 1
    return history
