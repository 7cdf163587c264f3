"""The ``ffstream`` command: the whole system in one command (``up``), one role per process for
docker-compose (``api``, ``predict``, ``wake``, ``sleep``), and a live ``demo``."""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

import typer
from pydantic import ValidationError
from rich.console import Console

app = typer.Typer(add_completion=False, no_args_is_help=True, help="ffstream: online Forward-Forward learning.")
console = Console(stderr=True)


def _settings():
    from service.settings import Settings

    try:
        return Settings()
    except ValidationError as e:
        for err in e.errors():
            where = ".".join(str(x) for x in err["loc"]) or "settings"
            console.print(f"[bold red]error:[/] FFS_{where.upper()}: {err['msg']}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def _logging(level: str) -> None:
    from service.logs import setup

    setup(level)


def _thread_budget(settings, worker: bool = False) -> None:
    """Each process gets FFS_TORCH_THREADS threads: API, wake, sleep and Redis share the cores, and
    torch's default (one thread per core in every process) oversubscribes them. A worker also
    takes FFS_WORKER_NICE (below 0: the learning runs first; above 0: the API does)."""
    import os

    import torch

    torch.set_num_threads(settings.torch_threads)
    if not worker or not settings.worker_nice:
        return
    try:
        os.nice(settings.worker_nice)
    except PermissionError:  # raising a priority needs CAP_SYS_NICE: go on at the inherited one
        logging.getLogger("service").warning(
            "cannot change this process's niceness by FFS_WORKER_NICE=%d: raising a priority needs "
            "CAP_SYS_NICE; running at the priority it was started with", settings.worker_nice)


@app.command()
def api():
    """Run the HTTP API (uvicorn)."""
    _serve("api")


@app.command()
def predict():
    """Run the predict role: /v1/predict and the read-only routes on FFS_PREDICT_PORT, a process
    of its own so that predictions never wait behind ingest on one event loop."""
    _serve("predict")


def _serve(role: str) -> None:
    import uvicorn

    from service.api.app import create_app
    from service.api.server import GuardedH11Protocol, raise_file_limit

    settings = _settings()
    _logging(settings.log_level)
    _thread_budget(settings)
    port = settings.port
    if role == "predict":
        if not settings.predict_port:
            console.print("[bold red]error:[/] set FFS_PREDICT_PORT to the port the predict role listens on",
                          highlight=False, soft_wrap=True)
            raise typer.Exit(2)
        port = settings.predict_port

    # Every connection holds a file descriptor: leave room for Redis connections and the rest.
    raise_file_limit(settings.max_connections + settings.redis_max_connections + 256)
    guards = {"http": GuardedH11Protocol, "limit_concurrency": settings.max_connections + 1,
              "timeout_keep_alive": 5, "log_config": None}  # uvicorn's records go through our handler
    logging.getLogger("uvicorn").setLevel(logging.WARNING)
    if settings.api_workers == 1 or role == "predict":
        uvicorn.run(create_app(settings, role), host=settings.host, port=port, **guards)
        return
    # Several processes: prometheus-client's multiprocess mode merges their metrics; each worker
    # builds its app from the same FFS_* environment.
    import shutil
    import tempfile

    made = None
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:  # ours to make, and to remove when the API stops
        made = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="ffstream-metrics-")
    try:
        uvicorn.run("service.api.app:create_app", factory=True, host=settings.host, port=settings.port,
                    workers=settings.api_workers, **guards)
    finally:
        if made:
            shutil.rmtree(made, ignore_errors=True)


@app.command()
def wake():
    """Run the wake worker (positive phase; owns the weights)."""
    from service.wake import WakeError, main

    settings = _settings()
    _logging(settings.log_level)
    _thread_budget(settings, worker=True)
    try:
        main(settings)
    except WakeError as e:
        console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


@app.command()
def sleep():
    """Run the sleep worker (negative phase: answers the wake worker's dreams)."""
    from service.sleep import main

    settings = _settings()
    _logging(settings.log_level)
    _thread_budget(settings, worker=True)
    main(settings)


