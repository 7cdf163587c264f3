"""The Python client of an ffstream service: it owns delivery, so a program only says what to learn.

    from service.client import Client

    with Client("http://127.0.0.1:8000", seq_file="seqs.json") as ff:
        ff.learn("cam-1", frames, labels)          # (n, D) array; sent at once, in order
        ff.learn_one("cam-1", frame, label=3)      # buffered into larger requests; flush() or close()
        print(ff.predict(frames[:2]).labels)       # softmax (default) or method="goodness"
        print(ff.stream("cam-1").frames_applied)

Delivery, done right once here:

- binary bodies (``application/x-ffs-frames``; uint8 frames travel as bytes, 4x smaller);
- a ``seq`` for every frame, increasing per stream, so a resend is learned once. Numbering
  survives a restart of the client: it is kept in ``seq_file`` when one is given, and otherwise
  continues from the stream's ``last_seq`` as the server reports it;
- 503 and 429 are retried after their ``Retry-After`` (capped backoff with jitter); an ambiguous
  failure (connection lost, timeout: the frames may or may not have been stored) is retried with
  the *same* seqs, so the service skips what it already has;
- small calls are batched into requests of ``batch_size`` frames, with a bounded buffer;
- API keys; typed results; one exception family (:class:`FFStreamError`) with the server's detail.

:class:`AsyncClient` has the same methods, as coroutines.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from service.codec import encode_frames

BINARY = {"content-type": "application/x-ffs-frames"}
RETRY_STATUSES = (429, 503)


class FFStreamError(Exception):
    """Anything the client could not do. ``status`` is the HTTP status (None: no answer),
    ``detail`` the server's explanation."""

    def __init__(self, message: str, status: int | None = None, detail=None):
        super().__init__(message)
        self.status, self.detail = status, detail


class Refused(FFStreamError):
    """The service answered 4xx (other than 429): the request itself is wrong; retrying won't help."""


class Unavailable(FFStreamError):
    """The service kept answering 503/429, or could not be reached, until the retries ran out."""


@dataclass(frozen=True)
class Accepted:
    stream: str
    frames: int
    first_seq: int  # the seqs of this request are first_seq .. first_seq + frames - 1
    entry: str


@dataclass(frozen=True)
class Prediction:
    label: int
    probabilities: list[float]
    goodness: list[float] | None = None


@dataclass(frozen=True)
class PredictResult:
    model_version: int
    method: str
    predictions: list[Prediction]

    @property
    def labels(self) -> list[int]:
        return [p.label for p in self.predictions]


@dataclass(frozen=True)
class StreamStatus:
    stream_id: str
    frames_received: int
    frames_applied: int
    duplicates: int
    lag: int
    rolling_accuracy: float | None
    last_seq: int | None = None


@dataclass(frozen=True)
class ModelStatus:
    version: int | None
    frames_seen: int
    frames_received: int
    frames_applied: int
    lag: int
    config: dict | None
    raw: dict = field(repr=False, default_factory=dict)

    @property
    def input_dim(self) -> int | None:
        return (self.config or {}).get("input_dim")


