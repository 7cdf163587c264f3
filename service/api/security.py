"""API keys: required for every write (and, by setting, for predict). Compared in constant time;
never logged (Settings holds them as secrets, so they do not appear in reprs either)."""

from __future__ import annotations

import hmac

from fastapi import HTTPException, Request
from fastapi.security import APIKeyHeader

# Shown in the OpenAPI schema; the check itself reads the header below (or a bearer token).
API_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False, description="one of FFS_API_KEYS")


def presented_key(request: Request) -> str | None:
    key = request.headers.get("x-api-key")
    if key:
        return key
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def check_key(request: Request) -> None:
    """401 without a key, 403 with a wrong one; nothing when no keys are configured."""
    keys = request.app.state.settings.api_keys
    if not keys:
        return
    key = presented_key(request)
    if key is None:
        raise HTTPException(401, "an API key is required: send it as X-API-Key or Authorization: Bearer",
                            headers={"WWW-Authenticate": "Bearer"})
    given = key.encode()
    # Compare with every configured key, always all of them: the time taken does not say which
    # (or whether any) key came close.
    matched = False
    for k in keys:
        matched |= hmac.compare_digest(given, k.get_secret_value().encode())
    if not matched:
        raise HTTPException(403, "the API key is not valid")


async def require_key(request: Request) -> None:
    check_key(request)


async def require_key_for_predict(request: Request) -> None:
    if request.app.state.settings.predict_requires_key:
        check_key(request)
