"""Every body a client can send answers 2xx or a 4xx naming the problem: the cases that gave
500s (issue 14), on both endpoints, through the real app and a real redis-server."""

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.codec import HEADER, MAGIC, encode_frames

FRAMES = "/v1/streams/s/frames"
JSON = {"content-type": "application/json"}


@pytest.fixture
def client(settings):
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def _values(settings, last="0.5") -> str:
    return "[" + ",".join(["0.5"] * (settings.input_dim - 1) + [last]) + "]"


def _cases(settings) -> list[tuple[str, bytes, dict, int, str]]:
    """(what, body, headers, status, words the detail must hold)."""
    ok = _values(settings)
    return [
        ("not UTF-8", b'{"frames": [{"data": \xff\xfe}]}', JSON, 400, "not valid JSON"),
        ("binary body without a content type", encode_frames(np.zeros((1, settings.input_dim))), {}, 400,
         "not valid JSON"),
        ("Infinity where frames go", b'{"frames": Infinity}', JSON, 422, "valid array"),
        ("1e400", ('{"frames": [{"data": %s}]}' % _values(settings, "1e400")).encode(), JSON, 422, "finite"),
        ("NaN label", ('{"frames": [{"data": %s, "label": NaN}]}' % ok).encode(), JSON, 422, "valid integer"),
        ("seq 2**63", ('{"frames": [{"data": %s, "seq": %d}]}' % (ok, 2**63)).encode(), JSON, 422,
         "less than or equal"),
        ("label 2**63", ('{"frames": [{"data": %s, "label": %d}]}' % (ok, 2**63)).encode(), JSON, 422,
         "less than or equal"),
        ("5,000-digit integer", ('{"frames": [{"data": %s, "seq": %s}]}' % (ok, "9" * 5000)).encode(), JSON, 400,
         "number out of range"),
        ("nested 5,000 deep", b"[" * 5000 + b"]" * 5000, JSON, 400, "recursion limit"),
        ("true for a number", ('{"frames": [{"data": %s}]}' % _values(settings, "true")).encode(), JSON, 422,
         "valid number"),
        ('"7" for a label', ('{"frames": [{"data": %s, "label": "7"}]}' % ok).encode(), JSON, 422, "valid integer"),
        ("application/jsonx", ('{"frames": [{"data": %s}]}' % ok).encode(), {"content-type": "application/jsonx"},
         415, "application/json"),
        ("binary seq -2", HEADER.pack(MAGIC, 1, 1, settings.input_dim) + np.int32(-1).tobytes()
         + np.int64(-2).tobytes() + np.zeros(settings.input_dim, "<f4").tobytes(),
         {"content-type": "application/x-ffs-frames"}, 400, "seq -2"),
    ]


def test_hostile_ingest_bodies_get_a_4xx_that_names_the_problem(client, settings):
    for what, body, headers, status, words in _cases(settings):
        r = client.post(FRAMES, content=body, headers=headers)
        assert r.status_code == status, (what, r.status_code, r.text[:300])
        assert words in str(r.json()["detail"]), (what, r.json())
    # no echo: a refused body's values never come back (a non-finite one could not be encoded)
    assert "input" not in client.post(FRAMES, content=_cases(settings)[3][1], headers=JSON).json()["detail"][0]


def test_content_types_follow_one_rule(client, settings):
    body = ('{"frames": [{"data": %s}]}' % _values(settings)).encode()
    for content_type in ("APPLICATION/JSON", "application/json; charset=utf-8", " application/json "):
        assert client.post(FRAMES, content=body, headers={"content-type": content_type}).status_code == 202
    r = client.post(FRAMES, content=body, headers={"content-type": "text/plain"})
    assert r.status_code == 415 and "text/plain" in r.json()["detail"]


def test_hostile_predict_bodies_get_a_4xx_that_names_the_problem(client, settings):
    deep = b'{"frames": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    for body, status, words in [
        (b'{"frames": NaN}', 422, "valid array"),
        (('{"frames": [%s]}' % _values(settings, "1e400")).encode(), 422, "finite"),
        (b'{"frames": [[\xff]]}', 400, "not valid JSON"),
        (deep, 400, "recursion limit"),
        (('{"frames": [%s], "method": 7}' % _values(settings)).encode(), 422, "method"),
    ]:
        r = client.post("/v1/predict", content=body, headers=JSON)
        assert r.status_code == status, (body[:40], r.text[:300])
        assert words in str(r.json()["detail"]), r.json()
    r = client.post("/v1/predict", content=b"[]", headers={"content-type": "text/csv"})
    assert r.status_code == 415


def test_predict_refuses_a_large_body_before_reading_it(client, settings):
    r = client.post("/v1/predict", content=b"x" * (settings.max_body_bytes + 1), headers=JSON)
    assert r.status_code == 413 and "exceeds the limit" in r.json()["detail"], r.text[:300]
    many = '{"frames": [%s]}' % ",".join([_values(settings)] * (settings.max_predict_frames + 1))
    r = client.post("/v1/predict", content=many.encode(), headers=JSON)
    assert r.status_code == 413, r.text[:200]
    assert f"at most {settings.max_predict_frames}" in r.json()["detail"] or "exceeds the limit" in r.json()["detail"]


def test_a_far_future_seq_is_refused_not_stored(client, settings, sync_redis):
    def post(stream, seq):
        return client.post(f"/v1/streams/{stream}/frames", content=('{"frames": [{"data": %s, "seq": %d}]}'
                                                                     % (_values(settings), seq)).encode(), headers=JSON)

    r = post("poison", 2**63 - 1)  # would make every later frame of the stream a "duplicate"
    assert r.status_code == 422 and "more than FFS_MAX_SEQ_JUMP" in r.json()["detail"]
    assert post("poison", 0).status_code == 202 and post("poison", 1).status_code == 202
    jump = settings.max_seq_jump
    assert post("poison", 1 + jump).status_code == 202  # exactly the allowed jump
    assert post("poison", 2 + 2 * jump).status_code == 422
    assert sync_redis.hget(f"{settings.key_prefix}:stream:poison", "seq_max") == str(1 + jump).encode()
