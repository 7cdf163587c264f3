"""`ffstream send` with real sources made in the test (a video encoded with PyAV, an image folder,
CSV and NPZ files) into a real service: every frame applied exactly once."""

import io
import os
import signal
import subprocess
import sys

import av
import numpy as np
import pytest
from PIL import Image
from rich.console import Console

from service.client import Client
from service.send import send
from service.sources import SourceError, open_source, read_labels
from tests.service.test_client import Waker
from tests.service.test_system import _child
from tests.service.up import ffstream_up, serve_app

QUIET = Console(file=io.StringIO())


def _video(path, frames: int, side: int = 32, fps: int = 25):
    """Frames whose brightness encodes their index: frame k is uniformly (k * 7) % 256."""
    container = av.open(str(path), "w")
    stream = container.add_stream("mpeg4", rate=fps)
    stream.width = stream.height = side
    stream.pix_fmt = "yuv420p"
    for k in range(frames):
        image = np.full((side, side, 3), (k * 7) % 256, np.uint8)
        for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()


def test_a_video_becomes_frames_of_the_models_shape_in_order(tmp_path):
    _video(tmp_path / "v.mp4", 12)
    source = open_source(str(tmp_path / "v.mp4"), input_dim=196)
    frames = [f for f, _ in source.frames]
    assert source.fps == 25 and len(frames) == 12 and frames[0].shape == (196,)
    means = [float(f.mean()) * 255 for f in frames]
    assert all(abs(m - (k * 7) % 256) < 4 for k, m in enumerate(means)), means  # lossy codec: close
    with pytest.raises(SourceError, match="give --shape"):
        open_source(str(tmp_path / "v.mp4"), input_dim=200)


def test_a_video_through_the_real_system_is_learned_once_across_an_api_restart(tmp_path):
    _video(tmp_path / "v.mp4", 240)
    (tmp_path / "labels.csv").write_text("frame_index,label\n" + "".join(f"{i},{i % 3}\n" for i in range(240)))
    with ffstream_up(tmp_path / "system", FFS_RESTART_LIMIT="3") as up:
        base = str(up.client.base_url)
        source_open = open_source
        first_api = _child(up.proc.pid, "api")

        def killing_source(*args, **kw):  # the API dies (SIGKILL) after frame 100; ffstream up restarts it
            src = source_open(*args, **kw)
            inner = src.frames

            def frames():
                for i, item in enumerate(inner):
                    if i == 100:
                        os.kill(_child(up.proc.pid, "api"), signal.SIGKILL)
                    yield item
            src.frames = frames()
            return src

        import service.send as send_module
        send_module.open_source = killing_source
        try:
            with Client(base, batch_size=16, backoff_max_s=2.0, max_retries=30) as c:
                report = send(c, str(tmp_path / "v.mp4"), "cam", QUIET, rate="max",
                              labels_file=tmp_path / "labels.csv")
        finally:
            send_module.open_source = source_open
        assert report.frames == 240
        assert _child(up.proc.pid, "api") not in (None, first_api)  # it really was a new API process
        from service.probe import wait_until
        assert wait_until(lambda: up.client.get("/v1/streams/cam").json()["frames_applied"] == 240, 60)
        status = up.client.get("/v1/streams/cam").json()
        assert status["frames_applied"] == 240 and status["last_seq"] == 239
        assert status["frames_received"] == 240 + status["duplicates"]  # resent frames were skipped, not learned


def test_an_image_folder_and_sensor_files(settings, tmp_path):
    folder = tmp_path / "images"
    for c in ("cat", "dog"):
        (folder / c).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(np.full((20, 20), 40 * i, np.uint8)).save(folder / c / f"{i}.png")
    x = np.random.default_rng(0).random((12, settings.input_dim))
    csv = tmp_path / "sensors.csv"
    csv.write_text(",".join([f"v{i}" for i in range(settings.input_dim)] + ["label"]) + "\n"
                   + "".join(",".join(f"{v:.4f}" for v in row) + f",{i % 4}\n" for i, row in enumerate(x)))
    np.savez(tmp_path / "sensors.npz", frames=x, labels=np.arange(12) % 2)
    with serve_app(settings) as base, Waker(settings), Client(base, batch_size=4) as c:
        assert send(c, str(folder), "img", QUIET, rate="max").frames == 10
        assert send(c, str(csv), "csv", QUIET, label_column="label").frames == 12
        assert send(c, str(tmp_path / "sensors.npz"), "npz", QUIET, limit=7).frames == 7
        from service.probe import wait_until
        cli = subprocess.run([sys.executable, "-m", "service.cli", "send", str(csv), "--stream", "cli", "--url", base,
                              "--label-column", "label", "--rate", "max"], capture_output=True, text=True, timeout=120)
        assert cli.returncode == 0 and "sent 12 frames" in cli.stderr, cli.stderr[-2000:]
        bad = subprocess.run([sys.executable, "-m", "service.cli", "send", str(tmp_path / "nope.npy"), "--stream",
                              "cli", "--url", base], capture_output=True, text=True, timeout=120)
        assert bad.returncode == 2 and "no such file" in bad.stderr
        for stream, n in (("img", 10), ("csv", 12), ("npz", 7), ("cli", 12)):
            assert wait_until(lambda: c.stream(stream).frames_applied == n, 30), stream
            assert c.stream(stream).duplicates == 0
    labels = [label for _, label in open_source(str(folder), settings.input_dim).frames]
    assert labels == [0] * 5 + [1] * 5  # sub-folder names, sorted: cat 0, dog 1
    rows = list(open_source(str(csv), settings.input_dim, label_column="label").frames)
    assert [label for _, label in rows] == [i % 4 for i in range(12)]
    assert np.allclose(rows[3][0], x[3], atol=1e-4)


def test_sources_explain_what_is_wrong(tmp_path):
    np.save(tmp_path / "bad.npy", np.zeros((3, 5)))
    with pytest.raises(SourceError, match="rows of 196 values"):
        open_source(str(tmp_path / "bad.npy"), 196)
    with pytest.raises(SourceError, match="no such file"):
        open_source(str(tmp_path / "missing.csv"), 196)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no images"):
        open_source(str(tmp_path / "empty"), 196)
    (tmp_path / "l.csv").write_text("0,1\n1,x\n")
    with pytest.raises(SourceError, match="expected frame_index,label"):
        read_labels(tmp_path / "l.csv")


def test_ctrl_c_sends_what_is_queued_and_stops(settings, tmp_path):
    import re
    import time

    _video(tmp_path / "v.mp4", 400)
    with serve_app(settings) as base, Waker(settings), Client(base) as c:
        # Ctrl-C as in a terminal: a runner started in the background hands its children SIGINT
        # ignored, and Python then installs no handler for it (seen when CI ran under `nohup ... &`)
        proc = subprocess.Popen([sys.executable, "-m", "service.cli", "send", str(tmp_path / "v.mp4"), "--stream", "cam",
                                 "--url", base, "--rate", "50", "--batch", "32"], stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        time.sleep(4)  # about 100-150 frames in (after start-up), at 50 frames/s
        proc.send_signal(signal.SIGINT)
        err = proc.communicate(timeout=60)[1]
        assert proc.returncode == 130 and "interrupted" in err, err[-2000:]
        sent = int(re.search(r"sent (\d+) frames", err).group(1))
        assert 0 < sent < 400
        from service.probe import wait_until
        assert wait_until(lambda: c.stream("cam").frames_applied == sent, 30)  # every frame read was sent
        assert c.stream("cam").frames_received == sent
