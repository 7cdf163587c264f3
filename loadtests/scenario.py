"""Headless load sweep: starts the embedded service, runs the locust users at increasing
concurrency, and writes loadtests/RESULTS.md (and results.json) with throughput, latency,
errors and the server-side split of queue wait vs compute. Loopback only, bounded in time.

    python loadtests/scenario.py --users 5 9 17 33 49 --seconds 20

Each level runs one viewer and users-1 cameras, each camera its own stream at 25 frames/s.
A level counts as sustained when the wake worker keeps up: the lag at its end is at most two
seconds of applied frames (the requests in flight), not a queue that grows.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import shutil
import tempfile
import threading
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

HERE = Path(__file__).parent
REPO = HERE.parent


def scrape(url: str) -> dict[str, float]:
    """Unlabeled samples (and histogram sums/counts) of one /metrics page."""
    out = {}
    for family in text_string_to_metric_families(httpx.get(url, timeout=10).text):
        for s in family.samples:
            if not s.labels:
                out[s.name] = s.value
    return out


def locust_stats(prefix: Path) -> dict[str, dict]:
    rows = {}
    with open(f"{prefix}_stats.csv") as f:
        for row in csv.DictReader(f):
            rows[row["Name"]] = {"requests": int(row["Request Count"]), "failures": int(row["Failure Count"]),
                                 "rps": float(row["Requests/s"]), "p50_ms": float(row["50%"]),
                                 "p95_ms": float(row["95%"]), "p99_ms": float(row["99%"])}
    return rows


def sustained(end_lag: float, applied_rate: float) -> bool:
    return end_lag <= max(2 * applied_rate, 1.0)


def run_level(users: int, seconds: int, api: str, wake_metrics: str, workdir: Path) -> dict:
    before = scrape(wake_metrics)
    lags: list[float] = []
    done = threading.Event()

    def sample():
        while not done.is_set():
            lags.append(scrape(wake_metrics).get("ffstream_queue_lag_frames", 0.0))
            done.wait(1.0)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    prefix = workdir / f"u{users}"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "locust", "-f", str(HERE / "locustfile.py"), "--host", api, "--headless",
                    "-u", str(users), "-r", str(users), "-t", f"{seconds}s", "--csv", str(prefix), "--only-summary",
                    "--loglevel", "WARNING"], cwd=REPO, check=True, capture_output=True, timeout=seconds + 60)
    elapsed = time.perf_counter() - start
    done.set()
    sampler.join()
    after = scrape(wake_metrics)
    applied = after["ffstream_wake_frames_applied_total"] - before.get("ffstream_wake_frames_applied_total", 0)
    applied_rate = applied / elapsed

    def mean(name: str) -> float:
        n = after[f"{name}_count"] - before.get(f"{name}_count", 0)
        return (after[f"{name}_sum"] - before.get(f"{name}_sum", 0)) / n if n else float("nan")

    stats = locust_stats(prefix)
    total = stats.get("Aggregated", {"requests": 0, "failures": 0})
    end_lag = lags[-1] if lags else 0.0
    # Drain before the next level, so each starts from an empty queue.
    drain_start = time.perf_counter()
    while scrape(wake_metrics).get("ffstream_queue_lag_frames", 0.0) > 0 and time.perf_counter() - drain_start < 120:
        time.sleep(1)
    return {"users": users, "seconds": elapsed, "frames_applied_per_s": applied_rate,
            "lag_max_frames": max(lags, default=0.0), "lag_end_frames": end_lag,
            "sustained": sustained(end_lag, applied_rate),
            "queue_wait_mean_s": mean("ffstream_queue_wait_seconds"),
            "step_compute_mean_s": mean("ffstream_wake_update_duration_seconds"),
            "drain_s": time.perf_counter() - drain_start,
            "error_rate": total["failures"] / total["requests"] if total["requests"] else 0.0,
            "requests": {k: v for k, v in stats.items() if k != "Aggregated"}}


def write_report(levels: list[dict], command: str, hardware: str, path: Path) -> None:
    best = max((lv for lv in levels if lv["sustained"]), key=lambda lv: lv["frames_applied_per_s"], default=None)
    lines = ["# Load test results", "",
             f"`{command}` ({time.strftime('%Y-%m-%d')}, {hardware}; the embedded system with default settings, "
             "locust on the same machine, loopback).", ""]
    if best:
        ingest = best["requests"].get("ingest binary", {})
        predict = best["requests"].get("predict", {})
        lines += [f"**Highest sustained rate: {best['frames_applied_per_s']:.0f} frames/s** with {best['users']} users "
                  f"(lag at the end {best['lag_end_frames']:.0f} frames, largest {best['lag_max_frames']:.0f}); "
                  f"binary ingest p50/p95/p99 {ingest.get('p50_ms', 0):.0f}/{ingest.get('p95_ms', 0):.0f}/"
                  f"{ingest.get('p99_ms', 0):.0f} ms, predict p50/p99 {predict.get('p50_ms', 0):.0f}/"
                  f"{predict.get('p99_ms', 0):.0f} ms, error rate {100 * best['error_rate']:.2f}%.", ""]
    else:
        lines += ["No level was sustained (the lag grew at every level).", ""]
    lines += ["| users | frames/s applied | lag end / max (frames) | sustained | ingest bin p50/p95/p99 (ms) | "
              "ingest json p50/p99 (ms) | predict p50/p99 (ms) | errors | queue wait mean (s) | step compute mean (s) |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for lv in levels:
        r = lv["requests"]
        b, j, p = r.get("ingest binary", {}), r.get("ingest json", {}), r.get("predict", {})
        lines.append(
            f"| {lv['users']} | {lv['frames_applied_per_s']:.0f} | {lv['lag_end_frames']:.0f} / {lv['lag_max_frames']:.0f} "
            f"| {'yes' if lv['sustained'] else 'no'} | {b.get('p50_ms', 0):.0f}/{b.get('p95_ms', 0):.0f}/{b.get('p99_ms', 0):.0f} "
            f"| {j.get('p50_ms', 0):.0f}/{j.get('p99_ms', 0):.0f} | {p.get('p50_ms', 0):.0f}/{p.get('p99_ms', 0):.0f} "
            f"| {100 * lv['error_rate']:.2f}% | {lv['queue_wait_mean_s']:.3f} | {lv['step_compute_mean_s']:.4f} |")
    lines += ["", "Queue wait is the time from the 202 to the start of the frame's step; step compute is one "
              "synchronous step of every stream with a pending frame, with its updates (both from the wake "
              "worker's histograms). Raw numbers: [results.json](results.json).", ""]
    path.write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, nargs="+", default=[5, 9, 17, 33, 49],
                        help="users per level: one viewer plus cameras (25 frames/s each by default)")
    parser.add_argument("--seconds", type=int, default=20, help="duration of each level")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()

    from service.system import System
    from service.probe import wait_ready
    from service.embedded import free_port
    from service.settings import Settings

    workdir = Path(tempfile.mkdtemp(prefix="ffstream-load-"))
    ports = {"FFS_PORT": free_port(), "FFS_WAKE_METRICS_PORT": free_port(), "FFS_SLEEP_METRICS_PORT": free_port()}
    os.environ.update({k: str(v) for k, v in ports.items()})
    os.environ["FFS_CHECKPOINT_DIR"] = str(workdir / "system")
    settings = Settings()
    api = f"http://127.0.0.1:{settings.port}"
    wake_metrics = f"http://127.0.0.1:{settings.wake_metrics_port}/metrics"
    system = System(settings, env={"FFS_LOG_LEVEL": "WARNING"}).start()
    try:
        if not wait_ready(httpx.Client(base_url=api), 120):
            raise SystemExit(f"the system did not become ready: {system.failed() or 'timeout'}")
        levels = []
        for users in args.users:
            level = run_level(users, args.seconds, api, wake_metrics, workdir)
            print(f"{users:3d} users: {level['frames_applied_per_s']:.0f} frames/s applied, "
                  f"lag end {level['lag_end_frames']:.0f}, errors {100 * level['error_rate']:.2f}%", flush=True)
            levels.append(level)
    finally:
        system.stop()
        shutil.rmtree(workdir, ignore_errors=True)  # Redis's files, the checkpoints, locust's CSVs (read above)
    import torch

    hardware = f"{os.cpu_count()} CPU cores, torch {torch.__version__}, no GPU" if not torch.cuda.is_available() \
        else f"{torch.cuda.get_device_name()}"
    command = "python loadtests/scenario.py " + " ".join(sys.argv[1:])
    (args.out.parent / "results.json").write_text(json.dumps({"command": command, "levels": levels}, indent=2))
    write_report(levels, command.strip(), hardware, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
