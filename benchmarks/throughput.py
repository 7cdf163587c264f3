"""End-to-end throughput of the embedded service on this machine, with the ceiling of its parts.

Starts ``ffstream up`` (default settings, 784-value frames), then in one run:
  1. each load (``streams`` x ``frames per request``, uint8 binary bodies, one process per
     stream posting back to back over a keep-alive connection (``--client raw``: a request built
     once, so the generator takes little of the cores it shares with the service; ``httpx``
     costs about 1.8 ms of CPU a request), each stream a camera that holds back while the lag is
     above ``--max-lag``, so the lag stays bounded): frames/s applied over ``seconds``,
     the lag over time, 202-to-step latency (the wake worker's queue-wait histogram), the
     wake/sleep rhythm (frames per positive step, the round trip to the sleep worker, the share
     of the time the wake worker waited at FFS_WAKE_WINDOW_MAX), predict
     p50/p99 at 20 single-frame requests/s while the ingest runs (``--predict-via both``: each
     load twice, predictions answered by the API process, then by the predict role,
     FFS_PREDICT_PORT), CPU per process (the load generator's too);
  2. ingest alone, last: the wake worker paused (SIGSTOP), 4 posters of 256-frame requests at
     full rate for up to 8 s: frames/s accepted;
  3. the model step alone, in-process: frames/s of ``OnlineLearner.learn_step`` (with the
     positive steps and the negatives of its rhythm) at the same number of streams per step.
Writes JSON. A load is "sustained" when the lag did not grow: its least-squares trend, times the
run's length, is less than ``--max-lag``. (The lag swings around ``--max-lag`` by a few
thousand frames even so, more with large requests: the sources hold back on a reading up to
0.1 s old, each may have a request in flight, and the wake worker counts a poll of
FFS_WAKE_READ_COUNT frames as applied at once; ``lag_max`` reports the swing.)

    python benchmarks/throughput.py --seconds 60 --out docs/throughput.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).parents[1]
sys.path.insert(0, str(REPO))

from service.codec import encode_frames  # noqa: E402
from service.probe import wait_ready  # noqa: E402
from service.embedded import free_port  # noqa: E402

DIM = 784


class RawPost:
    """The posters' HTTP/1.1 client: one keep-alive socket and one request built once, so the load
    generator's share of the cores goes on little more than its system calls. (httpx, the other
    ``--client``, spends about 1.8 ms of CPU per request here: with 16 posters on the same 2
    cores, that is CPU the service under test does not get.) Returns (status, headers, body)."""

    def __init__(self, base: str, path: str, body: bytes, content_type: str):
        url = httpx.URL(base)
        self.address = (url.host, url.port)
        self.request = (f"POST {path} HTTP/1.1\r\nhost: {url.host}\r\ncontent-type: {content_type}\r\n"
                        f"content-length: {len(body)}\r\n\r\n").encode() + body
        self.sock: socket.socket | None = None

    def __call__(self) -> tuple[int, dict[str, str], bytes]:
        for attempt in (0, 1):  # a keep-alive connection the server closed: once more on a new one
            if self.sock is None:
                self.sock = socket.create_connection(self.address, timeout=30)
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                self.sock.sendall(self.request)
                return self._response()
            except (ConnectionError, EOFError):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _response(self) -> tuple[int, dict[str, str], bytes]:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("the server closed the connection")
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("the server closed the connection")
            body += chunk
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, headers, body

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def poster(base: str, stream: str, batch: int, stop_at: float, counter, seed: int, lag=None, max_lag: int = 0,
           client: str = "raw") -> None:
    """Post uint8 frames (labels 0-9) back to back until ``stop_at``, holding back while the
    service's lag (``lag``, kept fresh by the monitor) is above ``max_lag``: a source that keeps
    up with the learner, so the rate measured is the rate it sustains. Counts accepted frames.
    ``client``: ``raw`` (:class:`RawPost`) or ``httpx``."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (batch, DIM), dtype=np.uint8)
    labels = rng.integers(0, 10, batch).tolist()
    body = encode_frames(frames, labels, dtype=2)
    path, content_type = f"/v1/streams/{stream}/frames", "application/x-ffs-frames"
    if client == "raw":
        post = RawPost(base, path, body, content_type)
        close = post.close
    else:
        http = httpx.Client(base_url=base, timeout=30)
        close = http.close

        def post():
            r = http.post(path, content=body, headers={"content-type": content_type})
            return r.status_code, r.headers, r.content
    try:
        while time.time() < stop_at:
            if lag is not None and lag.value > max_lag:
                time.sleep(0.005)
                continue
            status, headers, text = post()
            if status == 202:
                with counter.get_lock():
                    counter.value += batch
            elif status in (429, 503):  # backpressure: wait as a client should
                time.sleep(float(headers.get("retry-after", "0.1")) / 10)
            else:
                raise RuntimeError(f"{status}: {text[:200]!r}")
    finally:
        close()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> dict[str, int]:
    """Role -> pid of ffstream up's children (api, predict, wake, sleep) and its redis-server."""
    out = {}
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text()
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) != pid:
            continue
        for role in ("api", "predict", "wake", "sleep"):
            if cmd.strip().endswith(f"service.cli {role}"):
                out[role] = int(p.name)
        if "redis-server" in cmd:
            out["redis"] = int(p.name)
    return out


