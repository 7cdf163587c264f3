"""The FastAPI application: thin routes over Redis; training never runs in a request."""

from __future__ import annotations

import inspect
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from service.api import server
from service.api.middleware import RequestMetrics
from service.api.routes import frames, health, model, predict, streams
from service.keys import Keys
from service.metrics import ApiMetrics
from service.redis_io import async_client
from service.settings import Settings


# The routes of each role. ``predict``: a process of its own for predictions (and the read-only
# routes a client checks beside them), so that a burst of ingest never queues a prediction
# behind it on one event loop (benchmarks/throughput.py measures both).
ROLES = {"api": (frames.router, predict.router, streams.router, model.read_router, model.router, health.router),
         "predict": (predict.router, streams.router, model.read_router, health.router)}


# FastAPI's native OpenTelemetry stays off: the service reports through Prometheus (``/metrics``),
# and asking OpenTelemetry's global providers whether they are configured took about 7% of the
# API process's time under full ingest. (Earlier FastAPIs have no native telemetry to turn off.)
NO_TELEMETRY = ({"telemetry": {"tracing": False, "metrics": False, "logs": False}}
                if "telemetry" in inspect.signature(FastAPI).parameters else {})


def create_app(settings: Settings | None = None, role: str = "api") -> FastAPI:
    if role not in ROLES:
        raise ValueError(f"unknown API role {role!r}; choose one of {', '.join(ROLES)}")
    settings = settings or Settings()
    server.configure(settings)  # the connection guards of service.api.server, for this process

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.settings = settings
        app.state.keys = Keys(settings.key_prefix)
        app.state.redis = async_client(settings)
        app.state.snapshot = None  # (version, model) cache for predict
        yield
        await app.state.redis.aclose()

    app = FastAPI(title="ffstream", version="0.1.0", lifespan=lifespan,
                  description="Online Forward-Forward learning from streams of frames.", **NO_TELEMETRY)
    app.state.metrics = metrics = ApiMetrics()
    app.add_middleware(RequestMetrics, histogram=metrics.request_seconds)

    @app.exception_handler(RedisConnectionError)
    @app.exception_handler(RedisTimeoutError)
    async def redis_down(request, exc):  # the store is unreachable: say so quickly, never a 500
        if request.url.path.endswith("/frames"):
            metrics.rejected.labels("redis_unavailable").inc()
        return JSONResponse(status_code=503, content={"detail": f"redis unavailable: {exc}"},
                            headers={"Retry-After": "1"})

    for router in ROLES[role]:
        app.include_router(router)
    return app
