"""Per-stream progress."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Path

from service.api.deps import KeysDep, RedisDep
from service.api.schemas import STREAM_ID_PATTERN, StreamOut, errors
from service.redis_io import queue_lag

router = APIRouter(prefix="/v1", tags=["streams"])


@router.get("/streams/{stream_id}", response_model=StreamOut, responses=errors(404, 422, 503))
async def get_stream(redis: RedisDep, keys: KeysDep, stream_id: str = Path(pattern=STREAM_ID_PATTERN)) -> StreamOut:
    """Frames received and applied, the lag between them, and the rolling prequential accuracy
    (of predictions made before learning each labeled frame)."""
    h = await redis.hgetall(keys.stream(stream_id))
    if not h:
        raise HTTPException(404, f"no stream {stream_id!r}: post frames to create it")
    received, applied, duplicates = (int(h.get(k, 0)) for k in (b"received", b"applied", b"duplicates"))
    accuracy = float(h[b"accuracy"]) if b"accuracy" in h else None
    return StreamOut(stream_id=stream_id, frames_received=received, frames_applied=applied,
                     duplicates=duplicates, lag=queue_lag(received, applied, duplicates), rolling_accuracy=accuracy,
                     last_seq=int(h[b"seq_max"]) if b"seq_max" in h else None)
