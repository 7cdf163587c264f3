"""Request bodies: one content-type rule, a size limit enforced before reading, and a JSON parser
that cannot be made to recurse, overflow or echo what it cannot encode.

Every failure is a :class:`Rejected` (a 4xx whose ``detail`` names the problem); nothing a client
sends can reach the handler as an exception of another kind, so nothing it sends gives a 5xx.
"""

from __future__ import annotations

import asyncio

from fastapi import HTTPException, Request
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect

BINARY_TYPE = "application/x-ffs-frames"
JSON_TYPE = "application/json"


class Rejected(HTTPException):
    """A refused request: the HTTP answer plus a bounded reason for the metrics."""

    def __init__(self, status: int, reason: str, detail, frames: int = 0, retry_after: int | None = None,
                 headers: dict | None = None):
        headers = {**(headers or {}), **({"Retry-After": str(retry_after)} if retry_after else {})}
        super().__init__(status, detail, headers or None)
        self.reason = reason
        self.frames = frames  # frames decoded before the refusal (counted as received)


def media_type(content_type: str | None, allowed: tuple[str, ...]) -> str:
    """The request's media type, one of ``allowed`` (case-insensitive, parameters such as
    ``; charset=utf-8`` ignored). No Content-Type at all means JSON."""
    if not content_type or not content_type.strip():
        return JSON_TYPE
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind not in allowed:
        raise Rejected(415, "unsupported_media_type",
                       f"content type {content_type[:100]!r}: send {' or '.join(allowed)}")
    return kind


async def read_body(request: Request, limit: int, timeout_s: float | None = None) -> bytes:
    """The request body, refusing (413) anything over ``limit`` bytes before reading it all, and
    (408) a body not complete within ``timeout_s`` (a slow or stalled upload holds no connection
    for long). ``timeout_s`` defaults to the app's ``body_timeout_s`` setting."""
    if timeout_s is None:
        timeout_s = request.app.state.settings.body_timeout_s
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise Rejected(400, "bad_body", f"Content-Length {declared[:40]!r} is not a whole number")
        if int(declared) > limit:
            raise Rejected(413, "body_too_large", f"body of {int(declared)} bytes exceeds the limit of {limit} bytes")
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise Rejected(413, "body_too_large", f"body exceeds the limit of {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise Rejected(408, "body_timeout", f"the body did not arrive within {timeout_s:g} s ({size} bytes came)",
                       headers={"Connection": "close"}) from None
    except ClientDisconnect:  # nothing was accepted; the client is gone and sees no answer
        raise Rejected(400, "bad_body", "the client disconnected before the body was complete") from None
    return b"".join(chunks)


def parse_json(model: type[BaseModel], body: bytes) -> BaseModel:
    """Validate a JSON body against ``model`` in one pass of pydantic's own parser (UTF-8 only,
    a nesting limit, no NaN or infinity, integers bounded by the model). A body that is not JSON
    is a 400, JSON of the wrong shape a 422; errors never echo the input."""
    try:
        return model.model_validate_json(body)
    except ValidationError as e:
        errors = e.errors(include_url=False, include_context=False, include_input=False)
        if any(err["type"] == "json_invalid" for err in errors):
            raise Rejected(400, "bad_body", f"body is not valid JSON: {errors[0]['msg']}") from None
        raise Rejected(422, "bad_body", [{"loc": list(err["loc"]), "msg": err["msg"], "type": err["type"]}
                                         for err in errors[:20]]) from None
