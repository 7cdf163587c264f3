"""Learning fast (paper section 6): how many ordinary steps the one-step update of equation 4
saves, and what it does for classes the net has never seen.

A supervised FF MLP (ReLU, sum-of-squares goodness, label in the first pixels) is trained on the
old classes (all but the last two) for ``--epochs``. Then, for ``--examples`` training images of
each new class:
  * steps to the target: from the trained weights, how many ordinary steps of the layers' own
    optimizer on that one positive example (its true label written in) it takes until every
    layer's goodness reaches S* = threshold + ``--margin`` (p(positive) = sigma(margin)), against
    the one step of ``ffcore.fast.fast_update``; capped at ``--max-steps``;
  * learning the new classes, one example at a time, in three ways from the same weights: not at
    all; one ordinary step each (positive and the hardest wrong label, the layers' optimizer);
    one fast step each (the true label's goodness set to S*, the hardest wrong label's to
    threshold - margin). Test error of the goodness classifier on the new classes' and on the
    old classes' test images.

    python benchmarks/learning_fast.py --data-dir ../shared/data/mnist --out docs/learning_fast.json
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch

from ffcore.data.datasets import load_dataset
from ffcore.experiment import hardware
from ffcore.fast import fast_update
from ffcore.goodness import activity_measure
from ffcore.layers import LayerConfig
from ffcore.mlp import FFMLP, MLPConfig


def train_old(model: FFMLP, x, y, epochs: int, batch: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x) - batch + 1, batch):
            idx = order[i : i + batch]
            model.train_batch(x[idx], y[idx], gen)


def goodness_per_layer(model: FFMLP, h: torch.Tensor) -> list[float]:
    return [float(activity_measure(y)) for y in model.activities(h).values()]


def steps_to_target(model: FFMLP, h: torch.Tensor, targets: list[float], max_steps: int) -> int:
    """Ordinary positive-only steps of each layer's optimizer on one example until every layer's
    goodness reaches its target (max_steps + 1 if it never does)."""
    model = copy.deepcopy(model)
    for step in range(max_steps + 1):
        if all(g >= t for g, t in zip(goodness_per_layer(model, h), targets)):
            return step
        inputs = h
        for layer in model.layers:
            inputs = layer.train_step(inputs, None).y_pos
    return max_steps + 1


def hardest_wrong(model: FFMLP, x: torch.Tensor, label: int) -> int:
    scores = model.label_goodness(x)[0]
    scores[label] = -float("inf")
    return int(scores.argmax())


def learn_new(model: FFMLP, xs, ys, how: str, margin: float) -> FFMLP:
    model = copy.deepcopy(model)
    thresholds = [layer.threshold for layer in model.layers]
    for x, label in zip(xs, ys.tolist()):
        x = x[None]
        wrong = hardest_wrong(model, x, label)
        h_pos, h_neg = model.encode(x, torch.tensor([label])), model.encode(x, torch.tensor([wrong]))
        if how == "fast":
            fast_update(model.layers, h_pos, [t + margin for t in thresholds])
            fast_update(model.layers, h_neg, [max(t - margin, 0.0) for t in thresholds])
        else:
            for layer in model.layers:
                step = layer.train_step(h_pos, h_neg)
                h_pos, h_neg = step.y_pos, step.y_neg
    return model


def error(model: FFMLP, x, y) -> float:
    return float((model.predict(x, "goodness") != y).float().mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, help="IDX folder (MNIST); without it the synthetic data set")
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--widths", type=int, nargs="+", default=[500, 500, 500])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--examples", type=int, default=20, help="training images of each new class")
    ap.add_argument("--margin", type=float, default=4.0)
    ap.add_argument("--max-steps", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("docs/learning_fast.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    data = load_dataset(args.dataset if args.data_dir else "synthetic", args.data_dir, seed=args.seed)
    c = data.num_classes
    new = torch.tensor([c - 2, c - 1])
    old_train = ~torch.isin(data.train_y, new)
    old_test, new_test = ~torch.isin(data.test_y, new), torch.isin(data.test_y, new)
    model = FFMLP(MLPConfig(input_dim=data.input_dim, num_classes=c, widths=tuple(args.widths), image_shape=None,
                            layer=LayerConfig(optimizer="adam", lr=1e-3)))
    start = time.perf_counter()
    train_old(model, data.train_x[old_train], data.train_y[old_train], args.epochs, args.batch, args.seed)
    trained_s = time.perf_counter() - start
    picks = torch.cat([torch.nonzero(data.train_y == k).squeeze(1)[: args.examples] for k in new.tolist()])
    picks = picks[torch.randperm(len(picks), generator=torch.Generator().manual_seed(args.seed))]
    xs, ys = data.train_x[picks], data.train_y[picks]

    targets = [layer.threshold + args.margin for layer in model.layers]
    steps = [steps_to_target(model, model.encode(x[None], torch.tensor([int(y)])), targets, args.max_steps)
             for x, y in zip(xs, ys)]
    rows = {}
    for how, learned in (("none", model), ("one ordinary step each", learn_new(model, xs, ys, "ordinary", args.margin)),
                         ("one fast step each", learn_new(model, xs, ys, "fast", args.margin))):
        rows[how] = {"new_classes_error": error(learned, data.test_x[new_test], data.test_y[new_test]),
                     "old_classes_error": error(learned, data.test_x[old_test], data.test_y[old_test])}
        print(f"{how:24s} new classes {100 * rows[how]['new_classes_error']:6.2f}%  "
              f"old classes {100 * rows[how]['old_classes_error']:6.2f}%", flush=True)
    reached = [s for s in steps if s <= args.max_steps]
    summary = {"examples": len(steps), "reached_within_cap": len(reached),
               "median_steps": statistics.median(steps), "mean_steps_reached": statistics.fmean(reached) if reached else None,
               "max_steps_reached": max(reached) if reached else None, "fast_steps": 1}
    print(f"ordinary steps to reach S* = threshold + {args.margin} in every layer: median {summary['median_steps']}, "
          f"{len(reached)}/{len(steps)} within {args.max_steps}; the fast update: 1", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "hardware": hardware(),
                                    "args": {k: str(v) for k, v in vars(args).items()},
                                    "old_training_seconds": trained_s, "steps_to_target": summary,
                                    "steps": steps, "learning_new_classes": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
