"""The HTTP API against a real redis-server (requests go through the real ASGI app)."""

import math
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from service.api.app import create_app
from service.codec import encode_frames
from service.keys import WAKE_GROUP, Keys
from service.redis_io import FrameEntry, receive, sync_client
from service.wake import WakeWorker

BINARY = {"content-type": "application/x-ffs-frames"}


@pytest.fixture
def client(settings):
    with TestClient(create_app(settings)) as c:
        yield c


def _frame(settings, value=0.5, label=None):
    return {"data": [value] * settings.input_dim, "label": label}


def test_json_frames_are_stored_in_order_and_answered_202(client, settings, sync_redis):
    r = client.post("/v1/streams/cam-1/frames", json={"frames": [_frame(settings, 0.1, 3), _frame(settings, 0.2)]})
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["accepted"] == 2
    entries = sync_redis.xrange(f"{settings.key_prefix}:frames:0")
    assert [e[0].decode() for e in entries] == [body["entry"]]  # one entry per request, frames in order
    entry = FrameEntry.from_fields(entries[0][1], settings.input_dim)
    assert entry.stream == "cam-1" and entry.labels.tolist() == [3, -1] and entry.seqs.tolist() == [-1, -1]
    assert np.allclose(entry.frames[0], 0.1) and np.allclose(entry.frames[1], 0.2)
    stream = client.get("/v1/streams/cam-1").json()
    assert stream["frames_received"] == 2 and stream["frames_applied"] == 0 and stream["lag"] == 2


def test_binary_frames(client, settings):
    x = np.random.default_rng(0).random((4, settings.input_dim), dtype=np.float32)
    r = client.post("/v1/streams/s/frames", content=encode_frames(x, [0, 1, None, 9]), headers=BINARY)
    assert r.status_code == 202 and r.json()["accepted"] == 4


@pytest.mark.parametrize("payload,status,message", [
    ({"frames": [{"data": [0.5] * 3}]}, 422, "frame 0 has 3 values; the model takes exactly 196"),
    ({"frames": [{"data": [0.5] * 196, "label": 10}]}, 422, "frame 0 has label 10; labels are in [0, 9] or null"),
    ({"frames": [{"data": [0.5] * 196, "label": -3}]}, 422, "label -3"),
    ({"frames": []}, 422, "at least 1 item"),
    ({"frames": [{"data": ["x"] * 196}]}, 422, "valid number"),
    ({"nothing": 1}, 422, "Field required"),
])
def test_json_validation_errors_are_precise(client, payload, status, message):
    r = client.post("/v1/streams/s/frames", json=payload)
    assert r.status_code == status
    assert message in str(r.json()["detail"])


