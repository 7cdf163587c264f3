"""Throughput of `ffstream send` on a video, beside the ceilings of its parts, in one run:

  decode     PyAV decoding + conversion to the model's frame, nothing sent;
  post       the client posting the already-decoded frames (batches of --batch), service running;
  send       `ffstream send`'s loop end to end (decode, convert, learn_one batching, post);
  applied    frames/s the service had applied when `send` returned, and once the lag is 0.

    python benchmarks/client_send.py --frames 3000 --out docs/client_send.json

A video of --frames frames (64 x 64, 25 fps, MPEG-4, bright moving bars) is made first with PyAV;
the service is `ffstream up` with its defaults (frames of 196 values: 14 x 14 gray).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
from rich.console import Console

from ffcore.experiment import hardware
from service.client import Client
from service.probe import wait_until
from service.send import send
from service.sources import open_source
from service.system import launched



def make_video(path: Path, frames: int, side: int = 64) -> None:
    container = av.open(str(path), "w")
    stream = container.add_stream("mpeg4", rate=25)
    stream.width = stream.height = side
    stream.pix_fmt = "yuv420p"
    rows = np.arange(side)[:, None]
    for k in range(frames):
        image = (((rows + k) // 8) % 2 * 255).astype(np.uint8).repeat(side, axis=1)
        for packet in stream.encode(av.VideoFrame.from_ndarray(np.stack([image] * 3, axis=-1), format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    # the video, Redis's files and the checkpoints: removed when done, whatever happens
    with tempfile.TemporaryDirectory(prefix="ffstream-send-", ignore_cleanup_errors=True) as work:
        result = run(args, Path(work))
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


def run(args, work: Path) -> dict:
    """Decode, post and send a synthetic video through an embedded system under ``work``."""
    video = work / "bars.mp4"
    make_video(video, args.frames)
    result = {"date": time.strftime("%Y-%m-%d"), "hardware": hardware(), "frames": args.frames, "batch": args.batch,
              "command": "python benchmarks/client_send.py " + " ".join(sys.argv[1:])}

    started = time.perf_counter()
    decoded = np.stack([f for f, _ in open_source(str(video), 196).frames])
    result["decode_fps"] = len(decoded) / (time.perf_counter() - started)

    with launched(work / "system") as base:
        with Client(base, batch_size=args.batch) as c:
            started = time.perf_counter()
            c.learn("post", decoded)
            result["post_fps"] = len(decoded) / (time.perf_counter() - started)
            wait_until(lambda: c.stream("post").lag == 0, 300)
            started = time.perf_counter()
            report = send(c, str(video), "send", Console(file=io.StringIO()), rate="max")
            result["send_fps"] = report.fps
            result["applied_when_send_returned"] = c.stream("send").frames_applied
            wait_until(lambda: c.stream("send").lag == 0, 300)
            result["applied_fps_end_to_end"] = args.frames / (time.perf_counter() - started)
            status = c.stream("send")
            result["applied"], result["duplicates"] = status.frames_applied, status.duplicates
    return result


if __name__ == "__main__":
    main()
