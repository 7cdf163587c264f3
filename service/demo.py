"""``ffstream demo``: a synthetic labeled video streamed through the real REST API."""

from __future__ import annotations

import time

import httpx
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ffcore.data.synthetic import make_synthetic
from service.codec import encode_frames
from service.settings import Settings

SCENE = 5  # frames per scene: a static image is "a boring video"


def wait_ready(client: httpx.Client, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _answers_ready(client):
            return True
        time.sleep(0.2)
    return False


def _answers_ready(client: httpx.Client) -> bool:
    try:
        return client.get("/readyz").status_code == 200
    except httpx.TransportError:  # not listening yet
        return False


def synthetic_video(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` frames in scenes of SCENE noisy frames of one class each: (n, 196) and (n,)."""
    x, y = make_synthetic(n * 4, seed=seed)  # a pool of frames to draw each scene from
    rng = np.random.default_rng(seed)
    x, y = x.numpy(), y.numpy()
    scene_labels = rng.integers(0, 10, -(-n // SCENE))
    labels = np.repeat(scene_labels, SCENE)[:n]
    frames = np.stack([x[rng.choice(np.nonzero(y == c)[0])] for c in labels])
    return frames, labels


def run_demo(settings: Settings, *, streams: int, total_frames: int, console: Console) -> int:
    if settings.input_dim != 196 or settings.num_classes != 10:
        console.print("[bold red]error:[/] the demo video has 196-value frames and 10 classes: "
                      "unset FFS_INPUT_DIM / FFS_NUM_CLASSES", soft_wrap=True)
        return 2
    base = f"http://{settings.host}:{settings.port}"
    system = None
    client = httpx.Client(base_url=base, timeout=30)
    if not wait_ready(client, 0.5):
        from service.cli import System

        console.print("no ffstream answering: starting the embedded system")
        system = System(settings, env={"FFS_LOG_LEVEL": "WARNING"}).start()
        if not wait_ready(client, 120):
            console.print(f"[bold red]error:[/] the system did not become ready: {system.failed() or 'timeout'}")
            system.stop()
            return 1
    try:
        return _stream(client, streams, total_frames, console, base)
    finally:
        client.close()
        if system:
            system.stop()


def _stream(client: httpx.Client, streams: int, total: int, console: Console, base: str) -> int:
    per_stream = -(-total // streams)
    videos = [synthetic_video(per_stream, seed=100 + s) for s in range(streams)]
    headers = {"content-type": "application/x-ffs-frames"}
    accuracy = None
    with Progress(TextColumn("[bold]streaming"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[info]}"), console=console) as progress:
        task = progress.add_task("frames", total=per_stream * streams, info="")
        for start in range(0, per_stream, SCENE):
            for s, (x, y) in enumerate(videos):
                body = encode_frames(x[start : start + SCENE], y[start : start + SCENE].tolist())
                r = client.post(f"/v1/streams/video-{s}/frames", content=body, headers=headers)
                r.raise_for_status()
                progress.advance(task, r.json()["accepted"])
            # A live camera does not outrun the learner: wait while more than a few scenes queue up.
            while True:
                stats = [client.get(f"/v1/streams/video-{s}").json() for s in range(streams)]
                accs = [st["rolling_accuracy"] for st in stats if st["rolling_accuracy"] is not None]
                lag = sum(st["lag"] for st in stats)
                accuracy = sum(accs) / len(accs) if accs else None
                acc_text = f"{100 * accuracy:.1f}%" if accuracy is not None else "-"
                progress.update(task, info=f"prequential accuracy {acc_text}  lag {lag} frames")
                if lag <= 4 * SCENE * streams:
                    break
                time.sleep(0.05)
    # let the wake worker catch up, then test on frames it has never seen
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and sum(client.get(f"/v1/streams/video-{s}").json()["lag"] for s in range(streams)):
        time.sleep(0.2)
    x_test, y_test = synthetic_video(200, seed=999)
    r = client.post("/v1/predict", json={"frames": x_test.tolist()})
    r.raise_for_status()
    preds = np.array([p["label"] for p in r.json()["predictions"]])
    held_out = float((preds == y_test).mean())
    model = client.get("/v1/model").json()
    console.print(f"held-out accuracy {100 * held_out:.1f}% (chance 10%), model version {model['version']}, "
                  f"{model['frames_seen']} frames seen, {model['negatives_applied']} negative updates applied, "
                  f"{model['sleep']['cycles']} sleep cycles")
    console.print(f"look at: {base}/docs (API), {base}/metrics (Prometheus), {base}/v1/model")
    return 0
