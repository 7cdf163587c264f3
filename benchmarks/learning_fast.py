"""Learning fast (paper section 6): how many ordinary steps the one-step update of equation 4
saves, and what it does for classes the net has never seen.

A supervised FF MLP (ReLU, sum-of-squares goodness, label in the first pixels) is trained on the
old classes (all but the last two) for ``--epochs``. Then, for ``--examples`` training images of
each new class:
  * steps to learn one image: from the trained weights, how many steps on that one image it
    takes until the goodness classifier gets it right: ordinary steps (the layers' own optimizer,
    the true label as positive and the hardest wrong label as negative) against fast steps
    (``ffcore.fast.fast_update``, equation 4: in every layer, the true label's goodness set to
    ``--factor`` times the largest over all labels; with ``--fast-negative`` also the hardest
    wrong label's divided by it);
    capped at ``--max-steps``;
  * learning the new classes, one image at a time, in three ways from the same weights: not at
    all; one ordinary step each; one fast step each. Test error of the goodness classifier on
    the new classes' and on the old classes' test images.

    python benchmarks/learning_fast.py --data-dir ../shared/data/mnist --out docs/learning_fast.json
"""

from __future__ import annotations

import argparse
import copy
import statistics
from pathlib import Path

import torch

from black_box import train  # noqa: E402  (benchmarks/ is the script's folder)
from ffcore.data.datasets import load_dataset
from ffcore.experiment import write_results
from ffcore.fast import fast_update
from ffcore.goodness import activity_measure
from ffcore.layers import LayerConfig
from ffcore.mlp import FFMLP, MLPConfig


def label_goodness_per_layer(model: FFMLP, x: torch.Tensor) -> torch.Tensor:
    """(L, C): every layer's sum of squared activities for the one image ``x`` (1, D) with each label."""
    c = model.config.num_classes
    inputs = torch.cat([model.encode(x, torch.tensor([k])) for k in range(c)])
    return torch.stack([activity_measure(y) for y in model.activities(inputs).values()])


def hardest_wrong(model: FFMLP, x: torch.Tensor, label: int) -> int:
    scores = model.label_goodness(x)[0]
    scores[label] = -float("inf")
    return int(scores.argmax())


def learn_one(model: FFMLP, x: torch.Tensor, label: int, how: str, factor: float, fast_negative: bool = False) -> None:
    """One step on one labeled image (1, D): ``ordinary``, the layers' own optimizer on the true
    label (positive) and the hardest wrong one (negative); ``fast``, equation 4: every layer's
    goodness with the true label set to ``factor`` times the largest over all labels (and, with
    ``fast_negative``, the hardest wrong label's to its own divided by ``factor``)."""
    wrong = hardest_wrong(model, x, label)
    h_pos, h_neg = model.encode(x, torch.tensor([label])), model.encode(x, torch.tensor([wrong]))
    if how == "fast":
        g = label_goodness_per_layer(model, x)
        fast_update(model.layers, h_pos, (factor * g.max(dim=1).values).tolist())
        if fast_negative:
            fast_update(model.layers, h_neg, (g[:, wrong] / factor).tolist())
    else:
        for layer in model.layers:
            step = layer.train_step(h_pos, h_neg)
            h_pos, h_neg = step.y_pos, step.y_neg


def steps_to_learn(model: FFMLP, x: torch.Tensor, label: int, how: str, factor: float, max_steps: int,
                   fast_negative: bool) -> int:
    """Steps on this one image until the goodness classifier gets it right (max_steps + 1 if never)."""
    model = copy.deepcopy(model)
    for step in range(max_steps + 1):
        if int(model.predict(x, "goodness")[0]) == label:
            return step
        learn_one(model, x, label, how, factor, fast_negative)
    return max_steps + 1


def learn_new(model: FFMLP, xs, ys, how: str, factor: float, fast_negative: bool) -> FFMLP:
    model = copy.deepcopy(model)
    for x, label in zip(xs, ys.tolist()):
        learn_one(model, x[None], label, how, factor, fast_negative)
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
    ap.add_argument("--factor", type=float, default=1.5,
                    help="fast steps: the true label's goodness to this times the largest, the wrong one's divided by it")
    ap.add_argument("--fast-negative", action="store_true",
                    help="fast steps also lower the hardest wrong label's goodness (its input differs from the "
                    "true label's only in the label pixels, so the second step largely undoes the first)")
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
    trained_s = train(model, data.train_x[old_train], data.train_y[old_train], args.epochs, args.batch, args.seed)
    picks = torch.cat([torch.nonzero(data.train_y == k).squeeze(1)[: args.examples] for k in new.tolist()])
    picks = picks[torch.randperm(len(picks), generator=torch.Generator().manual_seed(args.seed))]
    xs, ys = data.train_x[picks], data.train_y[picks]

    neg = args.fast_negative
    steps = {how: [steps_to_learn(model, x[None], int(y), how, args.factor, args.max_steps, neg) for x, y in zip(xs, ys)]
             for how in ("ordinary", "fast")}
    rows = {}
    for how, learned in (("none", model), ("one ordinary step each", learn_new(model, xs, ys, "ordinary", args.factor, neg)),
                         ("one fast step each", learn_new(model, xs, ys, "fast", args.factor, neg))):
        rows[how] = {"new_classes_error": error(learned, data.test_x[new_test], data.test_y[new_test]),
                     "old_classes_error": error(learned, data.test_x[old_test], data.test_y[old_test])}
        print(f"{how:24s} new classes {100 * rows[how]['new_classes_error']:6.2f}%  "
              f"old classes {100 * rows[how]['old_classes_error']:6.2f}%", flush=True)
    summary = {}
    for how, counts in steps.items():
        reached = [n for n in counts if n <= args.max_steps]
        summary[how] = {"examples": len(counts), "learned_within_cap": len(reached),
                        "median_steps": statistics.median(counts),
                        "mean_steps_learned": statistics.fmean(reached) if reached else None,
                        "max_steps_learned": max(reached) if reached else None}
        print(f"{how} steps until the image itself is classified right: median {summary[how]['median_steps']}, "
              f"mean {summary[how]['mean_steps_learned']}, {len(reached)}/{len(counts)} within {args.max_steps}",
              flush=True)
    write_results(args.out, args, old_training_seconds=trained_s, steps_to_learn=summary, steps=steps,
                  learning_new_classes=rows)


if __name__ == "__main__":
    main()
