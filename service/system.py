"""The embedded system behind ``ffstream up``: a private redis-server (unless FFS_REDIS_URL is set)
and the roles as child processes (api, wake, sleep; predict when FFS_PREDICT_PORT is set), supervised.

A child that exits is restarted after a backoff (1 s, doubling up to 30 s); the private
redis-server too, on the same port and data folder (its append-only file brings the frames back).
After ``restart_limit`` restarts of one process within ``restart_window_s`` the system gives up,
and ``ffstream up`` exits non-zero so that a supervisor above it (systemd, a container runtime)
sees the failure. Stopping stops the API first and the wake worker last, so it can checkpoint.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)
ROLES = ("api", "wake", "sleep")  # and "predict" when FFS_PREDICT_PORT is set
BACKOFF_MAX_S = 30.0


def _die_with_parent() -> None:
    """In a child: ask Linux to SIGTERM this process when its parent dies (even by SIGKILL),
    so a killed `ffstream up` never leaves orphaned workers behind."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class GaveUp(RuntimeError):
    """A process kept dying: the system stopped restarting it."""


class System:
    def __init__(self, settings, env: dict | None = None, restart_limit: int | None = None,
                 restart_window_s: float | None = None):
        self.settings = settings
        self.extra_env = env or {}
        self.restart_limit = settings.restart_limit if restart_limit is None else restart_limit
        self.restart_window_s = settings.restart_window_s if restart_window_s is None else restart_window_s
        self.redis = None
        self.children: dict[str, subprocess.Popen] = {}
        self.restarts: dict[str, deque[float]] = {}
        self._due: dict[str, float] = {}  # process -> monotonic time of its pending restart
        self._env: dict[str, str] = {}

    def start(self) -> System:
        from service.embedded import EmbeddedRedis

        env = {**os.environ, **self.extra_env}
        # OpenMP reads its thread count when torch loads: the children start with the budget.
        env.setdefault("OMP_NUM_THREADS", str(self.settings.torch_threads))
        if self.settings.redis_url is None:
            self.redis = EmbeddedRedis(Path(self.settings.checkpoint_dir) / "redis").start()
            env["FFS_REDIS_URL"] = self.redis.url
        self._env = env
        for role in ROLES + (("predict",) if self.settings.predict_port else ()):
            self._spawn(role)
        return self

    def _spawn(self, role: str) -> None:
        self.children[role] = subprocess.Popen([sys.executable, "-m", "service.cli", role], env=self._env,
                                               preexec_fn=_die_with_parent)

    def _exited(self) -> dict[str, str]:
        """Processes that have exited and have no restart pending: name -> how they exited."""
        out = {}
        if self.redis and self.redis.process.poll() is not None and "redis" not in self._due:
            out["redis"] = f"redis-server exited with status {self.redis.process.returncode}"
        for role, p in self.children.items():
            if p.poll() is not None and role not in self._due:
                out[role] = f"{role} exited with status {p.returncode}"
        return out

    def supervise(self) -> list[str]:
        """Notice exits, schedule and perform restarts. Returns what happened (for the console).
        Raises :class:`GaveUp` once a process has used up its restarts."""
        now, events = time.monotonic(), []
        for name, how in self._exited().items():
            recent = self.restarts.setdefault(name, deque())
            while recent and now - recent[0] > self.restart_window_s:
                recent.popleft()
            if len(recent) >= self.restart_limit:
                raise GaveUp(f"{how}; it was restarted {len(recent)} times in the last "
                             f"{self.restart_window_s:g} s: giving up")
            delay = min(BACKOFF_MAX_S, 2.0 ** len(recent))
            recent.append(now + delay)
            self._due[name] = now + delay
            events.append(f"{how}; restarting in {delay:g} s ({len(recent)} of {self.restart_limit} "
                          f"restarts allowed in {self.restart_window_s:g} s)")
        for name, due in list(self._due.items()):
            if now >= due:
                del self._due[name]
                if name == "redis":
                    self.redis.start()
                else:
                    self._spawn(name)
                events.append(f"{name} restarted")
        return events

    def stop(self) -> None:
        self._due.clear()
        for role in ("api", "predict", "sleep", "wake"):
            p = self.children.get(role)
            if p and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        if self.redis:
            self.redis.stop()


@contextmanager
def launched(checkpoint_dir: str | Path, **env_overrides: str) -> Iterator[str]:
    """``ffstream up`` as a subprocess (its own session) on free loopback ports, with
    ``FFS_*`` overrides; yields the API's base URL once ``/readyz`` answers; stops it all after.
    For benchmarks and load tests that measure the system from outside."""
    import httpx

    from service.embedded import free_port
    from service.probe import wait_ready

    port = free_port()
    env = {**os.environ, "FFS_PORT": str(port), "FFS_WAKE_METRICS_PORT": str(free_port()),
           "FFS_SLEEP_METRICS_PORT": str(free_port()), "FFS_CHECKPOINT_DIR": str(checkpoint_dir),
           "FFS_LOG_LEVEL": "WARNING", **env_overrides}
    env.pop("FFS_REDIS_URL", None)  # its own private redis-server
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "up"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=30) as c:
            if not wait_ready(c, 90):
                raise RuntimeError("ffstream up did not become ready in 90 s")
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
