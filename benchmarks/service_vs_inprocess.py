"""MNIST streamed through the REST API vs the in-process recurrent trainer, same frames.

Both learners see the same images in the same order, each image ``repeat`` frames long (a
static image is "a boring video"), and the same recurrent architecture (the service's
Settings: widths, damping, readout):
  - service: ``ffstream replay`` -- frames POSTed over HTTP, queued in Redis, learned one frame
    per stream per step by the wake worker (positive phase only), negatives only from the sleep
    worker's queue;
  - in-process: ``RecurrentFF.train_batch`` -- mini-batches of 100 images, ``repeat`` damped
    iterations each with interleaved positive and negative updates, the library's own
    recipe (SGD with momentum: ffcore.presets.FF_LAYER).
Each is scored by its softmax readout on the same test images. One run, side by side:

    python benchmarks/service_vs_inprocess.py --data-dir ../shared/data/mnist --out docs/service_vs_inprocess.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path

import torch
from rich.console import Console

from ffcore.data.datasets import load_dataset
from ffcore.experiment import hardware
from ffcore.metrics import error_rate
from ffcore.presets import FF_LAYER
from ffcore.recurrent import RecurrentFF
from service import model as model_io
from service.replay import run_replay
from service.settings import Settings


def in_process(settings: Settings, data, images: int, repeat: int, test_size: int, batch_size: int, seed: int) -> dict:
    torch.manual_seed(seed)
    config = replace(model_io.recurrent_config(settings), layer=FF_LAYER, negative_lr=None, iterations=repeat,
                     eval_window=(min(3, repeat), repeat), readout_lr=1e-2)
    model = RecurrentFF(config)
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for i in range(0, images, batch_size):
        model.train_batch(data.train_x[i : min(i + batch_size, images)], data.train_y[i : min(i + batch_size, images)],
                          generator)
    seconds = time.perf_counter() - start
    x_test, y_test = data.test_x[:test_size], data.test_y[:test_size]
    return {"frames": images * repeat, "images": images, "batch_size": batch_size, "seconds": seconds,
            "frames_per_second": images * repeat / seconds,
            "test_error": error_rate(model.predict_fast(x_test).argmax(dim=1), y_test),
            "test_error_goodness": error_rate(model.label_goodness(x_test).argmax(dim=1), y_test)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--frames", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=4, help="frames per image")
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--test-size", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=100, help="the in-process trainer's mini-batch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("docs/service_vs_inprocess.json"))
    args = parser.parse_args()

    os.environ.setdefault("FFS_INPUT_DIM", "784")
    os.environ.setdefault("FFS_CHECKPOINT_DIR", f"runs/service-bench-{os.getpid()}")
    settings = Settings()
    data = load_dataset("mnist", args.data_dir)
    console = Console()
    images = -(-args.frames // args.repeat)

    console.print("in-process trainer ...")
    local = in_process(settings, data, images, args.repeat, args.test_size, args.batch_size, args.seed)
    console.print(f"in-process: test error {100 * local['test_error']:.2f}% after {local['frames']} frames")

    service_json = args.out.with_name(args.out.stem + "_replay.json")
    code = run_replay(settings, data_dir=args.data_dir, dataset="mnist", frames=args.frames, streams=args.streams,
                      repeat=args.repeat, test_size=args.test_size, evaluations=5, out=service_json, console=console)
    if code:
        raise SystemExit(code)
    service = json.loads(service_json.read_text())
    service_json.unlink()
    service["test_error"] = service["curve"][-1]["test_error"]
    ratio = service["test_error"] / local["test_error"]
    result = {"date": time.strftime("%Y-%m-%d"), "hardware": hardware(), "frames": args.frames, "repeat": args.repeat,
              "settings": settings.model_dump(exclude={"redis_url"}), "in_process": local, "service": service,
              "error_ratio": ratio, "within_1_5x": ratio <= 1.5}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    console.print(f"service {100 * service['test_error']:.2f}% vs in-process {100 * local['test_error']:.2f}% "
                  f"test error: ratio {ratio:.2f} ({'within' if ratio <= 1.5 else 'NOT within'} 1.5x); "
                  f"service {service['frames_per_second']:.0f} frames/s, largest lag {service['max_lag_frames']} frames")


if __name__ == "__main__":
    main()
