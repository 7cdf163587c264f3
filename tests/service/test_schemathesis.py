"""Schemathesis against the OpenAPI schema of a real running system (`ffstream up`, real HTTP):
generated requests to every endpoint, with and without an API key, must never get a 5xx and
every response must conform to the schema (status code, content type, body)."""

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.codec import encode_frames
from tests.service.up import ffstream_up

KEY = "schemathesis-key-0123456789"
CASES_PER_OPERATION = 70  # 9 operations x 70 x 2 (with and without the key): over 1,000 requests
CALLS = {"with key": 0, "without key": 0}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@schemathesis.serializer("application/x-ffs-frames")
def _binary_frames(ctx, value):
    """The binary frame body is bytes; schemathesis generates them as such (or as text)."""
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    return str(value).encode()


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    with ffstream_up(tmp_path_factory.mktemp("schemathesis"), FFS_API_KEYS=f'["{KEY}"]',
                     FFS_MAX_FRAMES_PER_REQUEST="8") as up:
        # a stream with state, so stream-context predictions have something to find
        body = encode_frames([[0.5] * 196] * 2, [1, 2])
        r = up.client.post("/v1/streams/cam-1/frames", content=body,
                           headers={"content-type": "application/x-ffs-frames", "X-API-Key": KEY})
        assert r.status_code == 202
        yield up


@pytest.fixture(scope="module")
def api_schema(system):
    return schemathesis.openapi.from_url(f"{system.client.base_url}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=CASES_PER_OPERATION, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
def test_no_5xx_and_schema_conformance_with_a_key(case):
    CALLS["with key"] += 1
    case.call_and_validate(headers={"X-API-Key": KEY}, checks=CHECKS)


@schema.parametrize()
@settings(max_examples=CASES_PER_OPERATION, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
def test_no_5xx_and_schema_conformance_without_a_key(case):
    CALLS["without key"] += 1
    response = case.call_and_validate(checks=CHECKS)
    if case.operation.method.upper() == "POST" and case.operation.path != "/v1/predict" and \
            case.method.upper() == "POST":
        assert response.status_code in (401, 403), (case.path, response.status_code)  # writes need the key


def test_over_a_thousand_generated_requests_were_made(system):
    """Runs after the two above (file order): the fuzzing was not vacuous."""
    print("schemathesis requests:", CALLS)
    assert sum(CALLS.values()) >= 1000, CALLS
    assert min(CALLS.values()) > 0
