"""The service's one configuration: environment variables with the ``FFS_`` prefix (or a ``.env``
file), validated at start-up. Nothing else in ``service/`` reads the environment."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FFS_", env_file=".env", extra="forbid")

    # --- Redis: unset means "start a private redis-server" (ffstream up) ---
    redis_url: str | None = Field(None, description="redis://host:port/db or unix:///path?db=0; unset: embedded private redis-server")
    redis_socket_timeout_s: float = Field(10.0, gt=0, description="must exceed every blocking read below")
    redis_max_connections: int = Field(64, ge=2, description="the API's pool (per API worker): requests beyond it wait")
    redis_pool_timeout_s: float = Field(5.0, gt=0, description="how long a request waits for a pooled connection (then 503)")

    # --- ffstream up: a dead child (or the private redis-server) is restarted with backoff ---
    restart_limit: int = Field(5, ge=0, description="restarts of one process within restart_window_s before giving up")
    restart_window_s: float = Field(60.0, gt=0)

    key_prefix: str = Field("ffs", pattern=r"^[A-Za-z0-9_.-]{1,32}$")

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # --- HTTP API ---
    # Keys for writes (frames, sleep controls, checkpoints), as a JSON list: FFS_API_KEYS='["k1","k2"]'.
    # Empty: no keys, which is safe only on loopback (the default host).
    api_keys: list[SecretStr] = Field(default_factory=list)
    predict_requires_key: bool = False
    max_streams: int = Field(10_000, ge=1, description="active streams (429 beyond); a stream stops counting after stream_idle_s without frames")
    max_stream_fps: float = Field(1000.0, gt=0, description="frames per second per stream (429 beyond)")
    max_queue_lag_frames: int = Field(100_000, ge=1, description="ingest answers 503 while the lag is above this")
    max_seq_jump: int = Field(1_000_000_000, ge=1, description="how far a frame's seq may run ahead of its stream's "
                              "highest (the first seq counts from -1)")
    max_unacked_frames: int = Field(100_000, ge=1, description="while checkpoints fail, ingest answers 503 once "
                                    "this many applied frames wait to be acknowledged")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    api_workers: int = Field(1, ge=1, le=64, description="uvicorn worker processes (metrics merged across them)")
    predict_port: int = Field(0, ge=0, le=65535, description="also serve /v1/predict (with the other read-only "
                              "routes) from a process of its own on this port, off the ingest event loop "
                              "(`ffstream predict`; `ffstream up` starts it); 0: the API process alone")
    wake_metrics_port: int = Field(9101, ge=0, le=65535, description="the wake worker's /metrics; 0: off")
    sleep_metrics_port: int = Field(9102, ge=0, le=65535, description="the sleep worker's /metrics; 0: off")
    max_frames_per_request: int = Field(256, ge=1, le=100_000)
    max_body_bytes: int = Field(8 * 2**20, ge=1024)
    # connections: a request head must arrive within header_timeout_s of its first byte, a body
    # within body_timeout_s (408 otherwise); beyond max_connections a new connection gets 503
    header_timeout_s: float = Field(10.0, gt=0)
    body_timeout_s: float = Field(30.0, gt=0)
    max_connections: int = Field(1024, ge=8, description="open connections per API process (503 beyond)")
    # predict: frames per request (its body is refused beyond ~32 bytes per value, before reading)
    max_predict_frames: int = Field(256, ge=1, le=100_000)

    # --- the model (a recurrent FF net; see ffcore.recurrent) ---
    # supervised: positive updates with the true label on top, negatives with wrong labels.
    # unsupervised: every frame learns with the neutral label; negatives are hybrid frames (paper
    # 3.2); labels, where given, only train the linear readout.
    mode: Literal["supervised", "unsupervised"] = "supervised"
    frame_shape: list[int] | None = Field(None, description="(height, width) for hybrid masks; default: square")
    input_dim: int = Field(196, ge=2, le=1_000_000)
    num_classes: int = Field(10, ge=2, le=100_000)
    widths: list[int] = Field(default_factory=lambda: [256, 256])
    damping: float = Field(0.3, ge=0.0, lt=1.0)
    # The FF layers learn through ffcore.online: the positive phase's gradient is accumulated over
    # a window of frames (across streams) and applied as one step; the sleep worker then computes
    # the negative phase on the weights that include that step and the wake worker applies it
    # before the next positive step (positive and negative alternate, staleness 0: separating
    # them by one step was worse on every data set measured, docs/RESULTS.md).
    # The step is normalized by each layer's input width, so learning_rate is the fraction of
    # each pre-activation's loss derivative taken per step, whatever the widths. 1.25: under the
    # deferred rhythm (steps one round trip late) it beat 0.75 and 1.0 on MNIST and on three
    # variants of other statistics, and 1.5 on three of the four (docs/RESULTS.md, tenth session).
    learning_rate: float = Field(1.25, gt=0, le=100.0, description="normalized FF step (both phases)")
    momentum: float = Field(0.0, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    center_input: bool = Field(True, description="subtract a running per-input mean from frames (ffcore "
                               "RecurrentConfig.center_input)")
    temperature: float = Field(0.0, ge=0, description="width of the FF logistic as a fraction of the threshold; "
                               "0: the paper's")
    freeze: bool = Field(False, description="keep the FF layers fixed; only the readout learns (the control)")
    # What a correction (learn=fast) changes. "readout": the readout alone, in one step; "all": also
    # the FF layers, by fast steps of equation 4 (ffcore.fast.correct). The readout alone measured
    # better on the classes already learned (benchmarks/correction.py, docs/RESULTS.md).
    correction_layers: Literal["readout", "all"] = Field("readout", description="what learn=fast changes: "
                                                          "the readout, or all layers (FF layers by equation 4)")
    wake_window: int = Field(50, ge=1, description="positive frames accumulated per FF step")
    # A step waits for the negatives of the one before, so under load it covers the frames that
    # arrive in one round trip to the sleep worker, and larger steps learn less per frame
    # (in-process, MNIST 50k x 2: 5.46% at 50 frames, 6.02% at 160, 7.13% at 480; docs/RESULTS.md).
    # Past this many the wake worker waits for the negatives instead of reading more frames, but
    # only once wake_step_interval_s has passed: frames read before that join the step, so at a
    # full rate of R frames/s a step covers at least about R x wake_step_interval_s frames (~192
    # at 7,000 frames/s). Smaller steps cost throughput on 2 cores for little measured learning:
    # 16 x 32 load, interval 0 and cap 150 / 100 / 64: 6,161 / 5,087 / 3,441 frames/s against
    # 7,324 with the defaults; the service on MNIST 50k x 2 in one run: 5.70 / 5.61 / 5.38%
    # against 5.74% (5.61-5.88% over three runs; docs/RESULTS.md, ninth session; all at the
    # learning rate of 1.0 then). At today's 1.25, cap 64 and interval 0 gave 5.19% against
    # 5.39-5.46% (tenth session). The wake worker's metrics show both:
    # ffstream_positive_step_frames and ffstream_negative_round_trip_seconds.
    wake_window_max: int = Field(150, ge=1, description="frames at which a positive step, once "
                                 "wake_step_interval_s has passed, waits for the last step's negatives (up to "
                                 "negative_wait_s) instead of taking more frames")
    wake_window_s: float = Field(1.0, gt=0, description="also step after this long with frames accumulated")
    # Each step ships the weights to the sleep worker and a gradient back (~2 MB through Redis's
    # pub/sub) and costs the wake ~2 ms of CPU besides: under heavy load the window grows so that
    # steps come at most this often (see wake_window_max).
    wake_step_interval_s: float = Field(0.02, ge=0, description="shortest time between two positive steps")
    negative_wait_s: float = Field(5.0, gt=0, description="longest wait for the sleep worker's negatives "
                                   "before the next positive step goes ahead without them")
    torch_threads: int = Field(1, ge=1, le=256, description="torch threads per process (wake, sleep, api)")
    # 0 by default: raising the wake worker alone (-5) gave 4,399-4,915 frames/s instead of
    # 3,627-3,838 on 2 cores, but by starving the sleep worker, so each positive step covered more
    # frames and the service learned worse (5.98% vs 5.55% MNIST error); both workers at -5 kept
    # the steps and gave 3,807, inside the noise (benchmarks/throughput.py, docs/RESULTS.md).
    # Both at +5 (the API first), three pairs after the wake/sleep traffic moved to pub/sub:
    # predict p99 33-50 ms instead of 42-51, but 1-18% fewer frames/s: it stays 0.
    worker_nice: int = Field(0, ge=-20, le=19, description="niceness added to the wake and sleep workers: "
                             "below 0 they run before the API and anything else on the host (needs "
                             "CAP_SYS_NICE, as root has: without it they say so and keep their priority); "
                             "above 0 the API (ingest, predict) runs first")
    # Applied per frame in the online positive phase (ffcore.online.add_peer_dz_): each frame
    # pushes unit j's pre-activation by this x (its running mean activity - the layer's mean),
    # the paper's additional derivative (FFLayer.peer_dz). Before 2026-12-01 the same number meant
    # 2 (1 - 0.9) / 256 = 1/1280 of that at the default widths: the ninth session's 0.3 and 1 (MNIST
    # 50k x 2, in-process: interleaved 4.84% -> 4.74 / 4.62%, deferred 5.46% -> 5.43 / 5.51%,
    # within the noise) were 2.3e-4 and 7.8e-4 on today's scale.
    peer_normalization: float = Field(0.0, ge=0, description="strength of the paper's footnote-9 peer "
                                      "normalization in the positive phase (0: off)")
    # The readout's inputs are length-normalized activities, so |x|^2 equals the total hidden
    # width: its SGD step per frame is readout_step / |x|^2 (normalized LMS), the same relative
    # step for any widths.
    readout_step: float = Field(0.1, gt=0, le=10.0, description="readout SGD step per frame times the total hidden width")
    readout_average: int = Field(500, ge=0, description="predict with the readout's weights averaged over "
                                 "about this many frames (0: the last SGD iterate)")
    seed: int = Field(0, ge=0, description="seed of the initial weights and of the sleep worker's negative labels")
    device: Literal["auto", "cpu", "cuda"] = "auto"

    # --- wake worker ---
    wake_block_ms: int = Field(200, ge=1, description="XREADGROUP block time")
    wake_read_count: int = Field(2048, ge=1, description="about this many frames read per poll (entries hold "
                                 "a request's frames each: the entries read follow their mean size)")
    # Predict's freshness against the wake worker's time: each snapshot costs the wake ~2-3 ms
    # (serialize, check, write 1.4 MB) and every API process a reload. At 200 frames (the old
    # default) a full-rate stream meant ~15 snapshots/s and a third less throughput
    # (benchmarks/throughput.py, docs/RESULTS.md); on time, at most 4/s at any rate.
    snapshot_every_frames: int = Field(5000, ge=1, description="publish a snapshot after this many frames learned")
    snapshot_every_s: float = Field(0.25, gt=0, description="... or this long after any change: how late a step "
                                    "reaches predict")
    snapshots_kept: int = Field(3, ge=1)
    max_delta_ratio: float = Field(0.5, gt=0, description="refuse a negative update that changes a layer's "
                                   "weights by more than this fraction of their norm (an exploding update)")
    max_delta_staleness: int = Field(5, ge=0, description="reject negative updates for a dream this many "
                                     "positive steps (dreams) older than the latest")
    stream_idle_s: float = Field(600.0, gt=0, description="evict a stream's state after this long idle")
    evicted_state: Literal["drop", "save"] = Field(
        "drop", description="save: keep an evicted stream's recurrent state in Redis and resume from it")
    checkpoint_dir: str = "runs/service"
    init_checkpoint: str | None = Field(None, description="warm start: an `ffcore train` checkpoint folder of a "
                                        "recurrent net of the same shape, whose weights a fresh service starts from")
    # Frames are acknowledged when a checkpoint includes them (exactly once across crashes), so
    # checkpoints are frequent: they bound the pending list and the work redone after a crash.
    checkpoint_every_s: float = Field(10.0, gt=0)
    checkpoint_every_frames: int = Field(20_000, ge=1, description="also checkpoint after this many frames")
    heartbeat_ttl_s: float = Field(10.0, gt=0)
    accuracy_window: int = Field(200, ge=1, description="frames in the rolling prequential accuracy")

    # --- sleep worker ---
    # Each FF step of the wake worker publishes a "dream": a sample of the frames it learned from,
    # with their labels and their streams' states; the sleep worker answers each with the negative
    # phase on the snapshot that includes that step.
    sleep_sample: int = Field(100, ge=1, description="frames per dream (the replay sample)")
    sleep_iterations: int = Field(2, ge=1, description="damped iterations per negative frame")
    # bfloat16 by default: half the bytes through Redis per positive step (+22% frames/s end to
    # end on 2 cores) for the same learning (benchmarks/online_recipe.py, four kinds of frames:
    # no worse than 0.02 points of float32 on any; docs/RESULTS.md).
    dream_dtype: Literal["float32", "bfloat16"] = Field(
        "bfloat16", description="precision of the weights in a dream and of the negative gradient sent back")

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if not self.widths or min(self.widths) < 1:
            raise ValueError(f"widths must be positive layer sizes, got {self.widths}")
        if self.wake_window_max < self.wake_window:
            raise ValueError(f"wake_window_max ({self.wake_window_max}) must be at least wake_window "
                             f"({self.wake_window})")
        if self.redis_socket_timeout_s * 1000 <= self.wake_block_ms:
            raise ValueError(
                f"redis_socket_timeout_s ({self.redis_socket_timeout_s}s) must exceed wake_block_ms "
                f"({self.wake_block_ms}ms), or blocking reads time out"
            )
        if self.frame_shape is not None and (len(self.frame_shape) != 2 or min(self.frame_shape) < 1
                                             or self.frame_shape[0] * self.frame_shape[1] != self.input_dim):
            raise ValueError(f"frame_shape {self.frame_shape} must be [height, width] with height * width = "
                             f"input_dim ({self.input_dim})")
        if self.mode == "unsupervised" and self.frame_shape is None and round(self.input_dim**0.5) ** 2 != self.input_dim:
            raise ValueError(f"unsupervised mode makes hybrid frames from 2-D masks: input_dim {self.input_dim} "
                             "is not square, so set frame_shape [height, width]")
        if any(len(k.get_secret_value()) < 16 for k in self.api_keys):
            raise ValueError("api_keys must be at least 16 characters each")
        if self.redis_url is not None and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"redis_url must start with redis://, rediss:// or unix://, got {self.redis_url!r}")
        return self

    @property
    def image_shape(self) -> tuple[int, int]:
        """The frame as an image (for hybrid masks): frame_shape, or a square."""
        if self.frame_shape is not None:
            return self.frame_shape[0], self.frame_shape[1]
        side = round(self.input_dim**0.5)
        return side, self.input_dim // side
