"""Short screens of the fully connected FF recipe: one preset trained for a few epochs (with its
cool-down) with one layer setting changed at a time, each beside the preset as it is, on the same
data, seed and schedule. For each: validation and test error of both classifiers, each hidden
layer's goodness classifier alone on the validation set (``ffcore eval --per-layer``), and how the
units share the work (dead units, the fraction active, the spread of the units' mean activities),
which is what peer normalization (paper footnote 9) is meant to keep "similar, but not too similar".

    python benchmarks/recipe_screen.py --data-dir ../shared/data/mnist --epochs 30 --conditions recipe \
        "no peer normalization" "weight decay 1e-3" "weight decay 2e-3" --out docs/recipe_screen11_30epochs.json

Conditions run in ``--jobs`` processes of ``--threads`` torch threads each (deterministic: the
same numbers whatever the jobs). A screen of a few epochs ranks changes; it does not replace the
preset's run.
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import torch

from online_recipe import VARIANTS  # benchmarks/ is the script's folder
from ffcore.experiment import write_results

# name -> LayerConfig fields changed (the preset's own recipe for "recipe")
CONDITIONS = {
    "recipe": {},
    "no peer normalization": {"peer_normalization": 0.0},
    "peer normalization 0.06": {"peer_normalization": 0.06},
    "peer normalization 0.006": {"peer_normalization": 0.006},
    "weight decay 1e-3": {"weight_decay": 1e-3},
    "weight decay 2e-3": {"weight_decay": 2e-3},
    "weight decay 4e-3": {"weight_decay": 4e-3},
    "weight decay 8e-3": {"weight_decay": 8e-3},
    "weight decay 1.6e-2": {"weight_decay": 1.6e-2},
    "weight decay 3.2e-2": {"weight_decay": 3.2e-2},
    "biases not decayed": {"decay_biases": False},
    "weight decay 4e-3, biases not decayed": {"weight_decay": 4e-3, "decay_biases": False},
    "weight decay 8e-3, biases not decayed": {"weight_decay": 8e-3, "decay_biases": False},
}
UNIT_SAMPLE = 2000  # validation images (with their labels written in) the unit statistics are taken on


def unit_statistics(model, x: torch.Tensor, y: torch.Tensor) -> list[dict]:
    """Per hidden layer: the fraction of units never active on these inputs, the mean fraction of
    units active per input, and the coefficient of variation of the units' mean activities."""
    stats = []
    for i, act in model.activities(model.encode(x, y if model.config.mode == "supervised" else None)).items():
        mean = act.mean(dim=0)
        stats.append({"layer": i + 1, "dead": float(((act > 0).sum(dim=0) == 0).float().mean()),
                      "active": float((act > 0).float().mean()), "mean_activity_cv": float(mean.std() / mean.mean())})
    return stats


def screen(preset_name: str, name: str, data_dir: str, epochs: int, seed: int, threads: int = 1,
           variant: str = "mnist") -> dict:
    """Train ``preset_name`` with condition ``name``'s changes (``CONDITIONS``) and measure it,
    on its data in the statistics of ``variant`` (``online_recipe.VARIANTS``: a recipe that
    holds off MNIST)."""
    from ffcore.checkpoint import build_model
    from ffcore.data.datasets import load_dataset
    from ffcore.presets import get_preset
    from ffcore.train import evaluate, evaluate_layers, fit

    torch.set_num_threads(threads)
    changes = CONDITIONS[name]
    preset = get_preset(preset_name).with_overrides(layer=changes)  # as `ffcore train --layer`
    config = preset.model
    torch.manual_seed(seed)  # as ffcore.experiment.run_preset: the same initial weights
    data = load_dataset(preset.dataset, data_dir, seed=seed)
    f = VARIANTS[variant]
    data.train_x, data.val_x, data.test_x = f(data.train_x), f(data.val_x), f(data.test_x)
    model = build_model(preset.kind, config)
    start = time.perf_counter()

    def progress(record) -> None:  # one line per epoch: a long screen shows where it is
        print(f"[{name}] epoch {record.epoch}/{epochs}: loss {record.train_loss:.3f}, {record.seconds:.0f} s", flush=True)

    fit(model, data, epochs=epochs, batch_size=preset.batch_size, seed=seed, eval_every=epochs, on_epoch=progress)
    result = {"changes": changes, "seconds": round(time.perf_counter() - start, 1)}
    for split, x, y in (("val", data.val_x, data.val_y), ("test", data.test_x, data.test_y)):
        result[split] = {m: r["error"] for m, r in evaluate(model, x, y, data.num_classes).items()}
    if config.mode == "supervised":
        result["val_per_layer"] = evaluate_layers(model, data.val_x, data.val_y)
    result["units"] = unit_statistics(model, data.val_x[:UNIT_SAMPLE], data.val_y[:UNIT_SAMPLE])
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--preset", default="mnist-ff-cpu")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--conditions", nargs="+", default=["recipe", "no peer normalization", "peer normalization 0.06"],
                    choices=list(CONDITIONS), metavar="NAME", help=f"which to run, of: {'; '.join(CONDITIONS)}")
    ap.add_argument("--variant", default="mnist", choices=list(VARIANTS),
                    help="the data in other statistics (as online_recipe.py): inverted 1 - x, low contrast "
                    "0.45 + 0.1 x, sparse x > 0.7")
    ap.add_argument("--jobs", type=int, default=2, help="conditions trained at once")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of each job (jobs x threads <= cores)")
    ap.add_argument("--out", type=Path, default=Path("docs/recipe_screen.json"))
    args = ap.parse_args()
    if min(args.epochs, args.jobs, args.threads) < 1:
        ap.error("--epochs, --jobs and --threads must be >= 1")
    with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
        futures = {name: pool.submit(screen, args.preset, name, str(args.data_dir), args.epochs, args.seed,
                                   args.threads, args.variant)
                   for name in args.conditions}
        results = {}
        for name, future in futures.items():
            results[name] = future.result()
            r = results[name]
            print(f"{name:28s} val {json.dumps(r['val'])} test {json.dumps(r['test'])} ({r['seconds']} s)", flush=True)
    write_results(args.out, args, preset=args.preset, results=results)


if __name__ == "__main__":
    main()
