"""Redis clients configured from Settings (socket timeout above every blocking read)."""

from __future__ import annotations

import redis
import redis.asyncio as aioredis

from service.settings import Settings


def _url(settings: Settings) -> str:
    if settings.redis_url is None:
        raise RuntimeError("FFS_REDIS_URL is not set: start the embedded system with `ffstream up`, or set it")
    return settings.redis_url


def sync_client(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(_url(settings), socket_timeout=settings.redis_socket_timeout_s,
                                socket_connect_timeout=settings.redis_socket_timeout_s, health_check_interval=30)


def async_client(settings: Settings) -> aioredis.Redis:
    return aioredis.Redis.from_url(_url(settings), socket_timeout=settings.redis_socket_timeout_s,
                                   socket_connect_timeout=2.0, health_check_interval=30)
