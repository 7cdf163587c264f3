"""`ffstream up` as a real subprocess on free loopback ports, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from service.probe import wait_ready
from service.embedded import free_port

REPO = Path(__file__).parents[2]


@dataclass
class Up:
    client: httpx.Client
    proc: subprocess.Popen
    checkpoint_dir: Path
    ports: dict[str, int]  # api, wake, sleep (each role's /metrics); predict with FFS_PREDICT_PORT


@contextmanager
def ffstream_up(checkpoint_dir: Path, **env_overrides: str):
    ports = {"api": free_port(), "wake": free_port(), "sleep": free_port()}
    env = {**os.environ, "FFS_PORT": str(ports["api"]), "FFS_WAKE_METRICS_PORT": str(ports["wake"]),
           "FFS_SLEEP_METRICS_PORT": str(ports["sleep"]), "FFS_CHECKPOINT_DIR": str(checkpoint_dir),
           "FFS_WIDTHS": "[64, 64]", "FFS_SNAPSHOT_EVERY_FRAMES": "100",
           "FFS_DEVICE": "cpu", "OMP_NUM_THREADS": "1", **env_overrides}
    env.pop("FFS_REDIS_URL", None)
    if "FFS_PREDICT_PORT" in env_overrides:
        ports["predict"] = int(env_overrides["FFS_PREDICT_PORT"])
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "up"], env=env, cwd=REPO,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    client = httpx.Client(base_url=f"http://127.0.0.1:{ports['api']}", timeout=30)
    try:
        if not wait_ready(client, 90):
            proc.kill()
            pytest.fail(f"ffstream up did not become ready in 90 s: {proc.stderr.read()[-2000:]}")
        yield Up(client, proc, checkpoint_dir, ports)
    finally:
        client.close()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the whole session: up, its workers and its redis-server
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@contextmanager
def serve_app(settings):
    """The API alone (``settings``) served as ``ffstream api`` serves it (uvicorn, the connection
    guards) over real loopback HTTP in a thread; yields its base URL. For concurrency that an
    in-process test client would serialize, and for connection-level behaviour."""
    import threading
    import time

    import uvicorn

    from service.api.app import create_app
    from service.api.server import GuardedH11Protocol

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning",
                                           http=GuardedH11Protocol, limit_concurrency=settings.max_connections + 1))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the API did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