class SeqStore:
    """The next seq of each stream, kept in a JSON file (written atomically) when a path is given."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else None
        self.next: dict[str, int] = {}
        if self.path is not None and self.path.is_file():
            try:
                data = json.loads(self.path.read_text())
            except json.JSONDecodeError as e:
                raise FFStreamError(f"seq file {self.path} is not valid JSON: {e}") from e
            if not isinstance(data, dict) or not all(isinstance(v, int) and v >= 0 for v in data.values()):
                raise FFStreamError(f"seq file {self.path} must map stream ids to whole numbers")
            self.next = dict(data)

    def knows(self, stream: str) -> bool:
        return stream in self.next

    def take(self, stream: str, n: int) -> int:
        """Reserve ``n`` seqs for ``stream``; returns the first."""
        first = self.next.get(stream, 0)
        self.next[stream] = first + n
        return first

    def save(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.next))
        os.replace(tmp, self.path)


def _as_frames(frames) -> np.ndarray:
    x = np.asarray(frames)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"frames must be (n, D) or (D,) with n >= 1, got shape {x.shape}")
    if x.dtype != np.uint8:
        x = x.astype(np.float32)
        if not np.isfinite(x).all():
            raise ValueError("frames hold NaN or infinite values")
    return x


def _as_labels(labels, n: int) -> list[int]:
    if labels is None:
        return [-1] * n
    if np.ndim(labels) == 0:
        labels = [labels]
    out = [-1 if v is None else int(v) for v in labels]
    if len(out) != n:
        raise ValueError(f"{len(out)} labels for {n} frames")
    return out


def _detail(response: httpx.Response):
    try:
        return response.json().get("detail")
    except (ValueError, AttributeError):
        return response.text[:500]


def _retry_after(response: httpx.Response | None, attempt: int, cap: float) -> float:
    """Seconds to wait before the next attempt: the server's Retry-After when it gives one,
    else exponential backoff; capped, with jitter so many clients do not retry in step."""
    base = min(cap, 0.1 * 2**attempt)
    if response is not None:
        try:
            base = min(cap, float(response.headers.get("retry-after", base)))
        except ValueError:  # an HTTP-date or garbage: keep the exponential backoff
            base = min(cap, 0.1 * 2**attempt)
    return base * (0.8 + 0.4 * random.random())


@dataclass
class _Batch:
    """Frames of one request, their seqs fixed when the batch was formed: a batch that failed is
    sent again as it was, so whatever part of it the service already stored is skipped."""

    stream: str
    frames: np.ndarray
    labels: list[int]
    first_seq: int
    fast: bool = False  # learn=fast: each labeled frame also learned at once (a correction)

    @property
    def params(self) -> dict:
        return {"learn": "fast"} if self.fast else {}


class _Core:
    """What the sync and async clients share: arguments, the queue of batches, bodies and answers.

    Frames wait in ``pending`` (batches with their seqs) until a 202 answers them; a call that
    raises leaves its unsent batches there, and the next call sends them first. So after an
    error, do not send the same frames again yourself: the client still has them."""

    def __init__(self, base_url: str, api_key: str | None, timeout: float, max_retries: int, backoff_max_s: float,
                 batch_size: int, seq_file: str | Path | None, predict_url: str | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.base_url, self.timeout = base_url.rstrip("/"), timeout
        # Predictions from the predict role (FFS_PREDICT_PORT) when given: off the ingest event loop.
        self.predict_path = f"{predict_url.rstrip('/')}/v1/predict" if predict_url else "/v1/predict"
        self.headers = {"x-api-key": api_key} if api_key else {}
        self.max_retries, self.backoff_max_s = max_retries, backoff_max_s
        self.batch_size = batch_size
        self.seqs = SeqStore(seq_file)
        self.pending: list[_Batch] = []
        self._buffer: dict[str, tuple[list[np.ndarray], list[int]]] = {}
        self._buffered = 0  # frames in _buffer: at most batch_size

    @property
    def unsent(self) -> int:
        """Frames held by the client, not yet answered 202."""
        return self._buffered + sum(len(b.frames) for b in self.pending)

    def _buffer_one(self, stream: str, frame, label) -> bool:
        """Add a frame; returns whether a flush is due."""
        x = _as_frames(frame)
        if len(x) != 1:
            raise ValueError(f"learn_one takes one frame, got {len(x)}; use learn() for a batch")
        frames, labels = self._buffer.setdefault(stream, ([], []))
        frames.append(x[0])
        labels.append(-1 if label is None else int(label))
        self._buffered += 1
        return self._buffered >= self.batch_size

    def _form(self, stream: str, frames: np.ndarray, labels: list[int], fast: bool = False) -> None:
        """Cut frames into batches of at most batch_size, give them their seqs, queue them."""
        for i in range(0, len(frames), self.batch_size):
            part = frames[i:i + self.batch_size]
            self.pending.append(_Batch(stream, part, labels[i:i + self.batch_size], self.seqs.take(stream, len(part)),
                                       fast))

    @staticmethod
    def _correction(frame, label: int) -> tuple[np.ndarray, list[int]]:
        x = _as_frames(frame)
        if len(x) != 1:
            raise ValueError(f"correct takes one frame, got {len(x)}")
        if label is None or int(label) < 0:
            raise ValueError("correct needs the frame's right label (an int >= 0)")
        return x, [int(label)]

    def _form_buffered(self) -> None:
        buffered, self._buffer, self._buffered = self._buffer, {}, 0
        for stream, (frames, labels) in buffered.items():
            self._form(stream, np.stack(frames), labels)

    def _continue_after(self, stream: str, status: StreamStatus | None) -> None:
        """No record of our own for ``stream``: its seqs continue after the server's last one."""
        self.seqs.next[stream] = status.last_seq + 1 if status is not None and status.last_seq is not None else 0

    @staticmethod
    def _predict_body(frames, method: str, stream: str | None) -> dict:
        x = _as_frames(frames).astype(np.float32) / (255.0 if np.asarray(frames).dtype == np.uint8 else 1.0)
        return {"frames": x.tolist(), "method": method, **({"stream_id": stream} if stream else {})}

    @staticmethod
    def _body(batch: _Batch) -> bytes:
        seqs = range(batch.first_seq, batch.first_seq + len(batch.frames))
        if batch.frames.dtype == np.uint8:
            return encode_frames(batch.frames, batch.labels, seqs, dtype=2)
        return encode_frames(batch.frames, batch.labels, seqs)

    def _accepted(self, batch: _Batch, response: httpx.Response) -> Accepted:
        try:
            self._raise_for(response, f"learn on stream {batch.stream!r}")
        except Refused:
            self.pending.pop(0)  # the batch itself is wrong: sending it again cannot help
            raise
        self.pending.pop(0)
        self.seqs.save()
        data = response.json()
        return Accepted(batch.stream, data["accepted"], batch.first_seq, data["entry"])

    @staticmethod
    def _raise_for(response: httpx.Response, what: str) -> None:
        if response.status_code < 400:
            return
        detail = _detail(response)
        cls = Unavailable if response.status_code in RETRY_STATUSES or response.status_code >= 500 else Refused
        raise cls(f"{what}: {response.status_code} {detail}", response.status_code, detail)


