"""Why the service's learning defaults are what they are: the in-process wake/sleep rhythm of
``benchmarks/online_learning.py`` (default settings) with one setting changed at a time, on MNIST
and on three variants of different statistics (inverted 1 - x, low contrast 0.45 + 0.1 x, sparse
x > 0.7), each beside its frozen control, one pass, 2 frames per image, 16 streams.

    python benchmarks/online_recipe.py --data-dir ../shared/data/mnist --images 20000 --out docs/online_recipe.json
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from ffcore.data.datasets import load_dataset
from ffcore.experiment import write_results

os.environ.setdefault("FFS_INPUT_DIM", "784")

VARIANTS = {
    "mnist": lambda x: x,
    "inverted": lambda x: 1 - x,
    "low-contrast": lambda x: 0.45 + 0.1 * x,
    "sparse": lambda x: x * (x > 0.7),
}


def variant_data(data, variant: str, images: int, test_size: int):
    """(x, y, x_test, y_test): the first ``images`` training and ``test_size`` test images of
    ``data`` in the statistics of ``variant``."""
    f = VARIANTS[variant]
    return (f(data.train_x[:images]), data.train_y[:images], f(data.test_x[:test_size]), data.test_y[:test_size])


# (name, settings changed, staleness, deferred positive step[, frames per positive step: the
# service's under load, when more than FFS_WAKE_WINDOW arrive during a round trip to sleep])
CONDITIONS = [
    ("defaults", {}, 0, False),
    ("FF frozen (control)", {"freeze": True}, 0, False),
    ("learning rate 0.3", {"learning_rate": 0.3}, 0, False),
    ("learning rate 3", {"learning_rate": 3.0}, 0, False),
    ("learning rate 0.75", {"learning_rate": 0.75}, 0, False),
    ("learning rate 1.25", {"learning_rate": 1.25}, 0, False),
    ("learning rate 1.5", {"learning_rate": 1.5}, 0, False),
    ("no input centering", {"center_input": False}, 0, False),
    ("negatives 1 step late", {}, 1, False),
    ("negatives 2 steps late", {}, 2, False),
    ("deferred, 1 step (the service)", {}, 1, True),
    ("deferred, 2 steps", {}, 2, True),
    ("deferred, learning rate 0.75", {"learning_rate": 0.75}, 1, True),
    ("deferred, learning rate 1.25", {"learning_rate": 1.25}, 1, True),
    ("deferred, learning rate 1.5", {"learning_rate": 1.5}, 1, True),
    ("deferred, learning rate 2", {"learning_rate": 2.0}, 1, True),
    ("deferred, learning rate 3", {"learning_rate": 3.0}, 1, True),
    # the precision of dreams, both named: bfloat16 is the default since 2026-12-01
    ("deferred, float32 dreams", {"dream_dtype": "float32"}, 1, True),
    ("deferred, bfloat16 dreams", {"dream_dtype": "bfloat16"}, 1, True),
    ("deferred, window 16", {"wake_window": 16}, 1, True),
    ("deferred, window 32", {"wake_window": 32}, 1, True),
    ("deferred, steps of 160", {}, 1, True, 160),
    ("deferred, steps of 240", {}, 1, True, 240),
    ("readout not averaged", {"readout_average": 0}, 0, False),
    ("deferred, readout not averaged", {"readout_average": 0}, 1, True),
    ("FF frozen, readout not averaged", {"freeze": True, "readout_average": 0}, 0, False),
    # footnote 9 on the scale of the paper's code (since 2026-12-01; the ninth session's trials
    # were 1/1280 of these): 0.02 is the fully connected presets' strength
    ("peer normalization 0.02", {"peer_normalization": 0.02}, 0, False),
    ("deferred, peer normalization 0.02", {"peer_normalization": 0.02}, 1, True),
    ("deferred, peer normalization 0.005", {"peer_normalization": 0.005}, 1, True),
    ("logistic temperature 0.25", {"temperature": 0.25}, 0, False),
]


def main() -> None:
    from online_learning import ff_online  # noqa: E402  (benchmarks/ is the script's folder)

    from service.settings import Settings

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--images", type=int, default=20_000)
    ap.add_argument("--test-size", type=int, default=5_000)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--conditions", nargs="+", default=[c[0] for c in CONDITIONS], choices=[c[0] for c in CONDITIONS],
                    metavar="NAME", help="which rows to run (default: all)")
    ap.add_argument("--out", type=Path, default=Path("docs/online_recipe.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = load_dataset("mnist", args.data_dir)
    base = Settings(input_dim=data.input_dim)
    results: dict[str, dict[str, float]] = {}
    for variant in args.variants:
        x, y, x_test, y_test = variant_data(data, variant, args.images, args.test_size)
        for name, changes, staleness, defer, *window in CONDITIONS:
            if name not in args.conditions:
                continue
            settings = base.model_copy(update=changes)
            r = ff_online(settings, x, y, x_test, y_test, streams=16, repeat=2,
                          window=window[0] if window else settings.wake_window, step_frames=settings.wake_window,
                          staleness=staleness, defer=defer, seed=0)
            results.setdefault(variant, {})[name] = r["test_error"]
            print(f"{variant:13s} {name:28s} test error {100 * r['test_error']:6.2f}%", flush=True)
    write_results(args.out, args, results=results)


if __name__ == "__main__":
    main()
