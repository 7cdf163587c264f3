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
from service.probe import wait_ready, wait_until
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
    """Posts 5-frame chunks with increasing seqs; a chunk that is not answered 202 (a 503, a
    refused connection) is sent again with the same seqs until it is, as a careful client does,
    so a chunk stored despite a failed answer is learned once."""
    rng = np.random.default_rng(seed)
    seq = 0
    while not stop.is_set():
        frames = rng.random((5, int(client.headers["x-input-dim"])), dtype=np.float32)
        labels = rng.integers(0, 10, 5).tolist()
        body = encode_frames(frames, labels, list(range(seq, seq + 5)))
        while True:
            try:
                r = client.post(f"/v1/streams/{stream}/frames", content=body, headers=BINARY)
            except httpx.TransportError:
                refused.append(1)
                time.sleep(0.05)
                continue
            if r.status_code == 202:
                accepted[stream] += r.json()["accepted"]
                break
            if r.status_code in (429, 503):
                refused.append(1)
                time.sleep(min(float(r.headers.get("retry-after", "0.1")), 0.2))
                continue
            raise RuntimeError(f"unexpected answer {r.status_code}: {r.text}")
        seq += 5
        time.sleep(0.01)


class Posters:
    """One posting thread per stream (see ``_poster``), counting accepted frames per stream."""

    def __init__(self, client: httpx.Client, streams: list[str]):
        self.accepted = dict.fromkeys(streams, 0)
        self.refused: list[int] = []
        self.stop_event = threading.Event()
        self.threads = [threading.Thread(target=_poster, args=(client, s, i, self.stop_event, self.accepted,
                                                                 self.refused), daemon=True)
                        for i, s in enumerate(streams)]

    def start(self) -> "Posters":
        for t in self.threads:
            t.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        for t in self.threads:
            if t.ident is not None:  # started
                t.join(30)


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
    posters = Posters(client, [f"s{i}" for i in range(streams)])
    accepted, refused = posters.accepted, posters.refused
    start = time.perf_counter()
    problems: list[str] = []
    try:
        _wait_ready(client, 90)
        posters.start()
        for k in range(kills):
            time.sleep(rng.uniform(min_gap_s, max_gap_s))
            wake.kill()
            log(f"kill {k + 1}/{kills}: wake SIGKILLed after {sum(accepted.values())} frames accepted")
            wake.start()
            _wait_ready(client, 90)
        posters.stop()
        if not wait_until(lambda: _applied(client, accepted) == accepted, 120):
            problems.append(f"not caught up: applied {_applied(client, accepted)} vs accepted {accepted}")
        if wake.stop() != 0:
            problems.append(f"wake exited with status {wake.proc.returncode}: {wake.proc.stderr.read()[-1000:]}")
        applied_redis = _applied(client, accepted)
    finally:
        posters.stop()
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


@dataclass
class OutageReport:
    accepted: dict[str, int]
    applied_redis: dict[str, int]
    duplicates: dict[str, int]  # resent frames (same seq) that had been stored despite a failed answer
    down_answers: list[tuple[int, float]]  # (status, seconds) of requests made while Redis was down
    refused: int
    sleep_cycles_after: int  # sleep cycles completed after the outage
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def redis_restart_run(workdir: Path, *, restarts: int = 1, streams: int = 3, down_s: float = 2.0,
                      cwd: Path | None = None, log=print) -> OutageReport:
    """Post to ``streams`` streams through api, wake and sleep while the Redis under them (AOF,
    its own data folder) is stopped and started again ``restarts`` times."""
    from service.embedded import EmbeddedRedis

    cwd = cwd or Path.cwd()
    server = EmbeddedRedis(workdir / "redis").start()
    port = free_port()
    env = {**os.environ, "FFS_REDIS_URL": server.url, "FFS_PORT": str(port), "FFS_CHECKPOINT_DIR": str(workdir),
           "FFS_WIDTHS": "[32, 32]", "FFS_WAKE_METRICS_PORT": "0", "FFS_SLEEP_METRICS_PORT": "0",
           "FFS_CHECKPOINT_EVERY_S": "0.5", "FFS_DEVICE": "cpu",
           "FFS_LOG_LEVEL": "WARNING", "OMP_NUM_THREADS": "1"}
    roles = [Role(r, env, cwd).start() for r in ("api", "wake", "sleep")]
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10, headers={"x-input-dim": "196"})
    posters = Posters(client, [f"r{i}" for i in range(streams)])
    accepted, refused = posters.accepted, posters.refused
    down_answers: list[tuple[int, float]] = []
    problems: list[str] = []
    try:
        _wait_ready(client, 90)
        posters.start()
        for k in range(restarts):
            time.sleep(2.0)
            server.stop()  # SIGTERM: Redis writes its AOF out and exits
            log(f"restart {k + 1}/{restarts}: redis stopped after {sum(accepted.values())} frames accepted")
            deadline = time.monotonic() + down_s
            while time.monotonic() < deadline:
                start = time.perf_counter()
                r = client.get("/v1/model")
                down_answers.append((r.status_code, time.perf_counter() - start))
                time.sleep(0.2)
            server.start()
        time.sleep(2.0)
        cycles_before = client.get("/v1/model").json()["sleep"]["cycles"]
        posters.stop()
        if not wait_until(lambda: _applied(client, accepted) == accepted, 120):
            problems.append(f"not caught up: applied {_applied(client, accepted)} vs accepted {accepted}")
        # A dream comes with each deferred positive step; once the posters stop, the last frames
        # may go into the weights with a checkpoint instead (no dream). If none came, ask for a
        # cycle: either way the sleep worker must answer after the outage.
        if not wait_until(lambda: client.get("/v1/model").json()["sleep"]["cycles"] > cycles_before, 10):
            client.post("/v1/sleep/trigger")
            wait_until(lambda: client.get("/v1/model").json()["sleep"]["cycles"] > cycles_before, 30)
        sleep_cycles_after = client.get("/v1/model").json()["sleep"]["cycles"] - cycles_before
        applied_redis = _applied(client, accepted)
        duplicates = {st: client.get(f"/v1/streams/{st}").json()["duplicates"] for st in accepted}
        dead = [r.role for r in roles if r.proc.poll() is not None]
        if dead:
            problems.append(f"processes exited during the outage: {dead}")
    finally:
        posters.stop()
        client.close()
        for role in reversed(roles):
            role.stop()
        server.stop()
    if applied_redis != accepted:
        problems.append(f"applied {applied_redis} != accepted {accepted}")
    if any(status != 503 or seconds > 2.0 for status, seconds in down_answers):
        problems.append(f"while Redis was down the API answered {sorted(set(down_answers))[:5]} (want 503 within 2 s)")
    if not sleep_cycles_after:
        problems.append("no sleep cycle after the outage")
    return OutageReport(accepted, applied_redis, duplicates, down_answers, len(refused), sleep_cycles_after, problems)