class Client(_Core):
    """Synchronous client (httpx). Use as a context manager, or call ``close()``."""

    def __init__(self, base_url: str = "http://127.0.0.1:8000", api_key: str | None = None, *, timeout: float = 30.0,
                 max_retries: int = 10, backoff_max_s: float = 10.0, batch_size: int = 64,
                 seq_file: str | Path | None = None, transport: httpx.BaseTransport | None = None,
                 predict_url: str | None = None):
        super().__init__(base_url, api_key, timeout, max_retries, backoff_max_s, batch_size, seq_file, predict_url)
        self.http = httpx.Client(base_url=self.base_url, timeout=timeout, headers=self.headers, transport=transport)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self.http.close()

    # ---- learning -----------------------------------------------------------------------
    def learn(self, stream: str, frames, labels=None) -> list[Accepted]:
        """Send frames (and labels: an int per frame, None or -1 for none) to ``stream`` now, in
        requests of at most ``batch_size`` frames, after anything queued before."""
        x = _as_frames(frames)
        labels = _as_labels(labels, len(x))
        self._form_buffered()
        self._know(stream)
        self._form(stream, x, labels)
        return self._send_pending()

    def learn_one(self, stream: str, frame, label: int | None = None) -> None:
        """Queue one frame; requests go out when ``batch_size`` frames are queued (over all streams)."""
        self._know(stream)
        if self._buffer_one(stream, frame, label):
            self.flush()

    def flush(self) -> list[Accepted]:
        """Send every queued frame now."""
        self._form_buffered()
        return self._send_pending()

    def correct(self, stream: str, frame, label: int) -> Accepted:
        """Teach the service one frame's right label at once (``learn=fast``: say, a wrong
        answer a user corrected): predictions for that frame give ``label`` from the next snapshot
        on. Sent now, after anything queued before, as part of ``stream``."""
        x, labels = self._correction(frame, label)
        self._form_buffered()
        self._know(stream)
        self._form(stream, x, labels, fast=True)
        return self._send_pending()[-1]

    def _know(self, stream: str) -> None:
        if not self.seqs.knows(stream):
            self._continue_after(stream, self._stream_or_none(stream))

    def _send_pending(self) -> list[Accepted]:
        out = []
        while self.pending:
            batch = self.pending[0]
            response = self._retrying("POST", f"/v1/streams/{batch.stream}/frames", content=self._body(batch),
                                      headers=BINARY, params=batch.params)
            out.append(self._accepted(batch, response))
        return out

    def _retrying(self, method: str, path: str, **kw) -> httpx.Response:
        """The request, resent unchanged after 503/429 (honouring Retry-After) and after ambiguous
        failures, until it gets another answer or the retries run out."""
        response, error = None, None
        for attempt in range(self.max_retries + 1):
            try:
                response, error = self.http.request(method, path, **kw), None
                if response.status_code not in RETRY_STATUSES:
                    return response
            except httpx.TransportError as e:  # lost or refused: maybe stored, maybe not; the seqs decide
                response, error = None, e
            if attempt < self.max_retries:
                time.sleep(_retry_after(response, attempt, self.backoff_max_s))
        if response is not None:
            return response  # the last 503/429: _raise_for turns it into Unavailable
        raise Unavailable(f"{method} {path}: no answer after {self.max_retries + 1} attempts: {error}")

    # ---- predicting and status ----------------------------------------------------------
    def predict(self, frames, method: str = "softmax", stream: str | None = None) -> PredictResult:
        """Labels for (n, D) frames from the latest snapshot, optionally in ``stream``'s context."""
        response = self._retrying("POST", self.predict_path, json=self._predict_body(frames, method, stream))
        self._raise_for(response, "predict")
        return _prediction(response.json())

    def predict_one(self, frame, method: str = "softmax", stream: str | None = None) -> Prediction:
        return self.predict(frame, method, stream).predictions[0]

    def stream(self, stream: str) -> StreamStatus:
        response = self._retrying("GET", f"/v1/streams/{stream}")
        self._raise_for(response, f"status of stream {stream!r}")
        return StreamStatus(**response.json())

    def _stream_or_none(self, stream: str) -> StreamStatus | None:
        try:
            return self.stream(stream)
        except Refused as e:
            if e.status == 404:
                return None
            raise

    def model(self) -> ModelStatus:
        response = self._retrying("GET", "/v1/model")
        self._raise_for(response, "model status")
        return _model(response.json())


