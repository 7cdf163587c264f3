"""A real Prometheus scraping a real `ffstream up` with frames flowing: every PromQL expression
of every Grafana panel must evaluate without error and return data. Also promtool's checks of
the shipped config and of every role's exposition. Needs the `prometheus` and `promtool`
binaries (Debian's `prometheus` package; `.ci/run` installs it); skipped without them."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time

import httpx
import pytest
import yaml

from service.codec import encode_frames
from service.demo import synthetic_video
from service.embedded import free_port
from tests.service.up import REPO, ffstream_up

DEPLOY = REPO / "deploy"
pytestmark = pytest.mark.skipif(not (shutil.which("prometheus") and shutil.which("promtool")),
                                reason="needs prometheus and promtool on PATH (Debian package `prometheus`)")


def panel_expressions() -> list[tuple[str, str, str]]:
    """(dashboard, panel, expr) for every target of every committed dashboard."""
    out = []
    for path in sorted((DEPLOY / "grafana" / "dashboards").glob("*.json")):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            out += [(board["title"], panel["title"], t["expr"]) for t in panel["targets"]]
    return out


def test_promtool_accepts_the_shipped_config():
    r = subprocess.run(["promtool", "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout + r.stderr


def _local_config(ports: dict[str, int]) -> dict:
    """The shipped config, its jobs pointed at this machine's ports, scraping every second."""
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [f"127.0.0.1:{ports[job['job_name']]}"]}]
    return config


def _post_frames(client: httpx.Client, stop: threading.Event) -> None:
    x, y = synthetic_video(4000, seed=3)
    i = 0
    while not stop.is_set():
        body = encode_frames(x[i % 4000 : i % 4000 + 20], y[i % 4000 : i % 4000 + 20].tolist())
        client.post(f"/v1/streams/cam-{i % 3}/frames", content=body,
                    headers={"content-type": "application/x-ffs-frames"})
        client.post("/v1/streams/cam-0/frames", json={"frames": [{"data": [0.0] * 3}]})  # a 422, counted
        i += 20
        time.sleep(0.05)


def test_every_dashboard_panel_returns_data_from_a_real_prometheus(tmp_path):
    with ffstream_up(tmp_path / "system", FFS_CHECKPOINT_EVERY_S="2", FFS_PREDICT_PORT=str(free_port())) as up:
        for role in ("api", "predict", "wake", "sleep"):  # promtool lints each role's exposition
            text = httpx.get(f"http://127.0.0.1:{up.ports[role]}/metrics").text
            r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True,
                               check=False)
            assert r.returncode == 0, f"{role}: {r.stdout}{r.stderr}"

        config = tmp_path / "prometheus.yml"
        config.write_text(yaml.safe_dump(_local_config(up.ports)))
        port = free_port()
        prometheus = subprocess.Popen(
            ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        stop = threading.Event()
        poster = threading.Thread(target=_post_frames, args=(up.client, stop), daemon=True)
        poster.start()
        api = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
        try:
            deadline = time.monotonic() + 90
            failures = panel_expressions()
            while failures and time.monotonic() < deadline:
                time.sleep(2)
                failures = [f for f in failures if _problem(api, f[2])]
            assert not failures, "panels without data or with errors:\n" + "\n".join(
                f"{d} / {p}: {e} -> {_problem(api, e)}" for d, p, e in failures)
            targets = api.get("/api/v1/targets").json()["data"]["activeTargets"]
            assert sorted(t["labels"]["job"] for t in targets if t["health"] == "up") == ["api", "predict", "sleep", "wake"]
        finally:
            stop.set()
            poster.join(10)
            api.close()
            prometheus.terminate()
            prometheus.wait(30)


def _problem(api: httpx.Client, expr: str) -> str | None:
    """Why ``expr`` (with Grafana's rate interval filled in) fails, or None if it returns data."""
    try:
        r = api.get("/api/v1/query", params={"query": expr.replace("$__rate_interval", "15s")})
    except httpx.TransportError as e:
        return f"prometheus unreachable: {e}"
    body = r.json()
    if body.get("status") != "success":
        return f"error: {body.get('error')}"
    if not body["data"]["result"]:
        return "no data"
    return None
