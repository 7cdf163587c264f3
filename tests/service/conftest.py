"""Service tests run against a real redis-server started on a free loopback port."""

import pytest
import redis

from service.embedded import EmbeddedRedis
from service.settings import Settings


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def settings(redis_server, tmp_path, request):
    # a fresh key prefix per test keeps tests independent on the shared server
    prefix = "t" + str(abs(hash(request.node.nodeid)) % 10**8)
    return Settings(redis_url=redis_server.url, key_prefix=prefix, widths=[32, 32], checkpoint_dir=str(tmp_path),
                    snapshot_every_frames=20, max_frames_per_request=64, max_body_bytes=200_000)


@pytest.fixture
def sync_redis(redis_server):
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()
