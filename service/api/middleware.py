"""Request duration per route template (bounded labels: never a raw path or stream id)."""

from __future__ import annotations

import time

from prometheus_client import Histogram


class RequestMetrics:
    """Pure ASGI middleware: observes each HTTP request's duration with its route template,
    method and status. Unmatched paths are labeled ``other``."""

    def __init__(self, app, histogram: Histogram):
        self.app = app
        self.histogram = histogram

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 500  # what the client sees if the app raises before answering

        async def send_with_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "other"
            self.histogram.labels(template, scope["method"], str(status)).observe(time.perf_counter() - start)
