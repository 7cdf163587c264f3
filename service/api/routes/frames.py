"""Ingest: validate frames, append them to the Redis Stream, answer 202 once they are stored."""

from __future__ import annotations

import time
from typing import Literal

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Security
from fastapi.responses import JSONResponse

from service.api.bodies import BINARY_TYPE, JSON_TYPE, Rejected, media_type, parse_json, read_body
from service.api.deps import KeysDep, RedisDep, SettingsDep
from service.api.schemas import STREAM_ID_PATTERN, FramesAccepted, FramesIn, errors
from service.api.security import API_KEY_HEADER, check_key
from service.codec import FrameDecodeError, decode_frames
from service.redis_io import enqueue_frames, queue_lag
from service.settings import Settings

router = APIRouter(prefix="/v1", tags=["frames"])
def parse_frames(body: bytes, content_type: str | None, settings: Settings) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode and validate a JSON or binary body into (frames (n, D) float32, or uint8 as sent,
    labels (n,), seqs (n,))."""
    if media_type(content_type, (JSON_TYPE, BINARY_TYPE)) == BINARY_TYPE:
        try:
            frames, labels, seqs = decode_frames(body, keep_uint8=True)
        except FrameDecodeError as e:
            raise Rejected(400, "bad_body", f"binary body: {e}") from e
    else:
        parsed = parse_json(FramesIn, body)
        n = len(parsed.frames)
        if n > settings.max_frames_per_request:
            raise Rejected(413, "too_many_frames", f"{n} frames in one request; the limit is {settings.max_frames_per_request}",
                          frames=n)
        bad = [i for i, f in enumerate(parsed.frames) if len(f.data) != settings.input_dim]
        if bad:
            i = bad[0]
            raise Rejected(422, "bad_shape", f"frame {i} has {len(parsed.frames[i].data)} values; "
                                     f"the model takes exactly {settings.input_dim}", frames=n)
        frames = np.asarray([f.data for f in parsed.frames], dtype=np.float64)
        labels = np.asarray([-1 if f.label is None else f.label for f in parsed.frames], dtype=np.int64)
        seqs = np.asarray([-1 if f.seq is None else f.seq for f in parsed.frames], dtype=np.int64)
    n = len(frames)
    if n > settings.max_frames_per_request:
        raise Rejected(413, "too_many_frames", f"{n} frames in one request; the limit is {settings.max_frames_per_request}",
                          frames=n)
    if frames.shape[1] != settings.input_dim:
        raise Rejected(422, "bad_shape", f"frames have {frames.shape[1]} values; the model takes exactly {settings.input_dim}")
    if frames.dtype != np.uint8:  # uint8 frames are finite and travel as they came (a quarter of the bytes)
        finite = np.isfinite(frames).all(axis=1)
        if not finite.all():
            raise Rejected(422, "non_finite", f"frame {int(np.argmin(finite))} has non-finite values (NaN or infinity)",
                           frames=n)
        if np.abs(frames).max() > 3.4e38:
            raise Rejected(422, "non_finite", "frame values must fit in float32", frames=n)
        frames = frames.astype(np.float32)
    bad = np.nonzero((labels < -1) | (labels >= settings.num_classes))[0]
    if len(bad):
        raise Rejected(422, "bad_label", f"frame {int(bad[0])} has label {int(labels[bad[0]])}; "
                                 f"labels are in [0, {settings.num_classes - 1}] or null", frames=n)
    return frames, labels, seqs


async def authorize(request: Request) -> None:
    """The key check, as a dependency so it runs before anything about the request is validated."""
    try:
        check_key(request)
    except HTTPException as e:
        reason = "unauthorized" if e.status_code == 401 else "forbidden"
        request.app.state.metrics.rejected.labels(reason).inc()
        raise Rejected(e.status_code, reason, e.detail, headers=e.headers) from None


# Atomically: forget streams idle longer than the wake worker keeps them, then admit the stream
# if it is active or there is room, marking it seen now. Returns -1 when admitted, else the count.
_CLAIM_STREAM = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[2])
if redis.call('ZSCORE', KEYS[1], ARGV[4]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[1], ARGV[1], ARGV[4])
  return -1
end
return redis.call('ZCARD', KEYS[1])
"""


