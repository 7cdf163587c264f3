"""A black box between layers (paper section 6): FF learns through an unknown, stochastic
transformation; backprop cannot differentiate it.

The same architecture (supervised FF MLP and its backprop twin, ``--widths``, length-only
normalization between layers) with ``ffcore.blackbox.BlackBox`` (a fixed random network with
noise) between the first and the second layer, against the same nets without it:
  * FF, no box / FF through the box (each layer learns from the input it gets);
  * backprop, no box;
  * backprop through the box with a straight-through guess (the identity's derivative);
  * backprop stopped at the box (the layer below it gets no gradient and stays random);
  * the first layer left random and only what is above the box trained by backprop (the same
    as "stopped", written out as the control of what the first layer contributes).
Test error of each (FF: goodness classifier and softmax readout), same data, same epochs, one run.

    python benchmarks/black_box.py --data-dir ../shared/data/mnist --out docs/black_box.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from ffcore.backprop import BackpropMLP
from ffcore.blackbox import BlackBox, straight_through
from ffcore.data.datasets import load_dataset
from ffcore.experiment import write_results
from ffcore.metrics import error_rate
from ffcore.mlp import FFMLP, MLPConfig
from ffcore.presets import BP_LAYER, FF_LAYER


def train(model, x, y, epochs: int, batch: int, seed: int) -> float:
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x) - batch + 1, batch):
            idx = order[i : i + batch]
            model.train_batch(x[idx], y[idx], gen)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, help="IDX folder (MNIST); without it the synthetic data set")
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--widths", type=int, nargs="+", default=[500, 500, 500])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--noise", type=float, default=0.1, help="the box's noise, as a fraction of its output's RMS")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("docs/black_box.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset(args.dataset if args.data_dir else "synthetic", args.data_dir, seed=args.seed)
    widths = tuple(args.widths)
    ff_cfg = MLPConfig(input_dim=data.input_dim, num_classes=data.num_classes, widths=widths, image_shape=None,
                       layer=FF_LAYER)
    bp_cfg = MLPConfig(input_dim=data.input_dim, num_classes=data.num_classes, widths=widths, image_shape=None,
                       layer=BP_LAYER)

    def box() -> BlackBox:
        return BlackBox(widths[0], noise=args.noise, seed=args.seed + 100)

    results = {}

    def run(name: str, model, between=None, frozen_first: bool = False) -> None:
        torch.manual_seed(args.seed)
        if between is not None:
            model.between = {0: between}
        if frozen_first:
            model.layers[0].requires_grad_(False)
        seconds = train(model, data.train_x, data.train_y, args.epochs, args.batch, args.seed)
        row = {"seconds": seconds}
        for method in model.predict_methods:
            row[f"test_error_{method}"] = error_rate(model.predict(data.test_x, method), data.test_y)
        results[name] = row
        print(f"{name:44s} " + "  ".join(f"{k.removeprefix('test_error_')} {100 * v:6.2f}%"
                                          for k, v in row.items() if k.startswith("test_error")) +
              f"  ({seconds:.0f} s)", flush=True)

    torch.manual_seed(args.seed)
    run("FF, no box", FFMLP(ff_cfg))
    torch.manual_seed(args.seed)
    run("FF through the box", FFMLP(ff_cfg), box())
    torch.manual_seed(args.seed)
    run("backprop, no box", BackpropMLP(bp_cfg))
    torch.manual_seed(args.seed)
    run("backprop through the box, straight-through", BackpropMLP(bp_cfg), straight_through(box()))
    torch.manual_seed(args.seed)
    run("backprop stopped at the box", BackpropMLP(bp_cfg), box())
    torch.manual_seed(args.seed)
    run("backprop, no box, first layer left random", BackpropMLP(bp_cfg), frozen_first=True)
    write_results(args.out, args, results=results)


if __name__ == "__main__":
    main()
