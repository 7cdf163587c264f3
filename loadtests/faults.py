"""The long fault run: SIGKILL the wake worker at random moments while streams post, many times,
then check every accepted frame was applied exactly once. Prints a JSON report.

    python loadtests/faults.py --kills 20 --out docs/faults_kill_wake.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

from service.embedded import EmbeddedRedis
from service.faults import kill_wake_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("docs/faults_kill_wake.json"))
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="ffstream-faults-"))
    redis = EmbeddedRedis(workdir / "redis").start()
    try:
        report = kill_wake_run(redis.url, workdir / "system", kills=args.kills, streams=args.streams, seed=args.seed)
    finally:
        redis.stop()
    result = {"date": time.strftime("%Y-%m-%d"), "command": f"python loadtests/faults.py --kills {args.kills} "
              f"--streams {args.streams} --seed {args.seed}", **dataclasses.asdict(report), "ok": report.ok}
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    raise SystemExit(0 if report.ok else 1)


if __name__ == "__main__":
    main()
