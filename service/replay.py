"""``ffstream replay``: a real dataset streamed through the REST API, accuracy over time."""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.console import Console

from ffcore.data.datasets import load_dataset
from service.demo import held_out_accuracy, running_system, stream_videos
from service.probe import wait_until
from service.settings import Settings


def run_replay(settings: Settings, *, data_dir: Path, dataset: str, frames: int, streams: int, repeat: int,
               test_size: int, evaluations: int, out: Path | None, console: Console) -> int:
    data = load_dataset(dataset, data_dir)
    if settings.input_dim != data.input_dim or settings.num_classes < data.num_classes:
        console.print(f"[bold red]error:[/] {dataset} has {data.input_dim}-value frames and {data.num_classes} "
                      f"classes: set FFS_INPUT_DIM={data.input_dim} FFS_NUM_CLASSES={data.num_classes}", soft_wrap=True)
        return 2
    images = -(-frames // repeat)
    # Stream s shows images s, s + streams, ... (cameras side by side), each a "boring video" of
    # `repeat` frames: the order benchmarks/online_learning.py's in-process learners see.
    x_all, y_all = data.train_x[:images].numpy(), data.train_y[:images].numpy()
    videos = [(x_all[s::streams].repeat(repeat, axis=0), y_all[s::streams].repeat(repeat)) for s in range(streams)]
    total = sum(len(v) for v, _ in videos)
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
            # 16 images per request: the service learns a frame at a time whatever the request size
            _, max_lag = stream_videos(client, videos, console, chunk=16 * repeat, every=evaluate,
                                       every_frames=max(total // evaluations, 1))
            # every frame is applied (stream_videos waits for it); the final figure is taken on a
            # snapshot that includes them all: the next one published after that
            applied_at = client.get("/v1/model").json()["version"]
            wait_until(lambda: client.get("/v1/model").json()["version"] != applied_at, 15)
            if curve and curve[-1]["frames"] == total:
                curve.pop()
            evaluate(total)
            model = client.get("/v1/model").json()
    except RuntimeError as e:
        console.print(f"[bold red]error:[/] {e}", soft_wrap=True)
        return 1
    seconds = time.perf_counter() - start
    result = {"dataset": dataset, "frames": total, "streams": streams, "repeat": repeat, "test_size": test_size,
              "seconds": seconds, "frames_per_second": total / seconds, "max_lag_frames": max_lag, "curve": curve,
              "positive_steps": model["positive_steps"], "negatives_applied": model["negatives_applied"],
              "negatives_missed": model["negatives_missed"], "negatives_rejected_stale": model["negatives_rejected_stale"],
              "sleep_cycles": model["sleep"]["cycles"]}
    console.print(f"{total} frames in {seconds:.0f} s ({total / seconds:.0f} frames/s), final test error "
                  f"{100 * curve[-1]['test_error']:.2f}%, {model['negatives_applied']} negative updates applied, "
                  f"largest lag {max_lag} frames")
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
    return 0
