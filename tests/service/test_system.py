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
