"""The long fault runs. `kill-wake`: SIGKILL the wake worker at random moments while streams post,
many times, then check every accepted frame was applied exactly once. `restart-redis`: stop and
start the Redis under a running system several times (AOF), checking no accepted frame is lost,
the API answers 503 quickly meanwhile and everything recovers by itself. Prints a JSON report.

    python loadtests/faults.py kill-wake --kills 20 --out docs/faults_kill_wake.json
    python loadtests/faults.py restart-redis --restarts 5 --out docs/faults_restart_redis.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

from fault_harness import kill_wake_run, redis_restart_run  # beside this script

from service.embedded import EmbeddedRedis


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("fault", choices=["kill-wake", "restart-redis"])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--restarts", type=int, default=5)
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("docs/faults_kill_wake.json"))
    args = parser.parse_args()
    # Redis's files and the checkpoints: removed when done, whatever happens
    with tempfile.TemporaryDirectory(prefix="ffstream-faults-", ignore_cleanup_errors=True) as workdir:
        run(args, Path(workdir))


def run(args, workdir: Path) -> None:
    """The fault run asked for, in ``workdir``; writes ``args.out`` and exits with its verdict."""
    if args.fault == "restart-redis":
        outage = redis_restart_run(workdir, restarts=args.restarts, streams=args.streams)
        seconds = [t for _, t in outage.down_answers]
        result = {"date": time.strftime("%Y-%m-%d"), "command": f"python loadtests/faults.py restart-redis "
                  f"--restarts {args.restarts} --streams {args.streams}", "restarts": args.restarts,
                  "accepted": outage.accepted, "applied_redis": outage.applied_redis,
                  "duplicates_skipped": outage.duplicates,
                  "answers_while_down": sorted({s for s, _ in outage.down_answers}),
                  "requests_while_down": len(outage.down_answers), "slowest_answer_while_down_s": max(seconds),
                  "refused_and_retried": outage.refused, "sleep_cycles_after": outage.sleep_cycles_after,
                  "problems": outage.problems, "ok": outage.ok}
        args.out.write_text(json.dumps(result, indent=2))
        print(json.dumps(result, indent=2))
        raise SystemExit(0 if outage.ok else 1)
    redis = EmbeddedRedis(workdir / "redis").start()
    try:
        report = kill_wake_run(redis.url, workdir / "system", kills=args.kills, streams=args.streams, seed=args.seed)
    finally:
        redis.stop()
    result = {"date": time.strftime("%Y-%m-%d"), "command": f"python loadtests/faults.py kill-wake --kills {args.kills} "
              f"--streams {args.streams} --seed {args.seed}", **dataclasses.asdict(report), "ok": report.ok}
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    raise SystemExit(0 if report.ok else 1)


if __name__ == "__main__":
    main()
