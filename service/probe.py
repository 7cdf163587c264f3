"""Waiting for a service: poll a condition, or until ``/readyz`` answers 200 (tools, tests,
benchmarks and the demo share these)."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    """Poll ``predicate`` until it is true (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def wait_ready(client: httpx.Client, timeout: float) -> bool:
    """Whether the service behind ``client`` answers ``/readyz`` with 200 within ``timeout`` s."""
    return wait_until(lambda: _answers_ready(client), timeout)


def _answers_ready(client: httpx.Client) -> bool:
    try:
        return client.get("/readyz").status_code == 200
    except httpx.TransportError:  # not listening yet
        return False
