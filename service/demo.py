"""``ffstream demo``: a synthetic labeled video streamed through the real REST API."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import contextmanager

import httpx
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ffcore.data.synthetic import make_synthetic
from service.client import Client
from service.probe import wait_ready
from service.settings import Settings

SCENE = 5  # frames per scene: a static image is "a boring video"


def synthetic_video(n: int, seed: int, noise: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
    """``n`` frames in scenes of SCENE noisy frames of one class each: (n, 196) and (n,)."""
    x, y = make_synthetic(n * 4, noise=noise, seed=seed)  # a pool of frames to draw each scene from
    rng = np.random.default_rng(seed)
    x, y = x.numpy(), y.numpy()
    scene_labels = rng.integers(0, 10, -(-n // SCENE))
    labels = np.repeat(scene_labels, SCENE)[:n]
    frames = np.stack([x[rng.choice(np.nonzero(y == c)[0])] for c in labels])
    return frames, labels


@contextmanager
def running_system(settings: Settings, console: Console):
    """An HTTP client to the service at FFS_HOST:FFS_PORT, starting the embedded system (and
    stopping it afterwards) when nothing answers there."""
    from service.system import System

    client = httpx.Client(base_url=f"http://{settings.host}:{settings.port}", timeout=60)
    system = None
    try:
        if not wait_ready(client, 0.5):
            console.print("no ffstream answering: starting the embedded system")
            system = System(settings, env={"FFS_LOG_LEVEL": "WARNING"}).start()
            if not wait_ready(client, 120):
                raise RuntimeError(f"the system did not become ready: {system.failed() or 'timeout'}")
        yield client
    finally:
        client.close()
        if system:
            system.stop()


def stream_videos(client: httpx.Client, videos: list[tuple[np.ndarray, np.ndarray]], console: Console, *,
                  chunk: int = SCENE, every: Callable[[int], None] | None = None,
                  every_frames: int = 0, stream_prefix: str = "video-") -> tuple[float | None, int]:
    """Post each stream's frames in order through :class:`service.client.Client` (seqs, retries),
    ``chunk`` frames per request, round robin over the
    streams, never more than a few chunks ahead of the learner (a camera does not outrun it).
    Shows the rolling prequential accuracy; calls ``every(frames_posted)`` every ``every_frames``.
    Returns the last mean rolling accuracy and the largest lag (frames received, not yet applied) seen."""
    sender = Client(str(client.base_url), client.headers.get("x-api-key"), batch_size=chunk)
    total = sum(len(x) for x, _ in videos)
    posted, next_call, accuracy, max_lag = 0, every_frames, None, 0
    longest = max(len(x) for x, _ in videos)
    with Progress(TextColumn("[bold]streaming"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[info]}"), console=console) as progress:
        task = progress.add_task("frames", total=total, info="")
        for start in range(0, longest, chunk):
            for s, (x, y) in enumerate(videos):
                if start >= len(x):
                    continue
                accepted = sum(a.frames for a in sender.learn(f"{stream_prefix}{s}", x[start : start + chunk],
                                                                y[start : start + chunk]))
                posted += accepted
                progress.advance(task, accepted)
            while True:
                stats = [client.get(f"/v1/streams/{stream_prefix}{s}").json() for s in range(len(videos))]
                accs = [st["rolling_accuracy"] for st in stats if st["rolling_accuracy"] is not None]
                lag = sum(st["lag"] for st in stats)
                max_lag = max(max_lag, lag)
                accuracy = sum(accs) / len(accs) if accs else None
                acc_text = f"{100 * accuracy:.1f}%" if accuracy is not None else "-"
                progress.update(task, info=f"prequential accuracy {acc_text}  lag {lag} frames")
                if lag <= 4 * chunk * len(videos):
                    break
                time.sleep(0.05)
            if every and every_frames and posted >= next_call:
                every(posted)
                next_call += every_frames
    sender.close()
    wait_applied(client, len(videos), stream_prefix)
    return accuracy, max_lag


def wait_applied(client: httpx.Client, streams: int, stream_prefix: str = "video-", timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not sum(client.get(f"/v1/streams/{stream_prefix}{s}").json()["lag"] for s in range(streams)):
            return
        time.sleep(0.2)


def held_out_accuracy(client: httpx.Client, x: np.ndarray, y: np.ndarray, batch: int = 200) -> float:
    """Accuracy of /v1/predict (frames without stream context) on labeled frames."""
    correct = 0
    for i in range(0, len(x), batch):
        r = client.post("/v1/predict", json={"frames": x[i : i + batch].tolist()})
        r.raise_for_status()
        correct += sum(p["label"] == t for p, t in zip(r.json()["predictions"], y[i : i + batch]))
    return correct / len(x)


def run_demo(settings: Settings, *, streams: int, total_frames: int, console: Console) -> int:
    if settings.input_dim != 196 or settings.num_classes != 10:
        console.print("[bold red]error:[/] the demo video has 196-value frames and 10 classes: "
                      "unset FFS_INPUT_DIM / FFS_NUM_CLASSES", soft_wrap=True)
        return 2
    base = f"http://{settings.host}:{settings.port}"
    try:
        with running_system(settings, console) as client:
            per_stream = -(-total_frames // streams)
            stream_videos(client, [synthetic_video(per_stream, seed=100 + s) for s in range(streams)], console)
            x_test, y_test = synthetic_video(200, seed=999)
            held_out = held_out_accuracy(client, x_test, y_test)
            model = client.get("/v1/model").json()
    except RuntimeError as e:
        console.print(f"[bold red]error:[/] {e}", soft_wrap=True)
        return 1
    console.print(f"held-out accuracy {100 * held_out:.1f}% (chance 10%), model version {model['version']}, "
                  f"{model['frames_seen']} frames seen, {model['negatives_applied']} negative updates applied, "
                  f"{model['sleep']['cycles']} sleep cycles")
    console.print(f"look at: {base}/docs (API), {base}/v1/model, Prometheus metrics at {base}/metrics (API), "
                  f"http://{settings.host}:{settings.wake_metrics_port}/metrics (wake) and "
                  f"http://{settings.host}:{settings.sleep_metrics_port}/metrics (sleep)")
    return 0
