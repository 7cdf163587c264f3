"""CIFAR-10, paper section 4 (table 1): the recurrent FF nets with 11 x 11 topographic receptive
fields (max and min sum-of-squares goodness, both classifiers), their frozen control (the same net,
FF steps of 1e-12 so its layers stay as initialized: only the softmax readout learns), the backprop
net with the same bottom-up fields, and logistic regression on the pixels, on the same images in
one run. Test error of every classifier, training time, and the time a full epoch of the 45,000
training images would take on this machine.

With ``--data-dir`` (a folder with ``cifar-10-binary.tar.gz`` or its extracted folder) it reads
CIFAR-10. Without it, no copy of CIFAR-10 being available, it writes 60,000 images of the colour
stand-in (``ffcore.data.synthetic.make_synthetic_color``: a class's shape in a random colour over
random blobs; the class is in the shape alone) as CIFAR-10's binary files into a temporary folder
and reads them back through the same loader.

    python benchmarks/cifar10.py --train-images 2000 --epochs 3 --out docs/cifar10_standin.json
    python benchmarks/cifar10.py --data-dir DIR --train-images 45000 --epochs 60 --out docs/cifar10.json  # paper size
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from ffcore.data.cifar import write_folder
from ffcore.data.datasets import Splits, load_dataset
from ffcore.data.synthetic import make_synthetic_color
from ffcore.experiment import run_preset, write_results
from ffcore.metrics import error_rate
from ffcore.presets import get_preset

FULL_EPOCH = 45_000
FROZEN = "frozen"  # suffix: the preset with its FF layers left as initialized


def stand_in(folder: Path, seed: int) -> Path:
    x, y = make_synthetic_color(60_000, image_shape=(32, 32), seed=seed)
    return write_folder(folder, (x * 255).round().to(torch.uint8).numpy(), y.numpy()).parent


def subset(data: Splits, train: int, evaluate: int) -> Splits:
    return Splits(data.train_x[:train], data.train_y[:train], data.val_x[:evaluate], data.val_y[:evaluate],
                  data.test_x[:evaluate], data.test_y[:evaluate], data.num_classes, data.image_shape)


def preset_for(name: str, epochs: int):
    frozen = name.endswith(f"-{FROZEN}")
    preset = get_preset(name.removesuffix(f"-{FROZEN}")).with_overrides(epochs=epochs)
    if frozen:
        if preset.kind != "recurrent":
            raise ValueError(f"{name}: only the FF presets have a frozen control")
        layer = replace(preset.model.layer, lr=1e-12)
        preset = replace(preset, name=name, model=replace(preset.model, layer=layer, negative_lr=1e-12))
    return preset


def logistic_regression(data: Splits, epochs: int, seed: int) -> dict:
    """Softmax regression on the pixels (Adam 1e-3, batches of 100): what a user would try first."""
    torch.manual_seed(seed)
    mean = data.train_x.mean(dim=0)
    model = torch.nn.Linear(data.input_dim, data.num_classes)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    start = time.perf_counter()
    for _ in range(epochs):
        for idx in torch.randperm(len(data.train_x)).split(100):
            loss = F.cross_entropy(model(data.train_x[idx] - mean), data.train_y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    seconds = time.perf_counter() - start
    with torch.no_grad():
        error = error_rate(model(data.test_x - mean).argmax(dim=1), data.test_y)
    return {"name": "logistic regression (pixels)", "test": {"softmax": {"error": error}}, "train_seconds": seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, help="CIFAR-10 binary version; without it the colour stand-in")
    ap.add_argument("--presets", nargs="+", default=["cifar10-ff-2x3072-max", "cifar10-ff-2x3072-min",
                                                     f"cifar10-ff-2x3072-max-{FROZEN}", "cifar10-bp-2x3072"],
                    help=f"presets to run; NAME-{FROZEN}: an FF preset's frozen control")
    ap.add_argument("--train-images", type=int, default=2000, help="the first N training images")
    ap.add_argument("--eval-images", type=int, default=1000, help="the first N validation and test images")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("docs/cifar10_standin.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    presets = [preset_for(name, args.epochs) for name in args.presets]  # fail fast on a typo
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.data_dir or stand_in(Path(tmp) / "standin", args.seed)
        data = subset(load_dataset("cifar10", folder), args.train_images, args.eval_images)
        rows = []
        for preset in presets:
            print(f"training {preset.name} on {len(data.train_x)} images for {preset.epochs} epochs ...", flush=True)
            report = run_preset(preset, data_dir=None, data=data, out=Path(tmp) / preset.name, seed=args.seed,
                                eval_every=preset.epochs)
            per_image = report["train_seconds"] / (len(data.train_x) * report["epochs"])
            rows.append({"name": preset.name, "test": report["test"], "train_seconds": report["train_seconds"],
                         "full_epoch_seconds": per_image * FULL_EPOCH, "peak_rss_mb": report["peak_rss_mb"],
                         "paper_result": preset.paper_result})
            print(f"  {preset.name}: " + ", ".join(f"{m} {100 * r['error']:.2f}%" for m, r in report["test"].items())
                  + f" ({report['train_seconds']:.0f} s; a full epoch ~{rows[-1]['full_epoch_seconds'] / 60:.0f} min)",
                  flush=True)
        rows.append(logistic_regression(data, args.epochs, args.seed))
        print(f"  logistic regression: {100 * rows[-1]['test']['softmax']['error']:.2f}%")
    write_results(args.out, args, data="CIFAR-10" if args.data_dir else "colour stand-in (make_synthetic_color)",
                  rows=rows)


if __name__ == "__main__":
    main()
