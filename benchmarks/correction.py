"""A user's correction learned in one step (paper section 6; the service's ``learn=fast``):
what ``ffcore.fast.correct`` does for classes the service's net has never seen, against the
service's ordinary learning of the same labeled frames and against correcting the readout alone.

The service's recurrent net (default settings) learns the old classes (all but the last two) the
way the service does (``ffcore.online``, interleaved: ``benchmarks/online_learning.py``'s (c)),
``--images`` images of them, one pass, each shown as ``--repeat`` frames by ``--streams``
streams. Then ``--examples`` training images of each new class, shuffled, are learned one at a
time from the same weights, in four ways:
  * not at all;
  * ordinarily: each image as a labeled frame of a stream (``--repeat`` frames), its positive
    step and its negatives applied at once (window 1: the most an ordinary frame can do);
  * one correction each (``correct``: every FF layer and the readout, one step);
  * one correction each, FF layers frozen (only the readout: the control);
and scored on the test images of the new and of the old classes, with the softmax readout (what
``/v1/predict`` answers by default) and the goodness classifier. The same four ways for the case
a user's corrections usually are: ``--examples`` x 2 further training images of the old classes
(not among those learned) that the softmax readout answers wrongly, scored on the old classes'
test images. Also, for each new-class image alone from the trained weights: the steps (ordinary
ones, or corrections) until both classifiers answer its label, capped at ``--max-steps``.

    python benchmarks/correction.py --data-dir ../shared/data/mnist --out docs/correction.json
"""

from __future__ import annotations

import argparse
import copy
import statistics
from pathlib import Path

import torch

from online_learning import ff_online  # noqa: E402  (benchmarks/ is the script's folder)
from ffcore.data.datasets import load_dataset
from ffcore.experiment import write_results
from ffcore.fast import correct
from ffcore.metrics import error_rate
from ffcore.online import OnlineLearner, negative_gradient
from ffcore.recurrent import RecurrentFF
from service import model as model_io
from service.settings import Settings


def ordinary(learner: OnlineLearner, x: torch.Tensor, label: int, repeat: int, settings: Settings, gen) -> None:
    """The service's learning of one labeled frame shown ``repeat`` times (a stream of its own),
    with its positive step and its negatives applied at once."""
    model, y = learner.model, torch.tensor([label])
    state = model.initial_state(x)
    for _ in range(repeat):
        state = learner.learn_step(x, y, state).state
    positive, sample = learner.take_positive(), learner.take_replay()
    learner.apply(positive)
    wrong = model.negative_labels(sample.frames, sample.labels, gen)
    learner.apply(negative_gradient(model, sample.frames, wrong, settings.sleep_iterations, sample.state))


def learn(learner: OnlineLearner, x: torch.Tensor, label: int, how: str, repeat: int, settings: Settings, gen) -> None:
    if how == "ordinary":
        ordinary(learner, x, label, repeat, settings, gen)
    else:
        correct(learner.model, x[0], label, ff_layers=how == "correction")


def answers(model: RecurrentFF, x: torch.Tensor) -> tuple[int, int]:
    return int(model.predict_fast(x).argmax(1)), int(model.predict(x, "goodness"))


def steps_to_learn(learner, x, label, how, cap, repeat, settings, gen) -> int:
    learner = copy.deepcopy(learner)
    for step in range(cap + 1):
        if answers(learner.model, x) == (label, label):
            return step
        learn(learner, x, label, how, repeat, settings, gen)
    return cap + 1


