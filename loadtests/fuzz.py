"""Hostile input and hostile connections against a real `ffstream up`; prints the counts as JSON.

    python loadtests/fuzz.py --requests 20000 --out loadtests/fuzz.json

Phases (each on a fresh system started by this script on free loopback ports):
  fuzz        mutated valid JSON and binary bodies, hostile headers and paths, on both POST
              endpoints and the GETs, half the run with API keys on (requests with a good key,
              a bad one and none); every answer must be 2xx or 4xx within 5 s;
  slow        idle connections, request heads that never finish, bodies that stall: all must be
              answered 408 (or 503 beyond the connection limit) and closed, while /healthz stays fast;
  concurrency many simultaneous posts: every one 202 (the Redis pool waits instead of failing);
  churn       more stream ids than FFS_MAX_STREAMS, in waves: 429 beyond the limit, accepted
              again once the earlier streams have been idle for FFS_STREAM_IDLE_S.
Exit status 1 if any phase saw a 5xx (other than the documented 503 at the connection limit), a
hang, or a wrong answer.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import random
import socket
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

from service.codec import encode_frames
from service.system import launched

KEY = "fuzz-key-0123456789abcdef"
DIM = 196
HANG_S = 5.0
NASTY = [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400", b"true", b"false", b"null", b'"7"', b"[]", b"{}",
         b"9" * 30, b"9" * 5000, b"-1", b"-2", b"2147483648", b"9223372036854775808", b"1.5", b"\xff\xfe",
         b"[" * 3000, b"\x00", b'"\\ud800"', b"0" * 10, b"1e-400"]
CONTENT_TYPES = [None, "application/json", "APPLICATION/JSON", "application/json; charset=utf-8", "application/jsonx",
                 "application/x-ffs-frames", "Application/X-FFS-Frames", "text/plain", "multipart/form-data",
                 "application/json\x7f", "", " ", "application/x-ffs-frames; v=2", "*/*"]


def system(workdir: Path, **env_overrides: str):
    """A fresh ``ffstream up`` (one torch thread per process), yielding its base URL."""
    return launched(workdir, OMP_NUM_THREADS="1", **env_overrides)


def _valid_json(rng: random.Random, n: int) -> bytes:
    frames = [{"data": [round(rng.random(), 3) for _ in range(DIM)], "label": rng.choice([None, rng.randrange(10)]),
               "seq": rng.choice([None, rng.randrange(1000)])} for _ in range(n)]
    return json.dumps({"frames": frames}).encode()


def _mutate(rng: random.Random, body: bytes) -> bytes:
    b = bytearray(body)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        if op == 0 and b:  # flip bytes
            for _ in range(rng.randint(1, 8)):
                b[rng.randrange(len(b))] = rng.randrange(256)
        elif op == 1 and b:  # truncate
            del b[rng.randrange(len(b)):]
        elif op == 2:  # insert a nasty token
            at = rng.randrange(len(b) + 1)
            b[at:at] = rng.choice(NASTY)
        elif op == 3 and b:  # replace a number-like run with a nasty token
            at = rng.randrange(len(b))
            b[at:at + rng.randint(1, 6)] = rng.choice(NASTY)
        elif op == 4:  # duplicate a slice
            if b:
                i = rng.randrange(len(b))
                b[i:i] = b[i:i + rng.randint(1, 200)]
        else:  # append garbage
            b += bytes(rng.randrange(256) for _ in range(rng.randint(1, 50)))
    return bytes(b)


def _binary(rng: random.Random) -> bytes:
    n = rng.randint(1, 8)
    body = bytearray(encode_frames(np.random.default_rng(rng.randrange(2**32)).random((n, DIM)),
                                   labels=[rng.randrange(-3, 12) for _ in range(n)],
                                   seqs=[rng.choice([-1, rng.randrange(100)]) for _ in range(n)],
                                   dtype=rng.choice([1, 2])))
    if rng.random() < 0.8:
        body = bytearray(_mutate(rng, bytes(body)))
    if rng.random() < 0.2:  # header fields specifically
        i = rng.randrange(min(16, len(body) or 1))
        if body:
            body[i] = rng.randrange(256)
    return bytes(body)


def _request(rng: random.Random, keys_on: bool) -> tuple[str, str, bytes | None, dict]:
    headers: dict[str, str] = {}
    if keys_on:
        headers_key = rng.choice([KEY, KEY, KEY, "wrong-key-xxxxxxxxxxxxxxxx", None, "", KEY[:-1], KEY.upper()])
        if headers_key is not None:
            headers["x-api-key"] = headers_key
    kind = rng.random()
    stream = rng.choice(["s1", "s2", "cam.3", "a" * 128, "a" * 129, "bad/../id", "%00", "sp ace", "ü", "-", "s1"])
    if kind < 0.45:
        path, body = f"/v1/streams/{stream}/frames", (_mutate(rng, _valid_json(rng, rng.randint(1, 3)))
                                                      if rng.random() < 0.85 else _valid_json(rng, 1))
        headers["content-type"] = "application/json"
    elif kind < 0.75:
        path, body = f"/v1/streams/{stream}/frames", _binary(rng)
        headers["content-type"] = "application/x-ffs-frames"
    elif kind < 0.93:
        frames = [[round(rng.random(), 3) for _ in range(DIM)] for _ in range(rng.randint(1, 3))]
        valid = {"frames": frames, "method": rng.choice(["softmax", "goodness", "other", 7]),
                 "stream_id": rng.choice([None, "s1", "nope", "bad id"])}
        body = json.dumps(valid).encode()
        path, body = "/v1/predict", _mutate(rng, body) if rng.random() < 0.8 else body
        headers["content-type"] = "application/json"
    else:
        return "GET", rng.choice(["/v1/model", f"/v1/streams/{stream}", "/healthz", "/readyz", "/metrics",
                                  "/v1/streams/", "/nope"]), None, headers
    if rng.random() < 0.25:
        ct = rng.choice(CONTENT_TYPES)
        if ct is None:
            headers.pop("content-type", None)
        else:
            headers["content-type"] = ct
    if rng.random() < 0.05:
        headers["content-encoding"] = rng.choice(["gzip", "br", "identity", "x"])
    return "POST", path, body, headers


def fuzz_phase(base: str, requests: int, keys_on: bool, seed: int) -> dict:
    rng = random.Random(seed)
    statuses: Counter[int] = Counter()
    server_errors, hangs = [], 0
    slowest = 0.0
    sent = 0
    with httpx.Client(base_url=base, timeout=HANG_S) as c:
        while sent < requests:  # requests that reached the server (or hung, or broke a connection)
            method, path, body, headers = _request(rng, keys_on)
            started = time.perf_counter()
            try:
                r = c.request(method, path, content=body, headers=headers)
            except httpx.LocalProtocolError:  # a header value httpx itself refuses to send: never sent
                statuses["unsendable"] += 1
                continue
            except httpx.TimeoutException:
                hangs += 1
                sent += 1
                continue
            except httpx.HTTPError as e:
                statuses[f"transport:{type(e).__name__}"] += 1
                sent += 1
                continue
            sent += 1
            slowest = max(slowest, time.perf_counter() - started)
            statuses[r.status_code] += 1
            if r.status_code >= 500 and len(server_errors) < 20:
                server_errors.append({"path": path, "status": r.status_code, "body": r.text[:200],
                                      "request": (body or b"")[:120].decode("latin-1")})
    fivexx = sum(v for k, v in statuses.items() if isinstance(k, int) and k >= 500)
    transport = sum(v for k, v in statuses.items() if str(k).startswith("transport:"))
    return {"sent": sent, "generated": sent + statuses["unsendable"], "transport_errors": transport, "keys": keys_on,
            "statuses": {str(k): v for k, v in sorted(statuses.items(), key=str)},
            "5xx": fivexx, "hangs_over_5s": hangs, "slowest_s": round(slowest, 3), "examples_5xx": server_errors,
            "ok": fivexx == 0 and hangs == 0 and transport == 0}


def _connect(base: str) -> socket.socket:
    host, port = base.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=30)
    return s


def _answer(s: socket.socket) -> bytes:
    try:
        return s.recv(200)
    except OSError:
        return b""


def slow_phase(base: str, idle: int, partial_heads: int, stalled_bodies: int, header_timeout: float) -> dict:
    held = [_connect(base) for _ in range(idle)]
    heads = [_connect(base) for _ in range(partial_heads)]
    for s in heads:
        s.sendall(b"POST /v1/streams/a/frames HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    bodies = [_connect(base) for _ in range(stalled_bodies)]
    for s in bodies:
        s.sendall(b"POST /v1/streams/a/frames HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
                  b"content-length: 100000\r\n\r\n{\"frames\": [")
    health = []
    with httpx.Client(base_url=base, timeout=30) as c:
        for _ in range(10):
            started = time.perf_counter()
            try:
                ok = c.get("/healthz").status_code == 200
            except httpx.HTTPError:
                ok = False
            health.append((ok, time.perf_counter() - started))
            time.sleep(0.2)
    answers = Counter()
    deadline_started = time.perf_counter()
    for s in held + heads + bodies:
        answers[_answer(s)[:12].decode("latin-1") or "closed"] += 1
        s.close()
    waited = time.perf_counter() - deadline_started
    result = {"idle_connections": idle, "partial_heads": partial_heads, "stalled_bodies": stalled_bodies,
              "answers": dict(answers), "healthz_ok": sum(ok for ok, _ in health), "healthz_probes": len(health),
              "healthz_slowest_s": round(max(t for _, t in health), 3),
              "all_closed_within_s": round(waited, 1)}
    result["ok"] = (result["healthz_ok"] == len(health) and result["healthz_slowest_s"] < 1.0
                    and set(answers) <= {"HTTP/1.1 408", "HTTP/1.1 503"}
                    and waited < header_timeout * 4 + 35)
    return result


def concurrency_phase(base: str, posts: int) -> dict:
    body = _valid_json(random.Random(1), 1)
    with httpx.Client(base_url=base, timeout=60, limits=httpx.Limits(max_connections=posts)) as c, \
            concurrent.futures.ThreadPoolExecutor(posts) as pool:
        codes = Counter(pool.map(lambda i: c.post(f"/v1/streams/c{i % 50}/frames", content=body,
                                                  headers={"content-type": "application/json"}).status_code,
                                 range(posts)))
    return {"concurrent_posts": posts, "statuses": {str(k): v for k, v in codes.items()}, "ok": codes == {202: posts}}


def churn_phase(base: str, max_streams: int, idle_s: float, waves: int) -> dict:
    body, out = _valid_json(random.Random(2), 1), []
    with httpx.Client(base_url=base, timeout=30) as c:
        for wave in range(waves):
            codes = Counter(c.post(f"/v1/streams/w{wave}-{i}/frames", content=body,
                                   headers={"content-type": "application/json"}).status_code
                            for i in range(max_streams + 20))
            out.append({str(k): v for k, v in codes.items()})
            time.sleep(idle_s + 0.5)
    ok = all(w == {"202": max_streams, "429": 20} for w in out)
    return {"max_streams": max_streams, "idle_s": idle_s, "waves": out, "ok": ok}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20_000,
                        help="fuzzed requests sent in all (half with keys on); those httpx refuses to send are extra")
    parser.add_argument("--idle", type=int, default=2000, help="idle connections in the slow phase")
    parser.add_argument("--slow", type=int, default=300, help="partial heads and stalled bodies, each")
    parser.add_argument("--concurrent", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    # the systems' Redis files and checkpoints: removed when done, whatever happens
    with tempfile.TemporaryDirectory(prefix="ffstream-fuzz-", ignore_cleanup_errors=True) as work:
        report = run(args, Path(work))
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    raise SystemExit(0 if report["ok"] else 1)


def run(args, work: Path) -> dict:
    """Every phase, each against its own embedded system under ``work``: the report."""
    report = {"date": time.strftime("%Y-%m-%d"), "command": " ".join(["python", "loadtests/fuzz.py", *sys.argv[1:]])}
    with system(work / "open", FFS_MAX_SEQ_JUMP="1000000") as base:
        report["fuzz_keys_off"] = fuzz_phase(base, args.requests // 2, False, args.seed)
        report["concurrency"] = concurrency_phase(base, args.concurrent)
    with system(work / "keys", FFS_API_KEYS=json.dumps([KEY]), FFS_PREDICT_REQUIRES_KEY="true") as base:
        report["fuzz_keys_on"] = fuzz_phase(base, args.requests - args.requests // 2, True, args.seed + 1)
    with system(work / "slow", FFS_HEADER_TIMEOUT_S="5", FFS_BODY_TIMEOUT_S="5", FFS_MAX_CONNECTIONS="1024") as base:
        report["slow"] = slow_phase(base, args.idle, args.slow, args.slow, 5.0)
    with system(work / "churn", FFS_MAX_STREAMS="50", FFS_STREAM_IDLE_S="2") as base:
        report["churn"] = churn_phase(base, 50, 2.0, 3)
    report["ok"] = all(v["ok"] for v in report.values() if isinstance(v, dict))
    return report


if __name__ == "__main__":
    main()
