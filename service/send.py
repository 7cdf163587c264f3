"""``ffstream send``: stream a source (video, camera, image folder, sensor file) to a running
service through :class:`service.client.Client`, with live progress."""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from service.client import Client, FFStreamError
from service.sources import open_source


def prefetch(frames, size: int = 256):
    """Iterate ``frames`` with a thread reading (decoding) up to ``size`` items ahead, so decoding
    and posting overlap. Errors in the reader are raised here; closing stops the reader."""
    items: queue.Queue = queue.Queue(maxsize=size)
    stop = threading.Event()
    done = object()

    def read():
        try:
            for item in frames:
                while not stop.is_set():
                    try:
                        items.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            items.put(done)
        except BaseException as e:  # handed to the consumer, raised there
            items.put(e)

    reader = threading.Thread(target=read, daemon=True, name="ffstream-send-reader")
    reader.start()
    try:
        while True:
            item = items.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


@dataclass
class SendReport:
    frames: int
    seconds: float
    interrupted: bool

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def send(client: Client, spec: str, stream: str, console: Console, *, rate: str = "native",
         shape: tuple[int, int] | None = None, color: bool = False, label_column: str | None = None,
         labels_file: Path | None = None, predict_every: int = 0, limit: int | None = None) -> SendReport:
    """Send every frame of ``spec`` to ``stream``. ``rate``: ``native`` (a video's own frame
    rate; as fast as the service takes them for other sources), ``max``, or frames per second.
    Ctrl-C stops reading, sends what is queued, and returns."""
    model = client.model()
    if model.input_dim is None:
        raise FFStreamError("the service has not published its model yet: retry in a moment")
    source = open_source(spec, model.input_dim, shape, color, label_column, labels_file)
    fps = source.fps if rate == "native" else (None if rate == "max" else float(rate))
    if fps is not None and fps <= 0:
        raise ValueError(f"--rate must be native, max or a positive number, got {rate!r}")
    total = source.total if limit is None else min(limit, source.total or limit)
    console.print(f"sending {source.kind} from {spec} to stream {stream!r} at "
                  f"{f'{fps:g} frames/s' if fps else 'full speed'} ({model.input_dim} values per frame)")
    sent, started, interrupted = 0, time.perf_counter(), False
    last_status, info = 0.0, ""
    with Progress(TextColumn("[bold]sending"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[info]}"), console=console) as progress:
        task = progress.add_task("frames", total=total, info="")
        try:
            for frame, label in prefetch(source.frames):
                if limit is not None and sent >= limit:
                    break
                if fps is not None:  # pace: frame k is due at k / fps
                    delay = started + sent / fps - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                client.learn_one(stream, frame, label)
                sent += 1
                progress.advance(task)
                if predict_every and sent % predict_every == 0:
                    client.flush()
                    p = client.predict_one(frame, stream=stream)
                    truth = f" (label {label})" if label is not None else ""
                    progress.console.print(f"frame {sent}: predicted {p.label} "
                                           f"p={max(p.probabilities):.2f}{truth}")
                now = time.perf_counter()
                if now - last_status >= 1.0:
                    last_status = now
                    info = _status_line(client, stream, sent, now - started)
                    progress.update(task, info=info)
        except KeyboardInterrupt:
            interrupted = True
            progress.console.print("interrupted: sending what is queued, then stopping")
        client.flush()
        progress.update(task, info=_status_line(client, stream, sent, time.perf_counter() - started))
    return SendReport(sent, time.perf_counter() - started, interrupted)


def _status_line(client: Client, stream: str, sent: int, seconds: float) -> str:
    rate = f"{sent / seconds:,.0f} frames/s" if seconds > 0 else ""
    try:
        status = client.stream(stream)
    except FFStreamError:
        return rate
    accuracy = f"  prequential accuracy {100 * status.rolling_accuracy:.1f}%" if status.rolling_accuracy is not None else ""
    return f"{rate}  lag {status.lag}{accuracy}"
