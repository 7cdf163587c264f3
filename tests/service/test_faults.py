"""Faults against real processes: the wake worker SIGKILLed at random moments while streams post
(the long run, 20+ kills, is loadtests/faults.py; figures in docs/RELIABILITY.md)."""

from service.faults import kill_wake_run
from tests.service.up import REPO


def test_no_accepted_frame_is_lost_or_applied_twice_across_wake_kills(redis_server, tmp_path):
    report = kill_wake_run(redis_server.url, tmp_path, kills=3, streams=3, seed=1, key_prefix="faults-kill",
                           cwd=REPO, log=lambda _: None)
    assert report.ok, report.problems
    assert report.kills == 3 and all(n > 0 for n in report.accepted.values())
    assert report.applied_redis == report.accepted == report.applied_checkpoint
