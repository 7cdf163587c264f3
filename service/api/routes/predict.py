"""Predictions from the latest weight snapshot; never waits for training."""

from __future__ import annotations

import numpy as np
import torch
from fastapi import APIRouter, Depends, HTTPException, Request, Security
from starlette.concurrency import run_in_threadpool

from ffcore.checkpoint import from_bytes
from ffcore.state import RecurrentState
from service.api.bodies import JSON_TYPE, media_type, parse_json, read_body
from service.api.deps import KeysDep, RedisDep, SettingsDep
from service.api.schemas import PredictIn, Prediction, PredictOut, errors
from service.api.security import API_KEY_HEADER, require_key_for_predict

router = APIRouter(prefix="/v1", tags=["predict"])
# Work small enough to do on the event loop: a hop to the thread pool is one more wait behind
# every ingest request queued on the loop (benchmarks/throughput.py, predict p99 under full
# ingest), while a single frame's softmax answer or a small snapshot's load takes about a
# millisecond. Larger work goes to the pool, so the loop never stalls on it.
INLINE_FRAMES = 16  # frames of a softmax prediction (the goodness method always goes to the pool)
INLINE_SNAPSHOT_BYTES = 8 * 2**20


async def latest_model(request: Request, redis, keys):
    """The newest snapshot, loaded once per version and cached on the app."""
    version = await redis.get(keys.snapshot_latest)
    if version is None:
        raise HTTPException(503, "no model snapshot yet: is the wake worker running?", headers={"Retry-After": "1"})
    version = int(version)
    cached = request.app.state.snapshot
    if cached is None or cached[0] != version:
        blob = await redis.get(keys.snapshot(version))
        if blob is None:
            raise HTTPException(503, "snapshot changed while loading; retry", headers={"Retry-After": "1"})
        model = from_bytes(blob) if len(blob) <= INLINE_SNAPSHOT_BYTES else await run_in_threadpool(from_bytes, blob)
        cached = (version, model)
        request.app.state.snapshot = cached
    return cached


def _predict(model, frames: np.ndarray, state: RecurrentState | None, method: str) -> list[Prediction]:
    x = torch.from_numpy(frames)
    if state is not None:
        state = RecurrentState([y.repeat(len(x), 1) for y in state.activities])
    with torch.no_grad():
        if state is None:  # the frame alone: its bottom-up representation, as the wake worker trains
            probs = model.predict_fast(x)
        else:  # in the stream's context: one neutral step from the stream's state
            neutral, _ = model.step(x, None, state)
            probs = torch.softmax(model.readout_logits(neutral), dim=1)
        if method == "softmax":
            return [Prediction(label=int(p.argmax()), probabilities=p.tolist()) for p in probs]
        goodness = model.label_goodness(x, state)
    return [Prediction(label=int(g.argmax()), probabilities=p.tolist(), goodness=g.tolist())
            for p, g in zip(probs, goodness)]


def predict_body_limit(settings) -> int:
    """Bytes a predict body may have: its frame limit at a generous 32 characters per value."""
    return min(settings.max_body_bytes, 4096 + settings.max_predict_frames * settings.input_dim * 32)


@router.post("/predict", response_model=PredictOut, responses=errors(400, 401, 403, 404, 413, 415, 422, 503),
             dependencies=[Depends(require_key_for_predict), Security(API_KEY_HEADER)],
             openapi_extra={"requestBody": {"required": True, "content": {
                 JSON_TYPE: {"schema": PredictIn.model_json_schema()}}}})
async def predict(request: Request, settings: SettingsDep, redis: RedisDep, keys: KeysDep) -> PredictOut:
    """Labels from the softmax readout (default, fast) or from the paper's goodness classifier
    (``method: goodness``: each label clamped on top, goodness averaged over iterations 3-5); the
    readout's probabilities come with either, the goodness per label with the second."""
    media_type(request.headers.get("content-type"), (JSON_TYPE,))
    body = parse_json(PredictIn, await read_body(request, predict_body_limit(settings)))
    if len(body.frames) > settings.max_predict_frames:
        raise HTTPException(413, f"{len(body.frames)} frames; predict takes at most {settings.max_predict_frames}")
    bad = [i for i, f in enumerate(body.frames) if len(f) != settings.input_dim]
    if bad:
        raise HTTPException(422, f"frame {bad[0]} has {len(body.frames[bad[0]])} values; "
                                 f"the model takes exactly {settings.input_dim}")
    frames = np.asarray(body.frames, dtype=np.float64)
    if not np.isfinite(frames).all() or np.abs(frames).max() > 3.4e38:
        raise HTTPException(422, "frames must hold finite float32 values")
    version, model = await latest_model(request, redis, keys)
    state = None
    if body.stream_id is not None:
        blob = await redis.get(keys.stream_state(body.stream_id))
        if blob is None:
            raise HTTPException(404, f"stream {body.stream_id!r} has no recurrent state yet")
        state = RecurrentState.from_bytes(blob)
    args = (model, frames.astype(np.float32), state, body.method)
    small = body.method == "softmax" and len(frames) <= INLINE_FRAMES
    predictions = _predict(*args) if small else await run_in_threadpool(_predict, *args)
    request.app.state.metrics.predictions.inc(len(predictions))
    return PredictOut(model_version=version, method=body.method, predictions=predictions)
