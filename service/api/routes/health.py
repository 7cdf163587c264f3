"""Liveness, readiness and metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.api.deps import KeysDep, RedisDep
from service.api.schemas import HealthOut

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthOut)
async def healthz() -> HealthOut:
    """The process is up."""
    return HealthOut(status="ok")


@router.get("/readyz", response_model=HealthOut, responses={503: {"model": HealthOut, "description": "not ready"}})
async def readyz(redis: RedisDep, keys: KeysDep):
    """Redis reachable, a snapshot loaded, the wake worker's heartbeat fresh, its checkpoints
    working; 503 otherwise, naming each problem."""
    problems = []
    try:
        await redis.ping()
        if await redis.get(keys.snapshot_latest) is None:
            problems.append("no model snapshot yet")
        if await redis.get(keys.heartbeat("wake")) is None:
            problems.append("wake worker heartbeat missing or stale")
        checkpoint_error = await redis.hget(keys.model, "checkpoint_error")
        if checkpoint_error is not None:
            problems.append(checkpoint_error.decode(errors="replace"))
    except Exception as e:  # any failure to reach redis means not ready
        problems.append(f"redis unreachable: {e}")
    if problems:
        return JSONResponse(status_code=503, content={"status": "not ready", "problems": problems})
    return HealthOut(status="ready")


@router.get("/metrics", include_in_schema=False)  # Prometheus text, for scrapers
async def metrics(request: Request) -> Response:
    """Prometheus exposition of this API (all its worker processes in multiprocess mode)."""
    return Response(generate_latest(request.app.state.metrics.exposition()), media_type=CONTENT_TYPE_LATEST)