@app.command()
def up():
    """Start everything: a private redis-server when FFS_REDIS_URL is unset, then api, wake, sleep.
    A process that dies is restarted with backoff; if one keeps dying, everything stops and the
    exit status is 1. Ctrl-C or SIGTERM stops them all cleanly (status 0)."""
    from service.system import GaveUp, System

    settings = _settings()
    _logging(settings.log_level)
    stopping = False

    def on_signal(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        system = System(settings).start()
    except RuntimeError as e:
        console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    base = f"http://{settings.host}:{settings.port}"
    console.print(f"ffstream up: API {base}  docs {base}/docs  metrics {base}/metrics  (Ctrl-C stops)")
    if settings.predict_port:
        console.print(f"predict also at http://{settings.host}:{settings.predict_port}/v1/predict (its own process)")
    code = 0
    try:
        while not stopping:
            try:
                for event in system.supervise():
                    console.print(f"[yellow]warning:[/] {event}", highlight=False, soft_wrap=True)
            except GaveUp as e:
                console.print(f"[bold red]error:[/] {e}; stopping", highlight=False, soft_wrap=True)
                code = 1
                break
            time.sleep(0.2)
    finally:
        system.stop()
    console.print("ffstream stopped")
    raise typer.Exit(code)


@app.command()
def demo(
    streams: int = typer.Option(4, min=1, help="concurrent synthetic videos"),
    frames: int = typer.Option(1500, min=10, help="frames to post in all"),
):
    """Stream a built-in synthetic labeled video through the REST API and watch the prequential
    accuracy rise. Starts the embedded system if none answers at FFS_HOST:FFS_PORT."""
    from service.demo import run_demo

    settings = _settings()
    _logging("WARNING")
    raise typer.Exit(run_demo(settings, streams=streams, total_frames=frames, console=console))


@app.command()
def replay(
    data_dir: Path = typer.Option(..., help="folder with the dataset's IDX files"),
    dataset: str = typer.Option("mnist", help="mnist | fashion-mnist"),
    frames: int = typer.Option(20_000, min=1, help="frames to stream"),
    streams: int = typer.Option(4, min=1),
    repeat: int = typer.Option(4, min=1, help="frames per image: a static image is a boring video"),
    test_size: int = typer.Option(1000, min=1, help="test images for each evaluation"),
    evaluations: int = typer.Option(5, min=1, help="evaluations during streaming"),
    out: Path | None = typer.Option(None, help="write the accuracy curve as JSON"),
):
    """Stream a real dataset through the REST API and report test accuracy over time.
    Needs FFS_INPUT_DIM / FFS_NUM_CLASSES to match the dataset (784 / 10 for MNIST)."""
    from service.replay import run_replay

    settings = _settings()
    _logging("WARNING")
    try:
        code = run_replay(settings, data_dir=data_dir, dataset=dataset, frames=frames, streams=streams, repeat=repeat,
                          test_size=test_size, evaluations=evaluations, out=out, console=console)
    except (ValueError, FileNotFoundError) as e:
        console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        code = 2
    raise typer.Exit(code)


@app.command("send")
def send_cmd(
    source: str = typer.Argument(..., help="a video file, a camera (/dev/video0), an image folder, or a CSV/NPY/NPZ "
                                 "of sensor vectors"),
    stream: str = typer.Option(..., "--stream", help="the stream id to learn on"),
    url: str | None = typer.Option(None, help="the service (default http://FFS_HOST:FFS_PORT)"),
    api_key: str | None = typer.Option(None, envvar="FFS_API_KEY", help="the service's API key, if it has keys"),
    rate: str = typer.Option("native", help="native (a video's own frame rate), max, or frames per second"),
    shape: tuple[int, int] | None = typer.Option(None, help="HEIGHT WIDTH of the model's frames (default: square)"),
    color: bool = typer.Option(False, help="RGB frames (3 values per pixel) instead of gray"),
    labels: Path | None = typer.Option(None, help="a side file of frame_index,label lines"),
    label_column: str | None = typer.Option(None, help="CSV: the label column (name or index)"),
    predict_every: int = typer.Option(0, min=0, help="every N frames, print the prediction for the frame"),
    batch: int = typer.Option(32, min=1, help="frames per request"),
    seq_file: Path | None = typer.Option(None, help="keep per-stream seqs here (resume without re-learning)"),
    limit: int | None = typer.Option(None, min=1, help="stop after this many frames"),
):
    """Stream a source's frames (and labels) to a running service, with live frames/s, lag and
    prequential accuracy. Ctrl-C sends what is queued and stops."""
    from service.client import Client, FFStreamError
    from service.send import send
    from service.settings import Settings
    from service.sources import SourceError

    base = url or f"http://{Settings().host}:{Settings().port}"
    try:
        with Client(base, api_key, batch_size=batch, seq_file=seq_file) as client:
            report = send(client, source, stream, console, rate=rate, shape=shape, color=color,
                          label_column=label_column, labels_file=labels, predict_every=predict_every, limit=limit)
    except (SourceError, FFStreamError, ValueError, FileNotFoundError) as e:
        console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    console.print(f"sent {report.frames} frames in {report.seconds:.1f} s ({report.fps:,.0f} frames/s)"
                  + (" (interrupted)" if report.interrupted else ""))
    raise typer.Exit(130 if report.interrupted else 0)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
