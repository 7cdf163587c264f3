"""Dependencies injected into routes. ``async`` although they only read app state: FastAPI runs a
plain ``def`` dependency in its thread pool, a thread hop per dependency per request (three per
ingest request, about a tenth of the API process's time under full ingest)."""

from __future__ import annotations

from typing import Annotated

import redis.asyncio as aioredis
from fastapi import Depends, Request

from service.keys import Keys
from service.settings import Settings


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_redis(request: Request) -> aioredis.Redis:
    return request.app.state.redis


async def get_keys(request: Request) -> Keys:
    return request.app.state.keys


SettingsDep = Annotated[Settings, Depends(get_settings)]
RedisDep = Annotated[aioredis.Redis, Depends(get_redis)]
KeysDep = Annotated[Keys, Depends(get_keys)]