async def admit(redis, keys, settings: Settings, stream_id: str, rate_key: str, now: float) -> tuple[int, int]:
    """Returns (frames this stream sent in the current second, its highest seq so far or -1).
    Refuses before reading the body when checkpoints fail and too many frames wait (503), the
    queue is too far behind (503), the stream would be one active stream too many (429), or the
    stream has used its frames for this second (429). A stream counts as active until it has sent
    nothing for ``stream_idle_s`` (the wake worker's eviction rule); then its id is free again. Concurrent requests of one stream can pass the rate limit together by up to
    one request each; the stream count is exact (claimed atomically)."""
    pipe = redis.pipeline(transaction=False)  # one round trip; a refused request still marks its stream seen
    pipe.hmget(keys.model, ["frames_received", "frames_applied", "frames_duplicate", "checkpoint_error",
                            "frames_unacked"])
    pipe.get(rate_key)
    pipe.hget(keys.stream(stream_id), "seq_max")
    pipe.eval(_CLAIM_STREAM, 1, keys.streams, repr(now), repr(now - settings.stream_idle_s),
              settings.max_streams, stream_id)
    (received, applied, duplicate, checkpoint_error, unacked), used, seq_max, count = await pipe.execute()
    if checkpoint_error is not None and int(unacked or 0) >= settings.max_unacked_frames:
        raise Rejected(503, "checkpoint_failing", f"{checkpoint_error.decode(errors='replace')}; "
                       f"{int(unacked)} frames wait for a checkpoint (limit {settings.max_unacked_frames}): "
                       "retry later", retry_after=10)
    lag = queue_lag(received, applied, duplicate)
    if lag >= settings.max_queue_lag_frames:
        raise Rejected(503, "backpressure", f"the learner is {lag} frames behind (limit "
                       f"{settings.max_queue_lag_frames}): retry later", retry_after=2)
    used = int(used or 0)
    if used >= settings.max_stream_fps:
        raise Rejected(429, "rate_limited", f"stream {stream_id!r} sent {used} frames this second; the limit is "
                       f"{settings.max_stream_fps:g} frames/s", retry_after=1)
    if count >= 0:
        raise Rejected(429, "too_many_streams", f"the service already has {count} active streams, its limit "
                       f"(a stream stops counting after {settings.stream_idle_s:g} s without frames)",
                       retry_after=max(1, int(settings.stream_idle_s / 10)))
    return used, int(seq_max) if seq_max is not None else -1


def check_seqs(seqs: np.ndarray, seq_max: int, settings: Settings) -> None:
    """A seq may run ahead of the stream's highest accepted one by at most ``max_seq_jump``: one
    far-future seq would make every later frame of the stream a "duplicate", never learned."""
    if not (seqs >= 0).any():
        return
    limit = min(seq_max + settings.max_seq_jump, 2**63 - 1)
    bad = np.nonzero(seqs > limit)[0]
    if len(bad):
        i = int(bad[0])
        raise Rejected(422, "bad_seq", f"frame {i} has seq {int(seqs[i])}, more than FFS_MAX_SEQ_JUMP="
                       f"{settings.max_seq_jump} ahead of this stream's highest seq so far ({seq_max}; -1: none)",
                       frames=len(seqs))


# The stream's highest accepted seq, raised atomically (concurrent requests of one stream).
_RAISE_SEQ_MAX = """
local current = tonumber(redis.call('HGET', KEYS[1], 'seq_max') or '-1')
if tonumber(ARGV[1]) > current then redis.call('HSET', KEYS[1], 'seq_max', ARGV[1]) end
return 0
"""


@router.post("/streams/{stream_id}/frames", dependencies=[Depends(authorize), Security(API_KEY_HEADER)],
             status_code=202,
             response_model=FramesAccepted, responses=errors(400, 401, 403, 413, 415, 422, 429, 503),
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/json": {"schema": FramesIn.model_json_schema()},
                 BINARY_TYPE: {"schema": {"type": "string", "format": "binary"}}}}})
async def post_frames(
    request: Request,
    settings: SettingsDep,
    redis: RedisDep,
    keys: KeysDep,
    stream_id: str = Path(pattern=STREAM_ID_PATTERN, description="letters, digits, _ . : - (1-128)"),
    learn: Literal["online", "fast"] = Query(
        "online", description="online: every frame learned as the stream goes (the default); fast: besides, "
        "every labeled frame learned at once (paper section 6: fast steps of equation 4), so that predictions for it give "
        "its label from the next snapshot on: for a user's correction of a wrong answer, not for every frame"),
) -> JSONResponse:
    """Append frames (with optional labels) to a stream. 202 means they are stored in Redis."""
    metrics = request.app.state.metrics
    now = time.time()
    rate_key = keys.stream_rate(stream_id, int(now))
    try:
        used, seq_max = await admit(redis, keys, settings, stream_id, rate_key, now)
        body = await read_body(request, settings.max_body_bytes)
        metrics.body_bytes.observe(len(body))
        frames, labels, seqs = parse_frames(body, request.headers.get("content-type", ""), settings)
        check_seqs(seqs, seq_max, settings)
        if learn == "fast" and not (labels >= 0).any():
            raise Rejected(422, "fast_needs_labels", "learn=fast learns labeled frames at once: "
                           "these frames have no labels", frames=len(frames))
    except Rejected as e:
        metrics.rejected.labels(e.reason).inc()
        metrics.frames_received.inc(e.frames)
        raise
    metrics.frames_received.inc(len(frames))
    if used + len(frames) > settings.max_stream_fps:
        metrics.rejected.labels("rate_limited").inc()
        raise Rejected(429, "rate_limited", f"{len(frames)} more frames would pass this stream's limit of "
                       f"{settings.max_stream_fps:g} frames/s", frames=len(frames), retry_after=1)
    pipe = redis.pipeline(transaction=True)
    enqueue_frames(pipe, keys, stream_id, frames, labels, seqs, now, fast=learn == "fast")  # (``admit`` marked it active)
    if (seqs >= 0).any():
        pipe.eval(_RAISE_SEQ_MAX, 1, keys.stream(stream_id), int(seqs.max()))
    pipe.incrby(rate_key, len(frames))
    pipe.expire(rate_key, 2)
    results = await pipe.execute()
    entry = results[0].decode() if isinstance(results[0], bytes) else str(results[0])
    metrics.frames_accepted.inc(len(frames))
    # The response as it is (a Response is not validated again against ``response_model``,
    # which documents it): this route runs hundreds of times a second.
    return JSONResponse({"accepted": len(frames), "entry": entry}, status_code=202)