def histogram_quantile(text: str, name: str, q: float, having: str = "") -> float | None:
    """Upper bound of the bucket holding quantile ``q`` of a Prometheus histogram (its series
    whose labels contain ``having``)."""
    buckets = []
    for line in text.splitlines():
        if line.startswith(f"{name}_bucket{{") and having in line:
            le = line.split('le="')[1].split('"')[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), float(line.rsplit(" ", 1)[1])))
    if not buckets or buckets[-1][1] == 0:
        return None
    total = buckets[-1][1]
    return next(le for le, c in buckets if c >= q * total)


def histogram_diff(after: str, before: str, name: str, q: float, having: str = "") -> float | None:
    def parse(text):
        return {line.split(" ")[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                if line.startswith(f"{name}_bucket{{")}
    a, b = parse(after), parse(before)
    diff = "\n".join(f"{k} {a[k] - b.get(k, 0.0)}" for k in a)
    return histogram_quantile(diff, name, q, having)


def sample_diff(after: str, before: str, name: str) -> float:
    """The change of one unlabeled sample (a counter, a histogram's _sum or _count) between two scrapes."""
    def value(text):
        return next((float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.split(" ")[0] == name), 0.0)
    return value(after) - value(before)


def rhythm(after: str, before: str, elapsed: float) -> dict:
    """The wake/sleep rhythm under a load, from the wake worker's metrics: frames per positive step,
    the round trip from a dream to its negatives, the share of the time spent waiting at the cap."""
    steps = sample_diff(after, before, "ffstream_positive_step_frames_count")
    answers = sample_diff(after, before, "ffstream_negative_round_trip_seconds_count")
    out = {"frames_per_step_mean": round(sample_diff(after, before, "ffstream_positive_step_frames_sum") / steps, 1)
           if steps else None,
           "frames_per_step_p99_at_most": histogram_diff(after, before, "ffstream_positive_step_frames", 0.99),
           "round_trip_mean_ms": round(1000 * sample_diff(after, before, "ffstream_negative_round_trip_seconds_sum")
                                       / answers, 1) if answers else None,
           "waiting_at_cap_share": round(sample_diff(after, before, "ffstream_wake_negative_wait_seconds_total")
                                         / elapsed, 3)}
    for q in (0.5, 0.99):
        bound = histogram_diff(after, before, "ffstream_negative_round_trip_seconds", q)
        out[f"round_trip_p{int(q * 100)}_ms_at_most"] = None if bound is None else round(1000 * bound, 1)
    return out


def run_load(base: str, wake_metrics: str, pids: dict, *, streams: int, batch: int, seconds: float,
             predict_rps: float, tag: str, max_lag: int, predict_base: str | None = None,
             client_kind: str = "raw") -> dict:
    client = httpx.Client(base_url=base, timeout=30)
    model0 = client.get("/v1/model").json()
    metrics0 = httpx.get(wake_metrics).text
    served_by = predict_base or base  # the process that answers the viewer's predictions
    api0 = httpx.get(f"{served_by}/metrics").text
    cpu0 = {role: cpu_seconds(pid) for role, pid in pids.items()}
    gen0 = os.times()
    counter, lag = mp.Value("q", 0), mp.Value("q", 0)
    start = time.time()
    stop_at = start + seconds
    procs = [mp.Process(target=poster, args=(base, f"{tag}-{s}", batch, stop_at, counter, s, lag, max_lag, client_kind))
             for s in range(streams)]
    for p in procs:
        p.start()
    latencies, lags = [], []

    def predict_loop():
        frame = {"frames": [[0.5] * DIM]}
        with httpx.Client(base_url=predict_base or base, timeout=30) as c:
            while time.time() < stop_at:
                t = time.perf_counter()
                r = c.post("/v1/predict", json=frame)
                if r.status_code == 200:
                    latencies.append(time.perf_counter() - t)
                time.sleep(max(0.0, 1.0 / predict_rps - (time.perf_counter() - t)))

    viewer = threading.Thread(target=predict_loop, daemon=True)
    if predict_rps:
        viewer.start()
    next_sample = start + 1.0
    while time.time() < stop_at:
        time.sleep(0.1)
        m = client.get("/v1/model").json()
        lag.value = m["lag"]
        if time.time() >= next_sample:
            next_sample += 1.0
            lags.append({"t": round(time.time() - start, 1), "lag": m["lag"], "applied": m["frames_applied"]})
    for p in procs:
        p.join()
    if predict_rps:
        viewer.join()
    elapsed = time.time() - start
    model1 = client.get("/v1/model").json()
    metrics1 = httpx.get(wake_metrics).text
    api1 = httpx.get(f"{served_by}/metrics").text
    cpu = {role: round((cpu_seconds(pid) - cpu0[role]) / elapsed, 2) for role, pid in pids.items()}
    gen1 = os.times()  # the load generator: its posting processes (joined) and this process
    cpu["load_generator"] = round((gen1.children_user + gen1.children_system + gen1.user + gen1.system
                                   - gen0.children_user - gen0.children_system - gen0.user - gen0.system) / elapsed, 2)
    applied = model1["frames_applied"] - model0["frames_applied"]
    # frames/s applied over the middle of the run (the first and last second are ramps)
    mid = lags[1:-1] if len(lags) > 3 else lags
    rate = (mid[-1]["applied"] - mid[0]["applied"]) / (mid[-1]["t"] - mid[0]["t"]) if len(mid) > 1 else applied / elapsed
    trend = lag_trend(lags)
    out = {"streams": streams, "frames_per_request": batch, "seconds": round(elapsed, 1), "client": client_kind,
           "predict_served_by": "the predict role" if predict_base else "the API process",
           "accepted_per_s": round(counter.value / elapsed), "applied_per_s": round(rate),
           "lag_end": lags[-1]["lag"] if lags else None, "lag_max": max((x["lag"] for x in lags), default=None),
           "max_lag_allowed": max_lag, "lag_trend_per_s": round(trend, 1),
           "sustained": bool(lags) and trend * elapsed < max_lag,
           "lag_over_time": lags,
           # the learning's rhythm under this load: a positive step and its negatives, or one without
           **{k: model1[k] - model0[k] for k in ("positive_steps", "negatives_applied", "negatives_missed")},
           "queue_wait_p50_s": histogram_diff(metrics1, metrics0, "ffstream_queue_wait_seconds", 0.5),
           "queue_wait_p99_s": histogram_diff(metrics1, metrics0, "ffstream_queue_wait_seconds", 0.99),
           "rhythm": rhythm(metrics1, metrics0, elapsed),
           "cpu_cores_per_process": cpu}
    if latencies:
        latencies.sort()
        out["predict_p50_ms"] = round(1000 * statistics.median(latencies), 1)
        out["predict_p99_ms"] = round(1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 1)
        out["predict_requests"] = len(latencies)
        # the same requests as the API saw them (from its arrival to its answer; the client's
        # figure adds the load generator's own scheduling on the same cores): bucket upper bounds
        served = 'route="/v1/predict"'
        for q in (0.5, 0.99):
            bound = histogram_diff(api1, api0, "ffstream_http_request_duration_seconds", q, served)
            out[f"predict_server_p{int(q * 100)}_ms_at_most"] = None if bound is None else round(1000 * bound, 1)
    client.close()
    return out


def lag_trend(lags: list[dict]) -> float:
    """The lag's least-squares slope over the run, in frames per second (0 with fewer than 2 readings)."""
    if len(lags) < 2:
        return 0.0
    t, lag = np.array([x["t"] for x in lags], float), np.array([x["lag"] for x in lags], float)
    return float(np.polyfit(t, lag, 1)[0])


def wait_drained(base: str, timeout: float = 300) -> None:
    with httpx.Client(base_url=base, timeout=30) as c:
        deadline = time.time() + timeout
        while time.time() < deadline and c.get("/v1/model").json()["lag"] > 0:
            time.sleep(0.5)


def model_step_alone(streams: int, seconds: float = 5.0) -> dict:
    """frames/s of the learning step in-process (no I/O): learn_step for ``streams`` frames per step,
    the positive step and the negatives of the wake/sleep rhythm, on one thread."""
    import torch

    from ffcore.online import OnlineLearner, negative_gradient
    from service import model as model_io
    from service.settings import Settings

    torch.set_num_threads(1)
    settings = Settings(input_dim=DIM)
    model = model_io.build(settings)
    learner = OnlineLearner(model, model_io.online_config(settings))
    x, y = torch.rand(streams, DIM), torch.randint(0, 10, (streams,))
    state = model.initial_state(x)
    gen = torch.Generator().manual_seed(0)
    frames, wake_s, sleep_s, start = 0, 0.0, 0.0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        t = time.perf_counter()
        learner.learn_readout(x, y)  # the wake worker trains the readout on a poll's frames at once
        state = learner.learn_step(x, y, state, readout=False).state
        frames += streams
        if learner.positive.count >= settings.wake_window:
            learner.apply(learner.take_positive())
            sample = learner.take_replay()
            wake_s += time.perf_counter() - t
            t = time.perf_counter()
            g = negative_gradient(model, sample.frames, model.negative_labels(sample.frames, sample.labels, gen),
                                  settings.sleep_iterations, sample.state)
            sleep_s += time.perf_counter() - t
            learner.apply(g)
        else:
            wake_s += time.perf_counter() - t
    return {"streams_per_step": streams, "frames": frames, "wake_frames_per_s": round(frames / wake_s),
            "sleep_frames_per_s": round(frames / max(sleep_s, 1e-9)),
            "both_frames_per_s": round(frames / (wake_s + sleep_s))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--loads", nargs="+", default=["16x32", "4x256"], help="STREAMSxFRAMES_PER_REQUEST")
    ap.add_argument("--predict-rps", type=float, default=20)
    ap.add_argument("--max-lag", type=int, default=4096, help="sources hold back while the lag is above this")
    ap.add_argument("--predict-via", choices=["api", "role", "both"], default="both",
                    help="the viewer's predictions go to the API process, to the predict role "
                         "(FFS_PREDICT_PORT), or each load runs twice, once each way")
    ap.add_argument("--client", choices=["raw", "httpx"], default="raw",
                    help="the posters' HTTP client: a pre-built request on a keep-alive socket, or httpx "
                         "(about 1.8 ms of CPU per request, on the same cores as the service)")
    ap.add_argument("--out", type=Path, default=Path("docs/throughput.json"))
    args = ap.parse_args()
    from ffcore.experiment import hardware

    workdir = Path(tempfile.mkdtemp(prefix="ffs-throughput-"))
    ports = {"api": free_port(), "wake": free_port(), "sleep": free_port(), "predict": free_port()}
    env = {**os.environ, "FFS_INPUT_DIM": str(DIM), "FFS_PORT": str(ports["api"]),
           "FFS_WAKE_METRICS_PORT": str(ports["wake"]), "FFS_SLEEP_METRICS_PORT": str(ports["sleep"]),
           "FFS_CHECKPOINT_DIR": str(workdir), "FFS_LOG_LEVEL": "WARNING", "FFS_MAX_STREAM_FPS": "1000000",
           "FFS_MAX_QUEUE_LAG_FRAMES": "1000000"}
    if args.predict_via != "api":
        env["FFS_PREDICT_PORT"] = str(ports["predict"])
    env.pop("FFS_REDIS_URL", None)
    import subprocess

    up = subprocess.Popen([sys.executable, "-m", "service.cli", "up"], env=env, cwd=REPO, start_new_session=True)
    base, wake_metrics = f"http://127.0.0.1:{ports['api']}", f"http://127.0.0.1:{ports['wake']}/metrics"
    result = {"date": time.strftime("%Y-%m-%d"), "hardware": hardware(), "args": {k: str(v) for k, v in vars(args).items()}}
    try:
        with httpx.Client(base_url=base, timeout=5) as probe:
            if not wait_ready(probe, 120):
                raise RuntimeError("the system did not become ready")
        pids = children(up.pid)
        result["loads"] = []
        role_url = f"http://127.0.0.1:{ports['predict']}"
        predict_bases = {"api": [None], "role": [role_url], "both": [None, role_url]}[args.predict_via]
        if args.predict_via != "api":
            with httpx.Client(base_url=predict_bases[-1], timeout=5) as probe:
                if not wait_ready(probe, 60):
                    raise RuntimeError("the predict role did not become ready")
        for load, predict_base in ((load, p) for load in args.loads for p in predict_bases):
            streams, batch = (int(v) for v in load.split("x"))
            r = run_load(base, wake_metrics, pids, streams=streams, batch=batch, seconds=args.seconds,
                         predict_rps=args.predict_rps, tag=f"s{streams}x{batch}{'r' if predict_base else ''}",
                         max_lag=args.max_lag, predict_base=predict_base, client_kind=args.client)
            result["loads"].append(r)
            print(f"{streams} streams x {batch} frames/request, predict by {r['predict_served_by']}: "
                  f"applied {r['applied_per_s']} frames/s "
                  f"(accepted {r['accepted_per_s']}), lag end/max {r['lag_end']}/{r['lag_max']} (trend "
                  f"{r['lag_trend_per_s']}/s, sustained: {r['sustained']}), "
                  f"202->step p50/p99 {r['queue_wait_p50_s']}/{r['queue_wait_p99_s']} s, predict p50/p99 "
                  f"{r.get('predict_p50_ms')}/{r.get('predict_p99_ms')} ms (in the API: at most "
                  f"{r.get('predict_server_p50_ms_at_most')}/{r.get('predict_server_p99_ms_at_most')} ms), "
                  f"cpu {r['cpu_cores_per_process']}, positive steps {r['positive_steps']} (negatives applied "
                  f"{r['negatives_applied']}, missed {r['negatives_missed']}), rhythm {r['rhythm']}",
                  flush=True)
            wait_drained(base)
        # Last, ingest alone: the wake worker stopped (SIGSTOP), 4 connections of 256-frame
        # requests for a few seconds, under a lag limit high enough not to answer 503.
        os.kill(pids["wake"], signal.SIGSTOP)
        counter = mp.Value("q", 0)
        seconds = min(args.seconds, 8)
        stop_at = time.time() + seconds
        procs = [mp.Process(target=poster, args=(base, f"ingest-{s}", 256, stop_at, counter, s, None, 0, args.client))
                 for s in range(4)]
        t0 = time.time()
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        result["ingest_alone_frames_per_s"] = round(counter.value / (time.time() - t0))
        print(f"ingest alone (wake stopped): {result['ingest_alone_frames_per_s']} frames/s", flush=True)
        os.kill(pids["wake"], signal.SIGCONT)
    finally:
        up.send_signal(signal.SIGTERM)  # ffstream up stops its children in order, Redis last
        try:
            up.wait(120)
        except subprocess.TimeoutExpired:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()
        shutil.rmtree(workdir, ignore_errors=True)  # Redis's files and the checkpoints: hundreds of MB
    result["model_step_alone"] = [model_step_alone(s) for s in sorted({int(v.split("x")[0]) for v in args.loads})]
    for m in result["model_step_alone"]:
        print(f"model step alone, {m['streams_per_step']} streams per step: wake {m['wake_frames_per_s']} frames/s, "
              f"sleep {m['sleep_frames_per_s']}, both {m['both_frames_per_s']} (one thread)", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