def _prediction(data: dict) -> PredictResult:
    return PredictResult(data["model_version"], data["method"],
                         [Prediction(p["label"], p["probabilities"], p.get("goodness")) for p in data["predictions"]])


def _model(data: dict) -> ModelStatus:
    return ModelStatus(data.get("version"), data.get("frames_seen", 0), data.get("frames_received", 0),
                       data.get("frames_applied", 0), data.get("lag", 0), data.get("config"), data)


class AsyncClient(_Core):
    """The same client for asyncio programs (``async with AsyncClient(...) as ff: await ff.learn(...)``)."""

    def __init__(self, base_url: str = "http://127.0.0.1:8000", api_key: str | None = None, *, timeout: float = 30.0,
                 max_retries: int = 10, backoff_max_s: float = 10.0, batch_size: int = 64,
                 seq_file: str | Path | None = None, transport: httpx.AsyncBaseTransport | None = None,
                 predict_url: str | None = None):
        super().__init__(base_url, api_key, timeout, max_retries, backoff_max_s, batch_size, seq_file, predict_url)
        self.http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout, headers=self.headers,
                                      transport=transport)
        self._lock = asyncio.Lock()  # one send at a time: batches go out in the order of their seqs

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        try:
            await self.flush()
        finally:
            await self.http.aclose()

    async def learn(self, stream: str, frames, labels=None) -> list[Accepted]:
        x = _as_frames(frames)
        labels = _as_labels(labels, len(x))
        async with self._lock:
            self._form_buffered()
            await self._know(stream)
            self._form(stream, x, labels)
            return await self._send_pending()

    async def learn_one(self, stream: str, frame, label: int | None = None) -> None:
        async with self._lock:
            await self._know(stream)
            due = self._buffer_one(stream, frame, label)
        if due:
            await self.flush()

    async def flush(self) -> list[Accepted]:
        async with self._lock:
            self._form_buffered()
            return await self._send_pending()

    async def correct(self, stream: str, frame, label: int) -> Accepted:
        """As :meth:`Client.correct`."""
        x, labels = self._correction(frame, label)
        async with self._lock:
            self._form_buffered()
            await self._know(stream)
            self._form(stream, x, labels, fast=True)
            return (await self._send_pending())[-1]

    async def _know(self, stream: str) -> None:
        if not self.seqs.knows(stream):
            self._continue_after(stream, await self._stream_or_none(stream))

    async def _send_pending(self) -> list[Accepted]:
        out = []
        while self.pending:
            batch = self.pending[0]
            response = await self._retrying("POST", f"/v1/streams/{batch.stream}/frames", content=self._body(batch),
                                            headers=BINARY, params=batch.params)
            out.append(self._accepted(batch, response))
        return out

    async def _retrying(self, method: str, path: str, **kw) -> httpx.Response:
        response, error = None, None
        for attempt in range(self.max_retries + 1):
            try:
                response, error = await self.http.request(method, path, **kw), None
                if response.status_code not in RETRY_STATUSES:
                    return response
            except httpx.TransportError as e:
                response, error = None, e
            if attempt < self.max_retries:
                await asyncio.sleep(_retry_after(response, attempt, self.backoff_max_s))
        if response is not None:
            return response
        raise Unavailable(f"{method} {path}: no answer after {self.max_retries + 1} attempts: {error}")

    async def predict(self, frames, method: str = "softmax", stream: str | None = None) -> PredictResult:
        response = await self._retrying("POST", self.predict_path, json=self._predict_body(frames, method, stream))
        self._raise_for(response, "predict")
        return _prediction(response.json())

    async def predict_one(self, frame, method: str = "softmax", stream: str | None = None) -> Prediction:
        return (await self.predict(frame, method, stream)).predictions[0]

    async def stream(self, stream: str) -> StreamStatus:
        response = await self._retrying("GET", f"/v1/streams/{stream}")
        self._raise_for(response, f"status of stream {stream!r}")
        return StreamStatus(**response.json())

    async def _stream_or_none(self, stream: str) -> StreamStatus | None:
        try:
            return await self.stream(stream)
        except Refused as e:
            if e.status == 404:
                return None
            raise

    async def model(self) -> ModelStatus:
        response = await self._retrying("GET", "/v1/model")
        self._raise_for(response, "model status")
        return _model(response.json())
