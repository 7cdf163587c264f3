"""Prometheus metrics, one set per role, all named ``ffstream_*`` in base units.

Each role has its own registry and serves it on its own port (the API on ``/metrics``, the
workers through ``serve``). Labels are bounded: routes are route templates, layers are layer
indices, reasons are a fixed set; a raw stream id is never a label.

The API can run several worker processes; prometheus-client's multiprocess mode then merges
them (``PROMETHEUS_MULTIPROC_DIR``, set by ``ffstream api --workers N``).
"""

from __future__ import annotations

import os

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client.multiprocess import MultiProcessCollector

disable_created_metrics()  # no *_created series: counters and histograms are what dashboards read
NS = "ffstream"
# Seconds: from a fraction of a millisecond (one small step) to tens of seconds (a long queue).
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BYTES_BUCKETS = tuple(2.0**k for k in range(8, 25, 2))  # 256 B .. 16 MiB
STEP_FRAMES_BUCKETS = (1, 8, 16, 32, 64, 100, 150, 200, 300, 500, 1000, 2000, 5000)
# The wake/sleep round trip is ~10-30 ms under load: finer there than LATENCY_BUCKETS.
ROUND_TRIP_BUCKETS = (0.002, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
REJECT_REASONS = ("body_too_large", "body_timeout", "too_many_frames", "bad_body", "bad_shape", "non_finite",
                  "bad_label", "bad_seq", "unsupported_media_type", "unauthorized", "forbidden", "rate_limited",
                  "backpressure", "checkpoint_failing", "too_many_streams", "redis_unavailable")


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def _registry(process: bool = True) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    if process:
        ProcessCollector(namespace=NS, registry=registry)  # CPU seconds, resident memory, fds
    return registry


class ApiMetrics:
    def __init__(self):
        # In multiprocess mode the values live in files; this registry only names them.
        self.multiprocess = multiprocess_dir() is not None
        self.registry = _registry(process=not self.multiprocess)
        r = self.registry
        self.request_seconds = Histogram(f"{NS}_http_request_duration_seconds", "HTTP request duration",
                                         ["route", "method", "status"], buckets=LATENCY_BUCKETS, registry=r)
        self.body_bytes = Histogram(f"{NS}_ingest_body_bytes", "Size of frame-ingest request bodies",
                                    buckets=BYTES_BUCKETS, registry=r)
        self.frames_received = Counter(f"{NS}_frames_received", "Frames decoded from ingest bodies", registry=r)
        self.frames_accepted = Counter(f"{NS}_frames_accepted", "Frames stored in Redis (answered 202)", registry=r)
        self.rejected = Counter(f"{NS}_ingest_requests_rejected", "Ingest requests refused, by reason",
                                ["reason"], registry=r)
        self.predictions = Counter(f"{NS}_predictions", "Frames predicted by /v1/predict", registry=r)
        for reason in REJECT_REASONS:  # every reason exists from the start, at 0
            self.rejected.labels(reason)

    def exposition(self) -> CollectorRegistry:
        if not self.multiprocess:
            return self.registry
        merged = _registry(process=False)
        MultiProcessCollector(merged)
        return merged


class WakeMetrics:
    def __init__(self, layers: int):
        self.registry = r = _registry()
        self.steps = Counter(f"{NS}_wake_steps", "Synchronous steps (one frame for every stream in the step)",
                             registry=r)
        self.frames_applied = Counter(f"{NS}_wake_frames_applied", "Frames whose positive update was applied",
                                      registry=r)
        self.update_seconds = Histogram(f"{NS}_wake_update_duration_seconds",
                                        "Compute time of one step with its updates", buckets=LATENCY_BUCKETS,
                                        registry=r)
        self.queue_wait_seconds = Histogram(f"{NS}_queue_wait_seconds",
                                            "Time from 202 to the start of the frame's step (queueing, not compute)",
                                            buckets=LATENCY_BUCKETS, registry=r)
        self.duplicates = Counter(f"{NS}_duplicate_frames", "Frames skipped: their client seq was already applied",
                                  registry=r)
        self.queue_lag = Gauge(f"{NS}_queue_lag_frames", "Frames accepted but not yet applied", registry=r)
        self.queue_pending = Gauge(f"{NS}_queue_pending_frames",
                                   "Frames delivered to the wake worker and not yet acknowledged", registry=r)
        self.active_streams = Gauge(f"{NS}_wake_active_streams", "Streams with recurrent state on the device",
                                    registry=r)
        self.version = Gauge(f"{NS}_model_version", "Version of the latest published snapshot", registry=r)
        self.snapshot_time = Gauge(f"{NS}_snapshot_timestamp_seconds", "Unix time of the latest snapshot", registry=r)
        self.checkpoint_time = Gauge(f"{NS}_checkpoint_timestamp_seconds", "Unix time of the latest checkpoint",
                                     registry=r)
        self.checkpoint_failures = Counter(f"{NS}_checkpoint_failures", "Checkpoints the disk refused (retried "
                                           "with backoff; frames stay unacknowledged until one succeeds)", registry=r)
        self.negatives_applied = Counter(f"{NS}_negative_updates_applied", "Negative updates from sleep applied",
                                         registry=r)
        self.negatives_rejected = Counter(f"{NS}_negative_updates_rejected", "Negative updates refused, by reason",
                                          ["reason"], registry=r)
        for reason in ("stale", "invalid", "exploding"):
            self.negatives_rejected.labels(reason)
        self.positive_steps = Counter(f"{NS}_positive_steps", "Accumulated positive gradients applied as one step",
                                      registry=r)
        # The size of a positive step is set by the round trip to the sleep worker under load (a
        # step waits for the last one's negatives), and larger steps learn less per frame.
        self.step_frames = Histogram(f"{NS}_positive_step_frames", "Frames one positive step covered",
                                     buckets=STEP_FRAMES_BUCKETS, registry=r)
        self.round_trip_seconds = Histogram(f"{NS}_negative_round_trip_seconds", "Time from a dream's "
                                            "publication to its negatives' arrival (the sleep worker's answer)",
                                            buckets=ROUND_TRIP_BUCKETS, registry=r)
        self.negative_wait_seconds = Counter(f"{NS}_wake_negative_wait_seconds", "Time the wake worker spent "
                                             "waiting for negatives with a step at FFS_WAKE_WINDOW_MAX frames",
                                             registry=r)
        self.negatives_missed = Counter(f"{NS}_negative_updates_missed", "Positive steps taken without the "
                                        "previous step's negatives (the sleep worker did not answer in time)",
                                        registry=r)
        self.fast_corrections = Counter(f"{NS}_fast_corrections", "Labeled frames learned at once "
                                        "(learn=fast: a user's correction)", registry=r)
        self.rollbacks = Counter(f"{NS}_weight_rollbacks", "Times the weights became non-finite and went back "
                                 "to the last published snapshot", registry=r)
        self.goodness = Gauge(f"{NS}_online_goodness", "Mean goodness of the latest positive step, per layer",
                              ["layer"], registry=r)
        self.weight_norm = Gauge(f"{NS}_weight_norm", "Frobenius norm of each hidden layer's weights",
                                 ["layer"], registry=r)
        self.accuracy = Gauge(f"{NS}_prequential_accuracy",
                              "Rolling accuracy of predictions made before learning each labeled frame "
                              "(mean over active streams)", registry=r)
        self.sleep_up = Gauge(f"{NS}_sleep_worker_up", "1 while the sleep worker's heartbeat is fresh (seen by wake)",
                              registry=r)
        self.gpu_memory = Gauge(f"{NS}_gpu_memory_bytes", "CUDA memory of the wake worker", ["kind"], registry=r)
        for i in range(layers):
            self.goodness.labels(str(i))
            self.weight_norm.labels(str(i))


class SleepMetrics:
    def __init__(self):
        self.registry = r = _registry()
        self.cycles = Counter(f"{NS}_sleep_cycles", "Sleep cycles that pushed a negative update", registry=r)
        self.cycle_seconds = Histogram(f"{NS}_sleep_cycle_duration_seconds", "Duration of one sleep cycle",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.negatives_generated = Counter(f"{NS}_sleep_negatives_generated", "Negative examples generated",
                                           registry=r)
        self.paused = Gauge(f"{NS}_sleep_paused", "1 while sleep is paused", registry=r)
        self.last_cycle_time = Gauge(f"{NS}_sleep_last_cycle_timestamp_seconds", "Unix time of the last cycle",
                                     registry=r)
        self.goodness = Gauge(f"{NS}_goodness", "Mean goodness on the replayed frames, per phase and layer "
                              "(positive: true labels; negative: the sleep worker's wrong labels)",
                              ["phase", "layer"], registry=r)
        self.separation = Gauge(f"{NS}_goodness_separation",
                                "Positive minus negative mean goodness on the replayed frames, per layer",
                                ["layer"], registry=r)


def serve(registry: CollectorRegistry, host: str, port: int) -> None:
    """Expose ``registry`` on http://host:port/metrics from a background thread (port 0: off)."""
    if port:
        try:
            start_http_server(port, addr=host, registry=registry)
        except OSError as e:
            raise RuntimeError(f"cannot serve metrics on {host}:{port} ({e}): set another port or 0 for none") from e