def errors(model: RecurrentFF, x, y) -> dict:
    return {"softmax": error_rate(model.predict_fast(x).argmax(1), y), "goodness": error_rate(model.predict(x, "goodness"), y)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, help="IDX folder (MNIST); without it the synthetic data set")
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--images", type=int, default=20_000, help="training images of the old classes, one pass")
    ap.add_argument("--repeat", type=int, default=2, help="frames per image")
    ap.add_argument("--streams", type=int, default=16)
    ap.add_argument("--examples", type=int, default=20, help="training images of each new class")
    ap.add_argument("--test-images", type=int, default=5000, help="the first N test images score")
    ap.add_argument("--max-steps", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("docs/correction.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset(args.dataset if args.data_dir else "synthetic", args.data_dir, seed=args.seed)
    settings = Settings(input_dim=data.input_dim, num_classes=data.num_classes)
    c = data.num_classes
    new = torch.tensor([c - 2, c - 1])
    old = ~torch.isin(data.train_y, new)
    x_old, y_old = data.train_x[old][: args.images], data.train_y[old][: args.images]
    test_x, test_y = data.test_x[: args.test_images], data.test_y[: args.test_images]
    new_test = torch.isin(test_y, new)
    learner = OnlineLearner(RecurrentFF(model_io.recurrent_config(settings)), model_io.online_config(settings))
    trained = ff_online(settings, x_old, y_old, test_x[~new_test], test_y[~new_test], streams=args.streams,
                        repeat=args.repeat, window=args.streams, staleness=0, seed=args.seed, learner=learner)
    print(f"trained on {len(x_old)} images of the old classes: old-class test error {100 * trained['test_error']:.2f}%",
          flush=True)
    picks = torch.cat([torch.nonzero(data.train_y == k).squeeze(1)[: args.examples] for k in new.tolist()])
    picks = picks[torch.randperm(len(picks), generator=torch.Generator().manual_seed(args.seed))]
    xs, ys = data.train_x[picks], data.train_y[picks]
    hows = ("ordinary", "correction", "correction, readout only")
    rows = {}
    for how in ("none", *hows):
        learned, gen = copy.deepcopy(learner), torch.Generator().manual_seed(args.seed)
        if how != "none":
            for x, y in zip(xs, ys.tolist()):
                learn(learned, x[None], y, how, args.repeat, settings, gen)
        rows[how] = {"new_classes": errors(learned.model, test_x[new_test], test_y[new_test]),
                     "old_classes": errors(learned.model, test_x[~new_test], test_y[~new_test])}
        r = rows[how]
        print(f"{how:26s} new classes softmax {100 * r['new_classes']['softmax']:6.2f}% goodness "
              f"{100 * r['new_classes']['goodness']:6.2f}% | old classes softmax {100 * r['old_classes']['softmax']:6.2f}% "
              f"goodness {100 * r['old_classes']['goodness']:6.2f}%", flush=True)
    rest_x, rest_y = data.train_x[old][args.images:], data.train_y[old][args.images:]
    answered = learner.model.predict_fast(rest_x).argmax(1)
    wrong = torch.nonzero(answered != rest_y).squeeze(1)[: 2 * args.examples]
    corrections = {}
    for how in ("none", *hows):
        learned, gen = copy.deepcopy(learner), torch.Generator().manual_seed(args.seed)
        if how != "none":
            for x, y in zip(rest_x[wrong], rest_y[wrong].tolist()):
                learn(learned, x[None], y, how, args.repeat, settings, gen)
        corrections[how] = {"old_classes": errors(learned.model, test_x[~new_test], test_y[~new_test]),
                            "corrected_frames": errors(learned.model, rest_x[wrong], rest_y[wrong])}
        r = corrections[how]
        print(f"{len(wrong)} wrong old-class frames, {how:26s}: old classes softmax "
              f"{100 * r['old_classes']['softmax']:6.2f}% goodness {100 * r['old_classes']['goodness']:6.2f}% | "
              f"the corrected frames softmax {100 * r['corrected_frames']['softmax']:6.2f}% goodness "
              f"{100 * r['corrected_frames']['goodness']:6.2f}%", flush=True)
    steps = {}
    for how in hows:
        gen = torch.Generator().manual_seed(args.seed)
        counts = [steps_to_learn(learner, x[None], int(y), how, args.max_steps, args.repeat, settings, gen)
                  for x, y in zip(xs, ys)]
        reached = [n for n in counts if n <= args.max_steps]
        steps[how] = {"counts": counts, "learned_within_cap": len(reached), "median": statistics.median(counts),
                      "max_learned": max(reached) if reached else None}
        print(f"{how}: steps until both classifiers answer the image's label: median {steps[how]['median']}, "
              f"{len(reached)}/{len(counts)} within {args.max_steps}", flush=True)
    write_results(args.out, args, old_classes_training=trained, learning_new_classes=rows,
                  correcting_old_classes=corrections, steps_to_learn=steps)


if __name__ == "__main__":
    main()
