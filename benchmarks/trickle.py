"""A trickle of frames: how the service's rhythm learns when windows close by time with few
frames in them (a slow camera: ``FFS_WAKE_WINDOW_S`` closes the window before
``FFS_WAKE_WINDOW`` frames arrive), with and without ``OnlineConfig.step_frames`` (a step of
fewer frames scaled down as if it had ``FFS_WAKE_WINDOW``).

One stream, each image shown as ``--repeat`` frames, in order, through ``ffcore.online`` with the
service's settings (``benchmarks/online_learning.py``'s in-process trainer), positive steps every
``window`` frames with their negatives before the next; the same for 16 streams in full windows
of 50 as the reference. On MNIST and on the variants of ``benchmarks/online_recipe.py``; test
error on the first ``--test-size`` test images.

    python benchmarks/trickle.py --data-dir ../shared/data/mnist --out docs/trickle.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from online_learning import ff_online  # noqa: E402  (benchmarks/ is the script's folder)
from online_recipe import VARIANTS, variant_data  # noqa: E402
from ffcore.data.datasets import load_dataset
from ffcore.experiment import write_results
from service.settings import Settings

# (name, streams, frames per window, step_frames: None = every step a full mean)
CONDITIONS = [
    ("16 streams, full windows of 50 (reference)", 16, 50, None),
    ("1 stream, windows of 1, full mean steps (before)", 1, 1, None),
    ("1 stream, windows of 4, full mean steps (before)", 1, 4, None),
    ("1 stream, windows of 1, step_frames 50 (now)", 1, 1, 50),
    ("1 stream, windows of 4, step_frames 50 (now)", 1, 4, 50),
    ("1 stream, windows of 10, step_frames 50 (now)", 1, 10, 50),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, required=True, help="IDX folder (MNIST)")
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--test-size", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--variants", nargs="+", default=["mnist", "inverted"], choices=list(VARIANTS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("docs/trickle.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset("mnist", args.data_dir)
    settings = Settings(input_dim=data.input_dim)
    results: dict[str, dict[str, dict]] = {}
    for variant in args.variants:
        x, y, x_test, y_test = variant_data(data, variant, args.images, args.test_size)
        for name, streams, window, step_frames in CONDITIONS:
            r = ff_online(settings, x, y, x_test, y_test, streams=streams, repeat=args.repeat, window=window,
                          staleness=0, seed=args.seed, step_frames=step_frames)
            results.setdefault(name, {})[variant] = r
            print(f"{variant:12s} {name:50s} test {100 * r['test_error']:6.2f}%  prequential "
                  f"{100 * r['prequential_error']:6.2f}%  ({r['seconds']:.0f} s)", flush=True)
    write_results(args.out, args, results=results)


if __name__ == "__main__":
    main()