def sleep_kill_run(workdir: Path, redis_url: str, *, cwd: Path | None = None) -> dict:
    """Kill the sleep worker (SIGKILL): wake keeps applying, predict keeps answering, the model
    status shows sleep gone; a restarted sleep worker resumes its cycles."""
    cwd = cwd or Path.cwd()
    port, wake_metrics = free_port(), free_port()
    env = {**os.environ, "FFS_REDIS_URL": redis_url, "FFS_PORT": str(port), "FFS_CHECKPOINT_DIR": str(workdir),
           "FFS_KEY_PREFIX": "faults-sleep", "FFS_WIDTHS": "[32, 32]", "FFS_WAKE_METRICS_PORT": str(wake_metrics),
           "FFS_SLEEP_METRICS_PORT": "0", "FFS_HEARTBEAT_TTL_S": "1",
           "FFS_DEVICE": "cpu", "FFS_LOG_LEVEL": "WARNING", "OMP_NUM_THREADS": "1"}
    api, wake, sleep = (Role(r, env, cwd).start() for r in ("api", "wake", "sleep"))
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
    rng = np.random.default_rng(0)

    def post(n: int) -> None:
        for _ in range(n):
            body = encode_frames(rng.random((5, 196), dtype=np.float32), rng.integers(0, 10, 5).tolist())
            assert client.post("/v1/streams/k/frames", content=body, headers=BINARY).status_code == 202

    def sleep_up_metric() -> float:
        text = httpx.get(f"http://127.0.0.1:{wake_metrics}/metrics", timeout=5).text
        return next(float(line.split()[-1]) for line in text.splitlines() if line.startswith("ffstream_sleep_worker_up "))

    out = {}
    try:
        _wait_ready(client, 90)
        post(20)
        out["cycles_before_kill"] = wait_until(lambda: client.get("/v1/model").json()["sleep"]["cycles"] > 0, 30) and \
            client.get("/v1/model").json()["sleep"]["cycles"]
        sleep.kill()
        out["status_shows_sleep_gone"] = wait_until(lambda: not client.get("/v1/model").json()["sleep"]["alive"], 10)
        out["metric_shows_sleep_gone"] = wait_until(lambda: sleep_up_metric() == 0, 10)
        applied_before = client.get("/v1/streams/k").json()["frames_applied"]
        post(20)
        out["wake_kept_applying"] = wait_until(lambda: client.get("/v1/streams/k").json()["frames_applied"]
                                          >= applied_before + 100, 30)
        out["predict_kept_answering"] = client.post("/v1/predict", json={"frames": [[0.5] * 196]}).status_code == 200
        cycles = client.get("/v1/model").json()["sleep"]["cycles"]
        sleep.start()
        out["status_shows_sleep_back"] = wait_until(lambda: client.get("/v1/model").json()["sleep"]["alive"], 60)
        post(20)  # frames from before the restart get no negatives (a restart does not replay the past)
        out["restarted_sleep_resumed"] = wait_until(lambda: client.get("/v1/model").json()["sleep"]["cycles"] > cycles, 60)
    finally:
        client.close()
        for role in (sleep, api, wake):
            role.stop()
    return out


def _applied(client: httpx.Client, accepted: dict) -> dict[str, int]:
    out = {}
    for s in accepted:
        r = client.get(f"/v1/streams/{s}")
        out[s] = r.json()["frames_applied"] if r.status_code == 200 else 0
    return out


def _wait_ready(client: httpx.Client, timeout: float) -> None:
    if not wait_ready(client, timeout):
        raise RuntimeError("the system did not become ready")
