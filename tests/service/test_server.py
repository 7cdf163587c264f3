"""Connection guards, over real sockets: slow request heads and bodies get 408 and are closed,
at the connection limit idle connections make room and busy ones are never dropped (service.api.server)."""

import socket
import time

from tests.service.up import serve_app


def _connect(base: str) -> socket.socket:
    host, port = base.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=10)
    return s


def _read_all(s: socket.socket) -> bytes:
    chunks = []
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def test_a_request_head_that_never_completes_gets_408_and_is_closed(settings):
    with serve_app(settings.model_copy(update={"header_timeout_s": 0.5})) as base:
        s = _connect(base)
        s.sendall(b"POST /v1/streams/a/frames HTTP/1.1\r\nHost: x\r\n")  # ... and the rest never comes
        started = time.monotonic()
        answer = _read_all(s)
        assert answer.startswith(b"HTTP/1.1 408") and b"did not arrive within 0.5 s" in answer
        assert time.monotonic() - started < 5
        idle = _connect(base)  # a connection that never sends a byte is closed the same way
        assert _read_all(idle).startswith(b"HTTP/1.1 408")


def test_a_body_that_stalls_gets_408(settings):
    with serve_app(settings.model_copy(update={"body_timeout_s": 0.5})) as base:
        s = _connect(base)
        s.sendall(b"POST /v1/streams/a/frames HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
                  b"content-length: 1000\r\n\r\n{\"frames\": [")
        answer = _read_all(s)
        assert answer.startswith(b"HTTP/1.1 408") and b"did not arrive within 0.5 s" in answer


def test_at_the_connection_limit_the_oldest_idle_connection_makes_room(settings):
    with serve_app(settings.model_copy(update={"max_connections": 8})) as base:
        held = [_connect(base) for _ in range(8)]  # idle: no request in progress
        time.sleep(0.2)
        probe = _connect(base)
        probe.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert _read_all(probe).startswith(b"HTTP/1.1 200")  # a health probe still gets in
        answer = _read_all(held[0])  # the oldest idle one was closed to make room
        assert answer.startswith(b"HTTP/1.1 503") and b"closed to make room" in answer
        for s in held:
            s.close()


def test_when_every_connection_is_busy_a_new_one_gets_503_at_once(settings):
    with serve_app(settings.model_copy(update={"max_connections": 8, "body_timeout_s": 30})) as base:
        busy = [_connect(base) for _ in range(8)]
        for s in busy:  # each in the middle of a request: its body never finishes
            s.sendall(b"POST /v1/streams/a/frames HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
                      b"content-length: 1000\r\n\r\n{")
        time.sleep(0.3)
        extra = _connect(base)
        answer = _read_all(extra)
        assert answer.startswith(b"HTTP/1.1 503") and b"more than 8 open connections" in answer
        for s in busy:
            s.close()


def test_repeated_log_lines_cannot_flood():
    import logging

    from service.logs import RepeatFilter

    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    handler = Keep()
    repeat = RepeatFilter(burst=3, period_s=0.3)
    handler.addFilter(repeat)
    log = logging.getLogger("test.flood")
    log.addHandler(handler)
    log.propagate = False
    try:
        for i in range(1000):
            log.error("accept failed: %s", i)
        log.error("something else")
        time.sleep(0.35)
        log.error("accept failed: %s", "again")
    finally:
        log.removeHandler(handler)
    assert records[:3] == ["accept failed: 0", "accept failed: 1", "accept failed: 2"]
    assert records[3] == "something else"
    assert records[4] == "accept failed: again [997 more like this in the last 0.3 s were not logged]"
    assert len(records) == 5
