"""Redis clients configured from Settings (socket timeout above every blocking read)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

import redis
import redis.asyncio as aioredis

from service.settings import Settings

log = logging.getLogger(__name__)
REDIS_ERRORS = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError)


def _url(settings: Settings) -> str:
    if settings.redis_url is None:
        raise RuntimeError("FFS_REDIS_URL is not set: start the embedded system with `ffstream up`, or set it")
    return settings.redis_url


def sync_client(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(_url(settings), socket_timeout=settings.redis_socket_timeout_s,
                                socket_connect_timeout=settings.redis_socket_timeout_s, health_check_interval=30)


def async_client(settings: Settings) -> aioredis.Redis:
    """The API's client: a pool of at most ``redis_max_connections`` in which a request waits up
    to ``redis_pool_timeout_s`` for a free connection (a burst of requests queues instead of
    failing with "Too many connections")."""
    pool = aioredis.BlockingConnectionPool.from_url(
        _url(settings), max_connections=settings.redis_max_connections, timeout=settings.redis_pool_timeout_s,
        socket_timeout=settings.redis_socket_timeout_s, socket_connect_timeout=2.0, health_check_interval=30)
    return aioredis.Redis.from_pool(pool)  # closing the client closes its pool


@dataclass
class FrameEntry:
    """One request's frames as one Redis Stream entry (the frame entry format, written by the API
    and read by the wake worker): ``frames`` (n, D) float32, or uint8 as sent (scaled by 1/255
    when read: a quarter of the bytes through Redis), ``labels`` and ``seqs`` (n,) ints."""

    stream: str
    frames: np.ndarray
    labels: np.ndarray
    seqs: np.ndarray
    t: float  # Unix time of the 202
    fast: bool = False  # every labeled frame also learned in one step (ffcore.fast.correct): learn=fast

    def fields(self) -> dict:
        raw = self.frames.dtype == np.uint8
        fields = {"stream": self.stream, "n": len(self.frames), "dtype": "u1" if raw else "f4",
                  "data": (self.frames if raw else self.frames.astype("<f4")).tobytes(),
                  "labels": self.labels.astype("<i4").tobytes(), "seqs": self.seqs.astype("<i8").tobytes(), "t": self.t}
        return {**fields, "fast": 1} if self.fast else fields

    @classmethod
    def from_fields(cls, fields: dict, dim: int) -> FrameEntry:
        """The entry with float32 frames (uint8 ones scaled to [0, 1])."""
        n = int(fields[b"n"])
        if fields.get(b"dtype") == b"u1":
            frames = np.frombuffer(fields[b"data"], np.uint8, n * dim).reshape(n, dim).astype(np.float32) / 255.0
        else:
            frames = np.frombuffer(fields[b"data"], "<f4", n * dim).reshape(n, dim)
        return cls(fields[b"stream"].decode(), frames, np.frombuffer(fields[b"labels"], "<i4", n).astype(np.int64),
                   np.frombuffer(fields[b"seqs"], "<i8", n), float(fields[b"t"]), fields.get(b"fast") == b"1")


def enqueue_frames(pipe, keys, stream_id: str, frames, labels, seqs, now: float, fast: bool = False) -> None:
    """Queue one request's validated frames on ``pipe`` (a transaction) as ONE entry of the wake
    worker's stream (its id comes back first in the pipe's results); the stream's and the model's
    counters move with them. The sleep worker gets its frames from the wake worker's dreams."""
    pipe.xadd(keys.frames, FrameEntry(stream_id, np.asarray(frames), np.asarray(labels), np.asarray(seqs), now,
                                      fast).fields())
    pipe.hincrby(keys.stream(stream_id), "received", len(frames))
    pipe.hincrby(keys.model, "frames_received", len(frames))


def queue_lag(received, applied, duplicate) -> int:
    """Frames accepted but not yet applied (nor skipped as duplicates), from the counters' raw
    Redis values (bytes, str, int or None): the one lag formula of the API, status and metrics."""
    return max(int(received or 0) - int(applied or 0) - int(duplicate or 0), 0)


def ring_sleep(pipe, keys) -> None:
    """Queue on ``pipe`` the ring of the sleep worker's doorbell (a dream, a pause, a resume or a
    trigger to look at): a list that holds at most one entry, so a ring is never lost while the
    worker is busy and never piles up. The worker waits on it with BLPOP instead of polling."""
    pipe.lpush(keys.sleep_doorbell, 1)
    pipe.ltrim(keys.sleep_doorbell, 0, 0)


def entry_id_order(entry_id: bytes | str) -> tuple[int, int]:
    """A Redis Stream entry id as a sortable (milliseconds, sequence) pair."""
    ms, _, seq = (entry_id.decode() if isinstance(entry_id, bytes) else entry_id).partition("-")
    return int(ms), int(seq or 0)


class RedisOutage:
    """A worker's patience while Redis is unreachable (restarting, loading its AOF): it logs once,
    waits with growing pauses (up to 5 s) and says when Redis is back."""

    def __init__(self, role: str):
        self.role = role
        self.since: float | None = None
        self.pause = 0.2

    def wait(self, error: Exception) -> None:
        if self.since is None:
            self.since = time.monotonic()
            log.warning("%s: redis unreachable (%s); retrying", self.role, error)
        time.sleep(self.pause)
        self.pause = min(self.pause * 2, 5.0)

    def over(self) -> None:
        if self.since is not None:
            log.warning("%s: redis back after %.1f s", self.role, time.monotonic() - self.since)
            self.since, self.pause = None, 0.2