def test_non_finite_values_are_refused(client, settings):
    data = "[" + ",".join(["0.5"] * (settings.input_dim - 1) + ["NaN"]) + "]"
    r = client.post("/v1/streams/s/frames", content='{"frames": [{"data": %s}]}' % data,
                    headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert r.json()["detail"] == [{"loc": ["frames", 0, "data", settings.input_dim - 1],
                                   "msg": "Input should be a finite number", "type": "finite_number"}]
    x = np.zeros((2, settings.input_dim), np.float32)
    x[1, 5] = math.inf
    r = client.post("/v1/streams/s/frames", content=encode_frames(x), headers=BINARY)
    assert r.status_code == 422 and "frame 1 has non-finite values" in r.json()["detail"]


def test_size_limits(client, settings):
    too_many = {"frames": [_frame(settings)] * (settings.max_frames_per_request + 1)}
    r = client.post("/v1/streams/s/frames", json=too_many)
    assert r.status_code == 413 and "65 frames in one request; the limit is 64" in r.json()["detail"]
    big = encode_frames(np.zeros((300, settings.input_dim), np.float32))
    r = client.post("/v1/streams/s/frames", content=big, headers=BINARY)
    assert r.status_code == 413 and "exceeds the limit of 200000 bytes" in r.json()["detail"]


def test_bad_binary_body_and_content_type(client, settings):
    body = encode_frames(np.zeros((2, settings.input_dim), np.float32))
    r = client.post("/v1/streams/s/frames", content=body[:-3], headers=BINARY)
    assert r.status_code == 400 and "binary body" in r.json()["detail"] and "need" in r.json()["detail"]
    r = client.post("/v1/streams/s/frames", content=b"abc", headers={"content-type": "text/plain"})
    assert r.status_code == 415
    r = client.post("/v1/streams/s/frames", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["detail"]


def test_bad_stream_id_is_refused(client, settings):
    r = client.post("/v1/streams/bad id!/frames", json={"frames": [_frame(settings)]})
    assert r.status_code == 422 and "should match pattern" in str(r.json()["detail"])
    assert client.get("/v1/streams/" + "x" * 200).status_code == 422
    assert client.get("/v1/streams/never-posted").status_code == 404


def test_predict_readiness_and_model_status(client, settings):
    assert client.get("/healthz").json()["status"] == "ok"
    r = client.get("/readyz")
    assert r.status_code == 503 and "no model snapshot yet" in r.json()["problems"]
    assert client.post("/v1/predict", json={"frames": [[0.5] * settings.input_dim]}).status_code == 503
    worker = WakeWorker(settings, sync_client(settings))
    worker.setup()  # publishes snapshot 1
    worker.housekeeping()  # heartbeat
    assert client.get("/readyz").status_code == 200
    r = client.post("/v1/predict", json={"frames": [[0.5] * settings.input_dim] * 2})
    assert r.status_code == 200
    out = r.json()
    assert out["model_version"] == 1 and len(out["predictions"]) == 2 and out["method"] == "softmax"
    p = out["predictions"][0]
    assert len(p["probabilities"]) == 10 and abs(sum(p["probabilities"]) - 1) < 1e-5 and p["goodness"] is None
    assert p["label"] == int(np.argmax(p["probabilities"]))
    r = client.post("/v1/predict", json={"frames": [[0.5] * settings.input_dim], "method": "goodness"})
    out = r.json()
    p = out["predictions"][0]
    assert r.status_code == 200 and out["method"] == "goodness" and len(p["goodness"]) == 10
    assert p["label"] == int(np.argmax(p["goodness"]))  # the paper's classifier chose it
    assert client.post("/v1/predict", json={"frames": [[0.5] * 196], "method": "vote"}).status_code == 422
    assert client.post("/v1/predict", json={"frames": [[0.5] * 3]}).status_code == 422
    assert client.post("/v1/predict", json={"frames": [[0.5] * 196], "stream_id": "none"}).status_code == 404
    model = client.get("/v1/model").json()
    assert model["version"] == 1 and model["config"]["widths"] == [32, 32] and model["sleep"]["paused"] is False
    listener = sync_client(settings).pubsub()  # hears what the sleep worker hears
    listener.subscribe(Keys(settings.key_prefix).dreams)
    for path in ("/v1/sleep/pause", "/v1/sleep/resume", "/v1/sleep/trigger"):  # each rings the sleep worker
        assert client.post(path).status_code in (200, 202)
        assert receive(listener, 2.0) == [b""]  # a ring: an empty message
        if path.endswith("pause"):
            assert client.get("/v1/model").json()["sleep"]["paused"] is True
    assert client.post("/v1/checkpoint").status_code == 202



def _samples(text: str) -> dict:
    """{(name, sorted label items): value} from a Prometheus exposition."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_count_frames_rejections_and_request_durations(client, settings, sync_redis):
    good = client.post("/v1/streams/cam-1/frames", json={"frames": [_frame(settings), _frame(settings, label=2)]})
    assert good.status_code == 202
    assert client.post("/v1/streams/cam-1/frames", json={"frames": [_frame(settings, label=99)]}).status_code == 422
    assert client.post("/v1/streams/cam-1/frames", content=b"junk", headers=BINARY).status_code == 400
    m = _samples(client.get("/metrics").text)
    assert m[("ffstream_frames_accepted_total", ())] == 2
    assert m[("ffstream_frames_received_total", ())] == 3  # the out-of-range label was decoded, then refused
    assert m[("ffstream_ingest_requests_rejected_total", (("reason", "bad_label"),))] == 1
    assert m[("ffstream_ingest_requests_rejected_total", (("reason", "bad_body"),))] == 1
    assert m[("ffstream_ingest_requests_rejected_total", (("reason", "non_finite"),))] == 0
    assert m[("ffstream_ingest_body_bytes_count", ())] == 3
    route = "/v1/streams/{stream_id}/frames"  # the template: a stream id is never a label
    assert m[("ffstream_http_request_duration_seconds_count",
              (("method", "POST"), ("route", route), ("status", "202")))] == 1
    assert m[("ffstream_http_request_duration_seconds_count",
              (("method", "POST"), ("route", route), ("status", "422")))] == 1
    assert not any("cam-1" in str(labels) for _, labels in m)
    assert m[("ffstream_process_resident_memory_bytes", ())] > 0
    assert sync_redis.xlen(f"{settings.key_prefix}:frames:0") == 1  # one entry for the good request; refused requests stored nothing


def test_redis_down_answers_503_quickly(settings):
    from service.settings import Settings

    dead = Settings(**{**settings.model_dump(), "redis_url": "redis://127.0.0.1:1/0"})
    with TestClient(create_app(dead)) as c:
        r = c.post("/v1/streams/s/frames", json={"frames": [{"data": [0.5] * 196}]})
        assert r.status_code == 503 and "redis unavailable" in r.json()["detail"]
        assert r.headers["retry-after"] == "1"
        assert c.get("/readyz").status_code == 503


def test_no_pickle_in_any_redis_payload(client, settings, sync_redis):
    client.post("/v1/streams/s/frames", json={"frames": [_frame(settings, 0.3, 1)] * 5})
    from service.sleep import SleepWorker

    worker = WakeWorker(settings, sync_client(settings))
    worker.setup()
    worker.poll(pending=False)
    sleep = SleepWorker(settings, sync_client(settings))
    sleep.listen()
    worker.positive_step()  # sends the dream: the sample and the weights the step makes
    assert sleep.receive(timeout=2.0) == 1 and sleep.cycle() == 5
    values = [sleep.latest.to_bytes()]  # the messages between the workers, too
    values += receive(worker.subscription, 2.0)
    assert len(values) == 2
    for key in sync_redis.scan_iter(f"{settings.key_prefix}:*"):
        kind = sync_redis.type(key)
        if kind == b"string":
            values.append(sync_redis.get(key))
        elif kind == b"hash":
            values.extend(sync_redis.hgetall(key).values())
        elif kind == b"stream":
            values.extend(v for _, fields in sync_redis.xrange(key) for v in fields.values())
    assert len(values) > 10
    for v in values:
        assert not v.startswith(b"\x80"), "a pickle protocol header in Redis"
        assert b"torch._utils" not in v and b"cnumpy" not in v
    assert sync_redis.xinfo_groups(f"{settings.key_prefix}:frames:0")[0]["name"].decode() == WAKE_GROUP


KEY = "k" * 16 + "-first"


def _client_with(settings, **changes):
    return TestClient(create_app(settings.model_copy(update=changes)))


def test_writes_need_a_valid_key_compared_in_constant_time(settings, sync_redis, caplog):
    from pydantic import SecretStr

    keys = [SecretStr(KEY), SecretStr("s" * 16 + "-second")]
    url = "/v1/streams/cam-1/frames"
    body = {"frames": [_frame(settings, 0.5, 1)]}
    with _client_with(settings, api_keys=keys) as c:
        r = c.post(url, json=body)
        assert r.status_code == 401 and "API key is required" in r.json()["detail"]
        assert r.headers["www-authenticate"] == "Bearer"
        assert c.post(url, json=body, headers={"X-API-Key": "wrong" * 4}).status_code == 403
        assert c.post(url, json=body, headers={"X-API-Key": KEY}).status_code == 202
        assert c.post(url, json=body, headers={"Authorization": "Bearer " + "s" * 16 + "-second"}).status_code == 202
        for path in ("/v1/sleep/pause", "/v1/sleep/resume", "/v1/sleep/trigger", "/v1/checkpoint"):
            assert c.post(path).status_code == 401, path
            assert c.post(path, headers={"X-API-Key": KEY}).status_code in (200, 202), path
        assert c.post("/v1/predict", json={"frames": [[0.5] * 196]}).status_code != 401  # predict is open by default
        m = _samples(c.get("/metrics").text)
        assert m[("ffstream_ingest_requests_rejected_total", (("reason", "unauthorized"),))] == 1
        assert m[("ffstream_ingest_requests_rejected_total", (("reason", "forbidden"),))] == 1
    with _client_with(settings, api_keys=keys, predict_requires_key=True) as c:
        assert c.post("/v1/predict", json={"frames": [[0.5] * 196]}).status_code == 401
    assert sync_redis.xlen(f"{settings.key_prefix}:frames:0") == 2  # only the two authorized requests
    assert KEY not in repr(settings.model_copy(update={"api_keys": keys})) and KEY not in caplog.text


def test_short_keys_are_refused_at_start_up():
    from pydantic import ValidationError

    from service.settings import Settings

    with pytest.raises(ValidationError, match="at least 16 characters"):
        Settings(api_keys=["short"])


def test_stream_count_and_per_stream_rate_limits_answer_429(settings, sync_redis):
    with _client_with(settings, max_streams=2, max_stream_fps=5) as c:
        assert c.post("/v1/streams/a/frames", json={"frames": [_frame(settings)] * 4}).status_code == 202
        assert c.post("/v1/streams/b/frames", json={"frames": [_frame(settings)]}).status_code == 202
        r = c.post("/v1/streams/c/frames", json={"frames": [_frame(settings)]})
        assert r.status_code == 429 and "2 active streams" in r.json()["detail"]
        assert c.post("/v1/streams/a/frames", json={"frames": [_frame(settings)]}).status_code in (202, 429)
        r = c.post("/v1/streams/a/frames", json={"frames": [_frame(settings)] * 4})
        assert r.status_code == 429 and r.headers["retry-after"] == "1" and "frames/s" in r.json()["detail"]
        m = _samples(c.get("/metrics").text)
        assert m[("ffstream_ingest_requests_rejected_total", (("reason", "too_many_streams"),))] == 1
        assert m[("ffstream_ingest_requests_rejected_total", (("reason", "rate_limited"),))] >= 1
    assert sync_redis.zcard(f"{settings.key_prefix}:streams:active") == 2


def test_an_idle_stream_frees_its_place_under_the_stream_limit(settings, sync_redis):
    with _client_with(settings, max_streams=2, stream_idle_s=0.5) as c:
        for s in ("a", "b"):
            assert c.post(f"/v1/streams/{s}/frames", json={"frames": [_frame(settings)]}).status_code == 202
        assert c.post("/v1/streams/c/frames", json={"frames": [_frame(settings)]}).status_code == 429
        time.sleep(0.6)  # a and b are now idle: their ids no longer count
        assert c.post("/v1/streams/c/frames", json={"frames": [_frame(settings)]}).status_code == 202
        assert c.post("/v1/streams/a/frames", json={"frames": [_frame(settings)]}).status_code == 202
        assert c.post("/v1/streams/b/frames", json={"frames": [_frame(settings)]}).status_code == 429
    assert sorted(sync_redis.zrange(f"{settings.key_prefix}:streams:active", 0, -1)) == [b"a", b"c"]


def test_the_stream_limit_is_exact_under_concurrent_new_streams(settings):
    import concurrent.futures

    import httpx
    from tests.service.up import serve_app

    with serve_app(settings.model_copy(update={"max_streams": 5})) as base, httpx.Client(base_url=base) as c, \
            concurrent.futures.ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(lambda i: c.post(f"/v1/streams/n{i}/frames",
                                               json={"frames": [_frame(settings)]}).status_code, range(40)))
    assert codes.count(202) == 5 and codes.count(429) == 35


def test_ingest_answers_503_with_retry_after_when_the_learner_is_too_far_behind(settings, sync_redis):
    sync_redis.hset(f"{settings.key_prefix}:model", mapping={"frames_received": 1000, "frames_applied": 100})
    with _client_with(settings, max_queue_lag_frames=500) as c:
        r = c.post("/v1/streams/a/frames", json={"frames": [_frame(settings)]})
        assert r.status_code == 503 and r.headers["retry-after"] == "2" and "900 frames behind" in r.json()["detail"]
    assert sync_redis.xlen(f"{settings.key_prefix}:frames:0") == 0  # nothing stored, nothing to lose
    sync_redis.hset(f"{settings.key_prefix}:model", "frames_applied", 1000)
    with _client_with(settings, max_queue_lag_frames=500) as c:
        assert c.post("/v1/streams/a/frames", json={"frames": [_frame(settings)]}).status_code == 202


def test_a_burst_larger_than_the_redis_pool_waits_for_connections_instead_of_failing(settings):
    import concurrent.futures

    import httpx
    from tests.service.up import serve_app

    small = settings.model_copy(update={"redis_max_connections": 3, "max_stream_fps": 1e6})
    with serve_app(small) as base, httpx.Client(base_url=base, timeout=30,
                                                limits=httpx.Limits(max_connections=64)) as c, \
            concurrent.futures.ThreadPoolExecutor(48) as pool:
        codes = list(pool.map(lambda i: c.post(f"/v1/streams/s{i % 8}/frames",
                                               json={"frames": [_frame(settings)]}).status_code, range(240)))
    assert codes == [202] * 240


def test_learn_fast_marks_the_entry_and_is_validated(client, settings, sync_redis):
    r = client.post("/v1/streams/s/frames?learn=fast", json={"frames": [_frame(settings, 0.2, 4), _frame(settings)]})
    assert r.status_code == 202, r.text
    entry = FrameEntry.from_fields(sync_redis.xrange(f"{settings.key_prefix}:frames:0")[-1][1], settings.input_dim)
    assert entry.fast and entry.labels.tolist() == [4, -1]
    r = client.post("/v1/streams/s/frames", json={"frames": [_frame(settings, 0.2, 4)]})
    last = FrameEntry.from_fields(sync_redis.xrange(f"{settings.key_prefix}:frames:0")[-1][1], settings.input_dim)
    assert r.status_code == 202 and not last.fast  # online is the default
    r = client.post("/v1/streams/s/frames?learn=fast", json={"frames": [_frame(settings)]})
    assert r.status_code == 422 and "these frames have no labels" in r.text
    r = client.post("/v1/streams/s/frames?learn=slow", json={"frames": [_frame(settings, 0.2, 4)]})
    assert r.status_code == 422 and "online" in r.text and "fast" in r.text
    assert client.get("/v1/model").json()["fast_corrections"] == 0


def test_the_predict_role_serves_only_the_read_routes(settings):
    paths = create_app(settings, role="predict").openapi()["paths"]
    assert set(paths) == {"/v1/predict", "/v1/streams/{stream_id}", "/v1/model", "/healthz", "/readyz"}
    assert list(paths["/v1/streams/{stream_id}"]) == ["get"] and list(paths["/v1/model"]) == ["get"]
    full = create_app(settings).openapi()["paths"]
    assert set(paths) < set(full) and "/v1/streams/{stream_id}/frames" in full
    with pytest.raises(ValueError, match="unknown API role 'ingest'"):
        create_app(settings, role="ingest")


def test_the_predict_command_needs_its_port():
    from typer.testing import CliRunner

    from service.cli import app

    result = CliRunner().invoke(app, ["predict"], env={"FFS_PREDICT_PORT": "0"})
    assert result.exit_code == 2
    assert "FFS_PREDICT_PORT" in result.output
