"""The model's status, sleep controls and checkpoints."""

from __future__ import annotations

import json

from fastapi import APIRouter, Depends, Security

from service.api.deps import KeysDep, RedisDep
from service.api.schemas import Ack, ModelOut, SleepStatus, errors
from service.api.security import API_KEY_HEADER, require_key
from service.redis_io import queue_lag, ring_sleep

read_router = APIRouter(prefix="/v1", tags=["model"])  # what the predict role serves too
router = APIRouter(prefix="/v1", tags=["model"])
WRITE = [Depends(require_key), Security(API_KEY_HEADER)]
WRITE_ERRORS = errors(401, 403, 503)


@read_router.get("/model", response_model=ModelOut, responses=errors(503))
async def get_model(redis: RedisDep, keys: KeysDep) -> ModelOut:
    m, s = await redis.hgetall(keys.model), await redis.hgetall(keys.sleep)
    version = await redis.get(keys.snapshot_latest)
    alive = bool(await redis.exists(keys.heartbeat("sleep")))
    sleep = SleepStatus(alive=alive, paused=s.get(b"paused") == b"1", cycles=int(s.get(b"cycles", 0)),
                        negatives_generated=int(s.get(b"negatives_generated", 0)),
                        last_cycle_time=float(s[b"last_cycle_time"]) if b"last_cycle_time" in s else None)
    return ModelOut(version=int(version) if version is not None else None,
                    frames_seen=int(m.get(b"frames_seen", 0)),
                    frames_received=int(m.get(b"frames_received", 0)), frames_applied=int(m.get(b"frames_applied", 0)),
                    frames_duplicate=int(m.get(b"frames_duplicate", 0)),
                    lag=queue_lag(m.get(b"frames_received"), m.get(b"frames_applied"), m.get(b"frames_duplicate")),
                    positive_steps=int(m.get(b"positive_steps", 0)),
                    negatives_applied=int(m.get(b"negatives_applied", 0)),
                    negatives_missed=int(m.get(b"negatives_missed", 0)),
                    negatives_rejected_stale=int(m.get(b"negatives_rejected_stale", 0)),
                    negatives_rejected_invalid=int(m.get(b"negatives_rejected_invalid", 0)),
                    negatives_rejected_exploding=int(m.get(b"negatives_rejected_exploding", 0)),
                    fast_corrections=int(m.get(b"fast_corrections", 0)),
                    rollbacks=int(m.get(b"rollbacks", 0)),
                    checkpoint_error=m[b"checkpoint_error"].decode(errors="replace") if b"checkpoint_error" in m else None,
                    frames_unacked=int(m.get(b"frames_unacked", 0)),
                    config=json.loads(m[b"config"]) if b"config" in m else None,
                    device=m[b"device"].decode() if b"device" in m else None, sleep=sleep)


@router.post("/sleep/pause", response_model=Ack, dependencies=WRITE, responses=WRITE_ERRORS)
async def pause_sleep(redis: RedisDep, keys: KeysDep) -> Ack:
    pipe = redis.pipeline(transaction=False)
    pipe.hset(keys.sleep, "paused", 1)
    ring_sleep(pipe, keys)  # the sleep worker looks at once
    await pipe.execute()
    return Ack(detail="sleep paused: no negative updates until resumed")


@router.post("/sleep/resume", response_model=Ack, dependencies=WRITE, responses=WRITE_ERRORS)
async def resume_sleep(redis: RedisDep, keys: KeysDep) -> Ack:
    pipe = redis.pipeline(transaction=False)
    pipe.hset(keys.sleep, "paused", 0)
    ring_sleep(pipe, keys)  # the sleep worker looks at once
    await pipe.execute()
    return Ack(detail="sleep resumed")


@router.post("/sleep/trigger", response_model=Ack, status_code=202, dependencies=WRITE, responses=WRITE_ERRORS)
async def trigger_sleep(redis: RedisDep, keys: KeysDep) -> Ack:
    pipe = redis.pipeline(transaction=False)
    pipe.set(keys.sleep_trigger, 1)
    ring_sleep(pipe, keys)  # the sleep worker looks at once
    await pipe.execute()
    return Ack(detail="a sleep cycle will run now (even when paused)")


@router.post("/checkpoint", response_model=Ack, status_code=202, dependencies=WRITE, responses=WRITE_ERRORS)
async def checkpoint(redis: RedisDep, keys: KeysDep) -> Ack:
    await redis.set(keys.checkpoint_request, 1)
    return Ack(detail="the wake worker will write a checkpoint after its current step")
