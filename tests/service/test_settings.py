import pytest
from pydantic import ValidationError

from service.settings import Settings


def test_defaults_are_valid_and_env_prefixed(monkeypatch):
    monkeypatch.setenv("FFS_WIDTHS", "[64, 32]")
    monkeypatch.setenv("FFS_PORT", "9001")
    s = Settings()
    assert s.widths == [64, 32] and s.port == 9001 and s.redis_url is None


@pytest.mark.parametrize("changes,message", [
    ({"widths": []}, "widths must be positive"),
    ({"widths": [0]}, "widths must be positive"),
    ({"port": 70000}, "less than or equal to 65535"),
    ({"damping": 1.0}, "less than 1"),
    ({"redis_socket_timeout_s": 0.1, "wake_block_ms": 200}, "must exceed wake_block_ms"),
    ({"redis_url": "http://x"}, "redis_url must start with"),
    ({"key_prefix": "bad prefix!"}, "should match pattern"),
    ({"unknown_option": 1}, "Extra inputs are not permitted"),
])
def test_settings_refuse_invalid_values(changes, message):
    with pytest.raises(ValidationError, match=message):
        Settings(**changes)


def test_worker_nice_lowers_only_the_workers_priority():
    # In a child process: niceness only ever goes up, and this one must not touch the test runner's.
    import subprocess
    import sys

    code = ("import os; from service.cli import _thread_budget; from service.settings import Settings; "
            "s = Settings(worker_nice=5); base = os.nice(0); _thread_budget(s); api = os.nice(0); "
            "_thread_budget(s, worker=True); print(api - base, os.nice(0) - base)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0", "5"]


def test_a_negative_worker_nice_raises_the_workers_priority_where_permitted():
    import os
    import shutil
    import subprocess
    import sys

    code = ("import os; from service.cli import _thread_budget; from service.settings import Settings; "
            "s = Settings(worker_nice=-3); base = os.nice(0); _thread_budget(s); api = os.nice(0); "
            "_thread_budget(s, worker=True); print(api - base, os.nice(0) - base)")
    if os.geteuid() == 0:  # root may raise a priority
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        assert out.stdout.split() == ["0", "-3"]
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        pytest.skip("needs util-linux's setpriv to run a child without CAP_SYS_NICE")
    # without CAP_SYS_NICE (util-linux's setpriv drops it from the bounding set: even root then
    # lacks it): reported, and the worker goes on at its priority
    prefix = ["setpriv", "--bounding-set=-sys_nice"] if os.geteuid() == 0 else []
    out = subprocess.run([*prefix, sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0", "0"]
    assert "needs CAP_SYS_NICE" in out.stderr


def test_a_step_of_fewer_frames_than_a_full_window_is_scaled_down():
    from service import model as model_io

    assert model_io.online_config(Settings(wake_window=37)).step_frames == 37  # ffcore.online.OnlineConfig
