"""`ffstream up` supervises its processes: a dead child is restarted, and one that keeps dying
stops the system with a non-zero exit status (real processes, real redis-server)."""

import os
import signal
import time
from pathlib import Path

from service.probe import wait_until
from tests.service.up import ffstream_up


def _child(parent: int, role: str) -> int | None:
    """The pid of ``ffstream up``'s child running ``role``."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and cmd[-2:] == [role.encode(), b""]:
            return int(entry.name)
    return None


def test_a_killed_child_is_restarted_and_the_api_answers_again(tmp_path):
    with ffstream_up(tmp_path) as up:
        api = _child(up.proc.pid, "api")
        wake = _child(up.proc.pid, "wake")
        assert api and wake
        os.kill(api, signal.SIGKILL)
        os.kill(wake, signal.SIGKILL)
        assert wait_until(lambda: _child(up.proc.pid, "api") not in (None, api), 30)
        assert wait_until(lambda: _safe_ready(up.client), 60)
        assert _child(up.proc.pid, "wake") not in (None, wake)
        assert up.proc.poll() is None
        up.proc.send_signal(signal.SIGTERM)
        assert up.proc.wait(60) == 0
    assert "api exited with status -9; restarting in 1 s" in up.proc.stderr.read()


def _safe_ready(client) -> bool:
    try:
        return client.get("/readyz").status_code == 200
    except Exception:  # noqa: BLE001 (the API is restarting: not ready yet)
        return False


def test_a_child_that_keeps_dying_stops_the_system_with_status_1(tmp_path):
    with ffstream_up(tmp_path, FFS_RESTART_LIMIT="0") as up:
        os.kill(_child(up.proc.pid, "sleep"), signal.SIGKILL)
        started = time.monotonic()
        assert up.proc.wait(60) == 1
        assert time.monotonic() - started < 60
        assert "giving up" in up.proc.stderr.read()


def test_the_predict_role_answers_from_a_process_of_its_own(tmp_path):
    """FFS_PREDICT_PORT: `ffstream up` starts the predict role, which serves the same snapshot's
    predictions as the API (read-only routes only), and the client can send predictions there."""
    import httpx
    import numpy as np

    from service.client import Client
    from service.embedded import free_port

    port = free_port()
    with ffstream_up(tmp_path, FFS_PREDICT_PORT=str(port), FFS_INPUT_DIM="16") as up:
        role, api = _child(up.proc.pid, "predict"), _child(up.proc.pid, "api")
        assert role is not None and api is not None and role != api
        other = f"http://127.0.0.1:{port}"
        rng = np.random.default_rng(0)
        frames = rng.random((40, 16)).astype(np.float32)
        with Client(f"http://127.0.0.1:{up.ports['api']}", predict_url=other) as client, \
                httpx.Client(base_url=other, timeout=10) as direct_role:
            assert wait_until(lambda: _safe_ready(direct_role), 60)
            client.learn("cam", frames, rng.integers(0, 3, 40))
            assert wait_until(lambda: up.client.get("/v1/model").json()["frames_applied"] >= 40, 60)
            compared = False
            for _ in range(50):  # the same snapshot on both sides (the weights settle once learning stops)
                via_role = client.predict(frames[:4])
                direct = up.client.post("/v1/predict", json={"frames": frames[:4].tolist()}).json()
                if direct["model_version"] == via_role.model_version:
                    assert [p["label"] for p in direct["predictions"]] == [p.label for p in via_role.predictions]
                    np.testing.assert_allclose([p["probabilities"] for p in direct["predictions"]],
                                               [p.probabilities for p in via_role.predictions], rtol=1e-5)
                    compared = True
                    break
                time.sleep(0.2)
            assert compared, "the API and the predict role never served the same snapshot"
            # the predict role takes no frames and no admin writes: those stay on the API
            assert direct_role.post("/v1/streams/cam/frames", json={"frames": [[0.0] * 16]}).status_code == 404
            assert direct_role.post("/v1/checkpoint").status_code == 404
            assert direct_role.get("/v1/streams/cam").json()["frames_applied"] == 40
        up.proc.send_signal(signal.SIGTERM)
        assert up.proc.wait(60) == 0
