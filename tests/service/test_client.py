"""The Python client against real components: a real API over loopback HTTP, a real redis-server,
the real wake worker; its retries meet real 503s and 429s, and a real lost answer."""

import asyncio
import threading

import httpx
import numpy as np
import pytest

from service.client import AsyncClient, Client, Refused, Unavailable
from service.keys import Keys
from service.redis_io import sync_client
from service.wake import WakeWorker
from tests.service.up import serve_app


class Waker:
    """The real wake worker polling in a thread, so frames are applied while the client posts."""

    def __init__(self, settings):
        self.worker = WakeWorker(settings, sync_client(settings))
        self.worker.setup()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop.is_set():
            self.worker.poll()

    def __enter__(self):
        self.thread.start()
        return self.worker

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(30)


def _frames(n, dim, seed=0):
    return np.random.default_rng(seed).random((n, dim)).astype(np.float32)


def _wait_applied(c: Client, stream: str, n: int, timeout: float = 30) -> None:
    from service.probe import wait_until

    assert wait_until(lambda: c.stream(stream).frames_applied == n, timeout), c.stream(stream)


def test_learn_batches_and_numbers_every_frame_once(settings):
    with serve_app(settings) as base, Waker(settings), Client(base, batch_size=16) as c:
        x = _frames(40, settings.input_dim)
        accepted = c.learn("a", x[:20], labels=[i % 10 for i in range(20)])
        assert [a.frames for a in accepted] == [16, 4] and [a.first_seq for a in accepted] == [0, 16]
        for i in range(20, 40):
            c.learn_one("a", x[i], label=i % 10)
        assert c.unsent == 4  # 16 went out as one request, 4 wait for the next flush
        c.flush()
        assert c.unsent == 0
        _wait_applied(c, "a", 40)
        status = c.stream("a")
        assert status.frames_received == 40 and status.duplicates == 0 and status.last_seq == 39
        result = c.predict(x[:3])
        assert len(result.labels) == 3 and result.method == "softmax"
        assert len(c.predict_one(x[0], method="goodness").goodness) == settings.num_classes
        assert c.model().frames_applied == 40


def test_a_restarted_client_continues_the_numbering(settings, tmp_path):
    seq_file = tmp_path / "seqs.json"
    with serve_app(settings) as base, Waker(settings):
        with Client(base, seq_file=seq_file) as c:
            c.learn("a", _frames(5, settings.input_dim))
        assert seq_file.read_text() == '{"a": 5}'
        with Client(base, seq_file=seq_file) as c:  # from its own record
            assert c.learn("a", _frames(3, settings.input_dim))[0].first_seq == 5
        with Client(base) as c:  # no record: from the server's last seq
            assert c.learn("a", _frames(2, settings.input_dim))[0].first_seq == 8
            _wait_applied(c, "a", 10)
            assert c.stream("a").duplicates == 0


class LoseFirstAnswer(httpx.HTTPTransport):
    """A real connection whose first answer to a frames post is lost on the way back: the
    service stored the frames, the client cannot know (an ambiguous failure)."""

    def __init__(self):
        super().__init__()
        self.lost = 0

    def handle_request(self, request):
        response = super().handle_request(request)
        if request.url.path.endswith("/frames") and self.lost == 0:
            response.read()
            self.lost += 1
            raise httpx.ReadTimeout("the answer was lost", request=request)
        return response


def test_an_ambiguous_failure_is_resent_with_the_same_seqs_and_learned_once(settings):
    transport = LoseFirstAnswer()
    with serve_app(settings) as base, Waker(settings), Client(base, transport=transport, backoff_max_s=0.05) as c:
        c.learn("a", _frames(8, settings.input_dim))
        assert transport.lost == 1
        _wait_applied(c, "a", 8)
        status = c.stream("a")
        assert status.frames_received == 16  # stored twice ...
        assert status.frames_applied == 8 and status.duplicates == 8  # ... learned once


def test_429_is_retried_after_retry_after(settings):
    limited = settings.model_copy(update={"max_stream_fps": 10})
    with serve_app(limited) as base, Waker(limited), Client(base, batch_size=10, backoff_max_s=1.5) as c:
        accepted = c.learn("a", _frames(30, settings.input_dim))  # three seconds' worth at 10 frames/s
        assert sum(a.frames for a in accepted) == 30
        _wait_applied(c, "a", 30)


def test_503_is_retried_then_reported_and_the_frames_are_kept(settings):
    keys = Keys(settings.key_prefix)
    behind = settings.model_copy(update={"max_queue_lag_frames": 5})
    with serve_app(behind) as base, Client(base, batch_size=5, max_retries=2, backoff_max_s=0.05) as c:
        c.learn("a", _frames(5, settings.input_dim))  # lag 5: the limit is reached (no learner runs)
        with pytest.raises(Unavailable) as e:
            c.learn("a", _frames(5, settings.input_dim, seed=1))
        assert e.value.status == 503 and "frames behind" in e.value.detail
        assert c.unsent == 5  # kept, with their seqs, for the next call
        waker = WakeWorker(behind, sync_client(behind))
        waker.setup()
        _drain(waker)
        assert [a.first_seq for a in c.flush()] == [5]
        _drain(waker)
        assert int(sync_client(settings).hget(keys.stream("a"), "applied")) == 10


def _drain(worker: WakeWorker) -> None:
    """Poll until the queue holds nothing more for the worker."""
    while worker.poll() > 0:
        continue


def test_a_wrong_request_is_refused_with_the_servers_detail_and_dropped(settings):
    with serve_app(settings) as base, Client(base) as c:
        with pytest.raises(Refused) as e:
            c.learn("a", np.zeros((2, settings.input_dim + 1), np.float32))
        assert e.value.status == 422 and f"exactly {settings.input_dim}" in e.value.detail
        assert c.unsent == 0
        with pytest.raises(ValueError, match="NaN"):
            c.learn("a", np.full((1, settings.input_dim), np.nan))


def test_the_async_client_does_the_same(settings):
    async def main(base):
        async with AsyncClient(base, batch_size=8) as c:
            x = _frames(20, settings.input_dim)
            await c.learn("b", x[:10])
            for f in x[10:]:
                await c.learn_one("b", f, label=1)
            await c.flush()
            assert (await c.predict(x[:2])).model_version >= 1
            return await c.stream("b")

    with serve_app(settings) as base, Waker(settings):
        status = asyncio.run(main(base))
        assert status.frames_received == 20 and status.last_seq == 19


def test_a_correction_is_learned_at_once_and_served(settings):
    settings = settings.model_copy(update={"correction_layers": "all"})  # the goodness classifier too
    with serve_app(settings) as base, Waker(settings), Client(base, batch_size=16) as c:
        x = _frames(41, settings.input_dim)
        c.learn("a", x[:40], labels=[i % 10 for i in range(40)])
        _wait_applied(c, "a", 40)
        wrong = c.predict_one(x[40]).label
        right = (wrong + 1) % settings.num_classes
        accepted = c.correct("a", x[40], right)
        assert accepted.frames == 1 and accepted.first_seq == 40
        _wait_applied(c, "a", 41)
        assert c.predict_one(x[40]).label == right
        assert c.predict_one(x[40], method="goodness").label == right
        assert c.model().raw["fast_corrections"] == 1
        with pytest.raises(ValueError, match="right label"):
            c.correct("a", x[40], None)

    async def main(base):
        async with AsyncClient(base) as c:
            await c.correct("b", x[0], 3)
            return await c.stream("b")

    with serve_app(settings) as base, Waker(settings):
        assert asyncio.run(main(base)).frames_received == 1
