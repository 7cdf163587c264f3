"""Faults against real processes: the wake worker SIGKILLed at random moments while streams post
(the long run, 20+ kills, is loadtests/faults.py; figures in docs/RELIABILITY.md)."""

from loadtests.fault_harness import kill_wake_run, redis_restart_run, sleep_kill_run
from tests.service.up import REPO


def test_no_accepted_frame_is_lost_or_applied_twice_across_wake_kills(redis_server, tmp_path):
    report = kill_wake_run(redis_server.url, tmp_path, kills=3, streams=3, seed=1, key_prefix="faults-kill",
                           cwd=REPO, log=lambda _: None)
    assert report.ok, report.problems
    assert report.kills == 3 and all(n > 0 for n in report.accepted.values())
    assert report.applied_redis == report.accepted == report.applied_checkpoint


def test_redis_restart_loses_no_accepted_frame_and_everything_recovers_by_itself(tmp_path):
    report = redis_restart_run(tmp_path, restarts=1, streams=2, cwd=REPO, log=lambda _: None)
    assert report.ok, report.problems
    assert report.down_answers and all(status == 503 for status, _ in report.down_answers)
    assert report.applied_redis == report.accepted and all(n > 0 for n in report.accepted.values())


def test_killing_the_sleep_worker_stops_only_sleep_and_a_restart_resumes_it(redis_server, tmp_path):
    out = sleep_kill_run(tmp_path, redis_server.url, cwd=REPO)
    assert out["cycles_before_kill"], out
    assert all(out[k] for k in ("status_shows_sleep_gone", "metric_shows_sleep_gone", "wake_kept_applying",
                                "predict_kept_answering", "restarted_sleep_resumed", "status_shows_sleep_back")), out
