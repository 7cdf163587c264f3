"""Connection guards uvicorn lacks: a deadline for a request's head, and a bound on connections.

uvicorn closes idle keep-alive connections, but a client that sends its request line and
headers slowly (or never finishes them) holds a connection, and a file descriptor, forever;
thousands of them exhaust the process. :class:`GuardedH11Protocol` closes a connection whose
request head is not complete ``header_timeout_s`` after it opened or after its first byte (408),
and beyond ``max_connections`` closes the oldest connection with no request in progress to make
room (503 to it), or, when every connection is busy with a request, answers the new one 503. Slow *bodies* are
bounded where the body is read (``service.api.bodies.read_body``: 408).
"""

from __future__ import annotations

import asyncio
import json
import resource
import time

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

LIMITS = {"header_timeout_s": 10.0, "max_connections": 1024}


def configure(settings) -> None:
    """Take the limits from Settings (each API process calls it when it builds its app)."""
    LIMITS["header_timeout_s"] = settings.header_timeout_s
    LIMITS["max_connections"] = settings.max_connections


def raise_file_limit(wanted: int) -> int:
    """Raise this process's open-file soft limit towards ``wanted`` (never above the hard limit).
    Returns the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


def _response(status: str, detail: str, extra: str = "") -> bytes:
    body = json.dumps({"detail": detail}).encode()
    head = (f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            f"{extra}connection: close\r\n\r\n")
    return head.encode() + body


class GuardedH11Protocol(H11Protocol):
    _head_timer: asyncio.TimerHandle | None = None
    _opened = 0.0

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._opened = time.monotonic()
        if len(self.connections) > LIMITS["max_connections"] and not self._evict_idle():
            transport.write(_response("503 Service Unavailable",
                                      f"more than {LIMITS['max_connections']} open connections: retry later",
                                      "retry-after: 1\r\n"))
            transport.close()
            return
        self._arm_head_timer()

    def _evict_idle(self) -> bool:
        """At the limit, make room by closing the oldest connection that has no request in
        progress (idle keep-alive, or a head still arriving): a flood of idle or slow
        connections then cannot lock out new clients, such as health probes."""
        idle = [c for c in self.connections
                if c is not self and isinstance(c, GuardedH11Protocol) and c.conn.their_state is h11.IDLE
                and not c.transport.is_closing()]
        if not idle:
            return False
        oldest = min(idle, key=lambda c: c._opened)
        oldest.transport.write(_response("503 Service Unavailable", f"closed to make room: more than "
                                         f"{LIMITS['max_connections']} open connections", "retry-after: 1\r\n"))
        oldest.transport.close()
        oldest.connections.discard(oldest)  # counted out now; connection_lost follows
        return True

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is h11.IDLE:  # part of a request head: it must complete in time
            self._arm_head_timer()
        else:  # the head is complete (the body, if any, has its own deadline)
            self._cancel_head_timer()

    def connection_lost(self, exc) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(LIMITS["header_timeout_s"], self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.write(_response("408 Request Timeout", f"the request line and headers did not arrive "
                                           f"within {LIMITS['header_timeout_s']:g} s"))
            self.transport.close()
