"""Redis clients configured from Settings (socket timeout above every blocking read)."""

from __future__ import annotations

import logging
import time

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
    return aioredis.Redis.from_url(_url(settings), socket_timeout=settings.redis_socket_timeout_s,
                                   socket_connect_timeout=2.0, health_check_interval=30)


def enqueue_frames(pipe, keys, stream_id: str, frames, labels, seqs, now: float) -> None:
    """Queue validated frames on ``pipe`` (a transaction): each goes to the wake worker's stream
    (the sleep worker gets its frames from the wake worker's dreams, not a second copy); the
    stream's and the model's counters move with them. Entry ids come back in the pipe's results,
    one per frame in order."""
    for frame, label, seq in zip(frames, labels, seqs):
        fields = {"stream": stream_id, "data": frame.astype("<f4").tobytes(), "label": int(label),
                  "seq": int(seq), "t": now}
        pipe.xadd(keys.frames, fields)
    pipe.hincrby(keys.stream(stream_id), "received", len(frames))
    pipe.hincrby(keys.model, "frames_received", len(frames))
    pipe.hincrby(keys.model, "labeled_received", int((labels >= 0).sum()))


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
