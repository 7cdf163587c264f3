"""``ffstream replay``: a real dataset streamed through the REST API, accuracy over time."""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.console import Console

from ffcore.data.datasets import load_dataset
from service.demo import held_out_accuracy, running_system, stream_videos
from service.settings import Settings


def run_replay(settings: Settings, *, data_dir: Path, dataset: str, frames: int, streams: int, repeat: int,
               test_size: int, evaluations: int, out: Path | None, console: Console) -> int:
    data = load_dataset(dataset, data_dir)
    if settings.input_dim != data.input_dim or settings.num_classes < data.num_classes:
        console.print(f"[bold red]error:[/] {dataset} has {data.input_dim}-value frames and {data.num_classes} "
                      f"classes: set FFS_INPUT_DIM={data.input_dim} FFS_NUM_CLASSES={data.num_classes}", soft_wrap=True)
        return 2
    images = -(-frames // repeat)
    x = data.train_x[:images].numpy().repeat(repeat, axis=0)[:frames]  # each image a "boring video" of `repeat` frames
    y = data.train_y[:images].numpy().repeat(repeat)[:frames]
    per = -(-len(x) // streams)
    videos = [(x[i * per : (i + 1) * per], y[i * per : (i + 1) * per]) for i in range(streams)]
    x_test, y_test = data.test_x[:test_size].numpy(), data.test_y[:test_size].numpy()
    curve: list[dict] = []
    start = time.perf_counter()

    def evaluate(posted: int) -> None:
        curve.append({"frames": posted, "seconds": time.perf_counter() - start,
                      "test_error": 1 - held_out_accuracy(client, x_test, y_test)})
        console.print(f"{posted:7d} frames: test error {100 * curve[-1]['test_error']:.2f}% "
                      f"({test_size} test images)")

    try:
        with running_system(settings, console) as client:
            _, max_lag = stream_videos(client, videos, console, chunk=max(repeat, 4), every=evaluate,
                          every_frames=max(len(x) // evaluations, 1))
            if not curve or curve[-1]["frames"] != len(x):
                evaluate(len(x))
            model = client.get("/v1/model").json()
    except RuntimeError as e:
        console.print(f"[bold red]error:[/] {e}", soft_wrap=True)
        return 1
    seconds = time.perf_counter() - start
    result = {"dataset": dataset, "frames": len(x), "streams": streams, "repeat": repeat, "test_size": test_size,
              "seconds": seconds, "frames_per_second": len(x) / seconds, "max_lag_frames": max_lag, "curve": curve,
              "negatives_applied": model["negatives_applied"], "sleep_cycles": model["sleep"]["cycles"]}
    console.print(f"{len(x)} frames in {seconds:.0f} s ({len(x) / seconds:.0f} frames/s), final test error "
                  f"{100 * curve[-1]['test_error']:.2f}%, {model['negatives_applied']} negative updates applied, "
                  f"largest lag {max_lag} frames")
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
    return 0
