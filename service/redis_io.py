"""Redis clients configured from Settings (socket timeout above every blocking read)."""

from __future__ import annotations

import json
import logging
import struct
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
    """Queue on ``pipe`` the ring of the sleep worker (a pause, a resume or a trigger to look at):
    an empty message on its channel. A ring published while it is not listening (restarting) is
    lost, and costs nothing: it reads the pause and trigger state when it starts and every
    ``service.sleep.DOORBELL_WAIT_S``."""
    pipe.publish(keys.dreams, b"")


# A message on the wake/sleep channels: a little-endian uint32 length, a JSON header with the
# message's fields and the sizes of its blobs, then the blobs (safetensors bytes; never pickle).
_LENGTH = struct.Struct("<I")
_MAX_HEADER = 4096


def pack_message(header: dict, *blobs: bytes) -> bytes:
    head = json.dumps({**header, "sizes": [len(b) for b in blobs]}).encode()
    return b"".join((_LENGTH.pack(len(head)), head, *blobs))


def unpack_message(data: bytes, fields: tuple[str, ...], blobs: int) -> tuple[dict, list[bytes]]:
    """The header (with integer ``fields``) and the ``blobs`` of a :func:`pack_message`; ValueError
    says what is wrong with a message that is not one."""
    if not isinstance(data, bytes) or len(data) < _LENGTH.size:
        raise ValueError("not a message: too short")
    (n,) = _LENGTH.unpack_from(data)
    if n > _MAX_HEADER or _LENGTH.size + n > len(data):
        raise ValueError(f"not a message: header of {n} bytes")
    try:
        header = json.loads(data[_LENGTH.size : _LENGTH.size + n])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"not a message: header is not JSON ({e})") from None
    sizes = header.get("sizes") if isinstance(header, dict) else None
    if not (isinstance(sizes, list) and len(sizes) == blobs and all(isinstance(k, int) and k >= 0 for k in sizes)):
        raise ValueError(f"not a message: expected sizes of {blobs} blobs, got {sizes!r}")
    if _LENGTH.size + n + sum(sizes) != len(data):
        raise ValueError(f"message of {len(data)} bytes does not match its header ({n} + {sum(sizes)} bytes)")
    for field in fields:
        if not isinstance(header.get(field), int) or isinstance(header.get(field), bool):
            raise ValueError(f"message field {field!r} must be a whole number, got {header.get(field)!r}")
    out, at = [], _LENGTH.size + n
    for k in sizes:
        out.append(data[at : at + k])
        at += k
    return header, out


@dataclass
class Dream:
    """What the wake worker asks of the sleep worker for one positive step (on ``keys.dreams``):
    the replay sample (``ffcore.online.ReplaySample`` bytes) and the weights the step makes
    (``ffcore.checkpoint.to_bytes``), for the ``frames`` frames the step covers."""

    id: int
    version: int  # of the last published snapshot, for the record
    frames: int
    sample: bytes
    weights: bytes

    def to_bytes(self) -> bytes:
        return pack_message({"id": self.id, "version": self.version, "frames": self.frames}, self.sample, self.weights)

    @classmethod
    def from_bytes(cls, data: bytes) -> Dream:
        header, (sample, weights) = unpack_message(data, ("id", "version", "frames"), 2)
        return cls(header["id"], header["version"], header["frames"], sample, weights)


@dataclass
class NegativeUpdate:
    """The sleep worker's answer to dream ``dream`` (on ``keys.negatives``): the negative phase's
    gradient (``ffcore.online.FFGradient`` bytes) over ``n`` negative frames."""

    dream: int
    version: int
    n: int
    gradient: bytes

    def to_bytes(self) -> bytes:
        return pack_message({"dream": self.dream, "version": self.version, "n": self.n}, self.gradient)

    @classmethod
    def from_bytes(cls, data: bytes) -> NegativeUpdate:
        header, (gradient,) = unpack_message(data, ("dream", "version", "n"), 1)
        return cls(header["dream"], header["version"], header["n"], gradient)


def _as_is(response):
    return response


def subscribe(client: redis.Redis, channel: str):
    """A pub/sub subscription of ``client`` to ``channel``, whose messages are handed on as they
    are: redis-py's default push handler builds a debug line of each one (``str()`` of a
    megabyte dream, logged or not), which took a third of the sleep worker's time."""
    subscription = client.pubsub(push_handler_func=_as_is)
    subscription.subscribe(channel)
    return subscription


def receive(subscription, timeout: float) -> list[bytes]:
    """The data of the messages waiting on a pub/sub ``subscription``, waiting up to ``timeout``
    seconds for the first (0: only those already in this process's socket, no round trip).

    A message that has begun to arrive is read whole: redis-py's ``get_message(timeout=t)`` reads
    the rest of a message with that same timeout, so a dream of a megabyte caught half-way raised
    a TimeoutError with ``t = 0``, and the retry dropped the connection and the message with it."""
    out, deadline = [], time.monotonic() + timeout
    while True:
        wait = 0.0 if out else max(deadline - time.monotonic(), 0.0)
        try:
            ready = subscription.connection.can_read(timeout=wait)
        except REDIS_ERRORS:
            # A closed socket stays in the connection until it is dropped: the next call
            # reconnects, and the subscription's connect callback subscribes again.
            subscription.connection.disconnect()
            raise
        if not ready:
            return out
        message = subscription.get_message(timeout=None)  # data is there: blocks only for the rest of it
        if message is not None and message["type"] == "message":
            out.append(message["data"])


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
