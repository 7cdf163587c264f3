"""Fault injection against a real system on loopback: the API and the wake worker as separate
processes on a given Redis, clients posting to several streams, and the wake worker killed with
SIGKILL at random moments and restarted. Used by the test suite (a few kills) and by
``loadtests/faults.py`` (the long run whose figures are in docs/RELIABILITY.md).

The check: after the last restart has caught up, every frame answered 202 is applied exactly
once: Redis's per-stream applied count and the final checkpoint's both equal the accepted count.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from service.codec import encode_frames
from service.embedded import free_port

BINARY = {"content-type": "application/x-ffs-frames"}


@dataclass
class KillReport:
    kills: int
    accepted: dict[str, int]
    applied_redis: dict[str, int]
    applied_checkpoint: dict[str, int]
    refused: int  # requests answered 503 while something was down (retried by the poster)
    seconds: float
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class Role:
    """One ``ffstream <role>`` process."""

    def __init__(self, role: str, env: dict[str, str], cwd: Path):
        self.role, self.env, self.cwd = role, env, cwd
        self.proc: subprocess.Popen | None = None

    def start(self) -> Role:
        self.proc = subprocess.Popen([sys.executable, "-m", "service.cli", self.role], env=self.env, cwd=self.cwd,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        return self

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait()


def _poster(client: httpx.Client, stream: str, seed: int, stop: threading.Event, accepted: dict, refused: list):
    rng = np.random.default_rng(seed)
    while not stop.is_set():
        frames = rng.random((5, int(client.headers["x-input-dim"])), dtype=np.float32)
        labels = rng.integers(0, 10, 5).tolist()
        try:
            r = client.post(f"/v1/streams/{stream}/frames", content=encode_frames(frames, labels), headers=BINARY)
        except httpx.TransportError:
            refused.append(1)
            time.sleep(0.05)
            continue
        if r.status_code == 202:
            accepted[stream] += r.json()["accepted"]
        elif r.status_code in (429, 503):
            refused.append(1)
            time.sleep(float(r.headers.get("retry-after", "0.1")))
        else:
            raise RuntimeError(f"unexpected answer {r.status_code}: {r.text}")
        time.sleep(0.01)


def kill_wake_run(redis_url: str, workdir: Path, *, kills: int, streams: int = 3, min_gap_s: float = 0.5,
                  max_gap_s: float = 2.5, seed: int = 0, key_prefix: str = "faults", cwd: Path | None = None,
                  log=print) -> KillReport:
    """Post to ``streams`` streams while SIGKILLing the wake worker ``kills`` times at random moments."""
    cwd = cwd or Path.cwd()
    port = free_port()
    env = {**os.environ, "FFS_REDIS_URL": redis_url, "FFS_PORT": str(port), "FFS_KEY_PREFIX": key_prefix,
           "FFS_CHECKPOINT_DIR": str(workdir), "FFS_WIDTHS": "[32, 32]", "FFS_WAKE_METRICS_PORT": "0",
           "FFS_SLEEP_METRICS_PORT": "0", "FFS_CHECKPOINT_EVERY_S": "0.5", "FFS_DEVICE": "cpu",
           "FFS_LOG_LEVEL": "WARNING", "OMP_NUM_THREADS": "1"}
    rng = random.Random(seed)
    api, wake = Role("api", env, cwd).start(), Role("wake", env, cwd).start()
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10, headers={"x-input-dim": "196"})
    accepted = {f"s{i}": 0 for i in range(streams)}
    refused: list[int] = []
    stop = threading.Event()
    start = time.perf_counter()
    problems: list[str] = []
    try:
        _wait_ready(client, 90)
        posters = [threading.Thread(target=_poster, args=(client, s, i, stop, accepted, refused), daemon=True)
                   for i, s in enumerate(accepted)]
        for t in posters:
            t.start()
        for k in range(kills):
            time.sleep(rng.uniform(min_gap_s, max_gap_s))
            wake.kill()
            log(f"kill {k + 1}/{kills}: wake SIGKILLed after {sum(accepted.values())} frames accepted")
            wake.start()
            _wait_ready(client, 90)
        stop.set()
        for t in posters:
            t.join(30)
        if not _wait(lambda: _applied(client, accepted) == accepted, 120):
            problems.append(f"not caught up: applied {_applied(client, accepted)} vs accepted {accepted}")
        if wake.stop() != 0:
            problems.append(f"wake exited with status {wake.proc.returncode}: {wake.proc.stderr.read()[-1000:]}")
        applied_redis = _applied(client, accepted)
    finally:
        stop.set()
        client.close()
        api.stop()
        if wake.proc.poll() is None:
            wake.stop()
    latest = (workdir / "wake" / "LATEST").read_text()
    checkpointed = json.loads((workdir / "wake" / latest / "progress.json").read_text())["applied"]
    applied_checkpoint = {s: int(checkpointed.get(s, 0)) for s in accepted}
    if applied_redis != accepted:
        problems.append(f"Redis applied counts {applied_redis} != accepted {accepted}")
    if applied_checkpoint != accepted:
        problems.append(f"checkpoint applied counts {applied_checkpoint} != accepted {accepted}")
    return KillReport(kills, accepted, applied_redis, applied_checkpoint, len(refused),
                      time.perf_counter() - start, problems)


def _applied(client: httpx.Client, accepted: dict) -> dict[str, int]:
    out = {}
    for s in accepted:
        r = client.get(f"/v1/streams/{s}")
        out[s] = r.json()["frames_applied"] if r.status_code == 200 else 0
    return out


def _wait(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def _wait_ready(client: httpx.Client, timeout: float) -> None:
    def ready() -> bool:
        try:
            return client.get("/readyz").status_code == 200
        except httpx.TransportError:
            return False

    if not _wait(ready, timeout):
        raise RuntimeError("the system did not become ready")
