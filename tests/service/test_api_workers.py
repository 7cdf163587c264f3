"""Several API processes behind one port: their metrics are merged (prometheus-client's
multiprocess mode), so /metrics counts every request whichever process served it."""

import os
import subprocess
import sys

import httpx
from prometheus_client.parser import text_string_to_metric_families

from service.codec import encode_frames
from service.probe import wait_until
from service.embedded import free_port
from tests.service.up import REPO


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=2).status_code == 200
    except httpx.TransportError:  # not listening yet
        return False


def test_metrics_of_several_api_workers_are_merged(redis_server, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "FFS_REDIS_URL": redis_server.url, "FFS_PORT": str(port), "FFS_API_WORKERS": "2",
           "FFS_KEY_PREFIX": "apiworkers", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "api"], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: _healthy(url), 60), "the API did not come up"
        body = encode_frames([[0.5] * 196] * 3, [1, 2, 3])
        for _ in range(40):  # a new connection each time: the two processes share the accepts
            r = httpx.post(url + "/v1/streams/w/frames", content=body, timeout=10,
                           headers={"content-type": "application/x-ffs-frames"})
            assert r.status_code == 202
        served_by = {p.name for p in tmp_path.glob("counter_*.db")}
        text = httpx.get(url + "/metrics", timeout=10).text
        samples = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples if not s.labels}
        assert samples["ffstream_frames_accepted_total"] == 120  # all of them, whichever process answers
        assert len(served_by) == 2, served_by  # both processes counted some
    finally:
        proc.terminate()
        proc.wait(30)


def test_the_metrics_folder_made_for_several_workers_is_removed_when_the_api_stops(redis_server, tmp_path):
    port = free_port()
    env = {**os.environ, "FFS_REDIS_URL": redis_server.url, "FFS_PORT": str(port), "FFS_API_WORKERS": "2",
           "FFS_KEY_PREFIX": "apiworkers2", "TMPDIR": str(tmp_path)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "api"], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: _healthy(f"http://127.0.0.1:{port}"), 60), "the API did not come up"
        assert len(list(tmp_path.glob("ffstream-metrics-*"))) == 1  # made for this API's processes
    finally:
        proc.terminate()
        proc.wait(30)
    assert not list(tmp_path.glob("ffstream-metrics-*"))
