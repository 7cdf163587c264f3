"""The wake worker: owns the weights, pipelines frames through the recurrent FF net, learns the
positive phase from every frame, and applies the sleep worker's negative phase between steps.

Learning goes through ``ffcore.online``: each frame's positive gradient is accumulated; every
``wake_window`` frames (or ``wake_window_s`` seconds) the sum is applied as one step, published
as a snapshot together with a "dream" (a sample of those frames with their labels and stream
states), and the next positive step waits until the sleep worker's negative phase for that dream
has been applied (at most ``negative_wait_s``): the two phases alternate, as in the interleaved
trainer.

Frames come from a Redis Stream through a consumer group. Each step advances every stream that
has a pending frame by exactly one frame, so per-stream order holds while many streams share one
tensor step.

Delivery is exactly once relative to checkpoints. A frame is acknowledged only once a checkpoint
holds the weights it changed, together with each stream's applied count and last applied entry
id. After a crash the worker resumes from that checkpoint and re-reads its pending entries:
those the checkpoint already includes (id <= the stream's last applied id) are skipped, the
others are applied again to the restored weights, so every accepted frame ends up in the
weights once and Redis's per-stream applied count equals the accepted count.
"""

from __future__ import annotations

import json
import logging
import shutil
import signal
import time
from collections import OrderedDict, deque
from pathlib import Path

import numpy as np
import torch

from ffcore.checkpoint import from_bytes, load_checkpoint, save_checkpoint, to_bytes
from ffcore.device import resolve_device
from ffcore.online import FFGradient, OnlineLearner
from ffcore.state import RecurrentState
from service import model as model_io
from service.keys import WAKE_GROUP, Keys
from service.metrics import WakeMetrics, serve
from service.redis_io import REDIS_ERRORS, FrameEntry, RedisOutage, entry_id_order, queue_lag
from service.settings import Settings

log = logging.getLogger(__name__)
CONSUMER = "wake-0"
CHECKPOINT_RETRY_MAX_S = 60.0  # a failing checkpoint is retried after 1, 2, 4 ... seconds, at most this


def _shape(config) -> tuple:
    return config.input_dim, config.num_classes, tuple(config.widths)


class WakeError(RuntimeError):
    """The wake worker cannot go on."""


class StreamTable:
    """Per-stream recurrent state on the device: one row of a RecurrentState per stream."""

    def __init__(self):
        self.rows: OrderedDict[str, int] = OrderedDict()
        self.state: RecurrentState | None = None
        self.last_seen: dict[str, float] = {}
        self.hits: dict[str, deque] = {}

    def ensure(self, model, ids: list[str], frames: torch.Tensor, window: int,
               saved: dict[str, RecurrentState] | None = None) -> torch.Tensor:
        """Row indices for ``ids``; a new stream resumes from its ``saved`` state if given, else
        starts from one bottom-up pass of its first frame."""
        new = [i for i, s in enumerate(ids) if s not in self.rows]
        if new:
            init = model.initial_state(frames[new])
            for j, i in enumerate(new):
                if saved and ids[i] in saved:
                    init.scatter(torch.tensor([j], device=frames.device), saved[ids[i]])
            self.state = init if self.state is None else RecurrentState.cat([self.state, init])
            for i in new:
                self.rows[ids[i]] = len(self.rows)
                self.hits.setdefault(ids[i], deque(maxlen=window))
        now = time.monotonic()
        for s in ids:
            self.last_seen[s] = now
        return torch.tensor([self.rows[s] for s in ids], dtype=torch.long, device=frames.device)

    def new_ids(self, ids: list[str]) -> list[str]:
        return [s for s in dict.fromkeys(ids) if s not in self.rows]

    def evict_idle(self, idle_s: float) -> dict[str, RecurrentState]:
        """Drop streams idle longer than ``idle_s``; returns their last states."""
        now = time.monotonic()
        gone = {s: self.state.index([self.rows[s]]) for s, t in self.last_seen.items() if now - t > idle_s}
        if gone:
            self.state = self.state.drop([self.rows[s] for s in gone])
            for s in gone:
                del self.last_seen[s], self.hits[s], self.rows[s]
            self.rows = OrderedDict((s, i) for i, s in enumerate(self.rows))
        return gone


class WakeWorker:
    def __init__(self, settings: Settings, redis, keys: Keys | None = None):
        self.settings = settings
        self.redis = redis
        self.keys = keys or Keys(settings.key_prefix)
        self.device = resolve_device(settings.device)
        self.set_model(model_io.build(settings).to(self.device))
        self.version = 0
        self.frames_seen = 0
        self.streams = StreamTable()
        self.negatives_cursor = "0-0"
        self.applied: dict[str, int] = {}  # frames applied per stream (all time), checkpointed
        self.last_ids: dict[str, str] = {}  # newest applied entry id per stream, checkpointed
        self.last_seqs: dict[str, int] = {}  # newest applied client seq per stream, checkpointed
        self.duplicates: dict[str, int] = {}  # frames skipped for a seq already applied, checkpointed
        self.unacked: list[bytes] = []  # applied, waiting for the next checkpoint to be acknowledged
        self._counts_dirty: set[str] = set()  # streams whose applied count Redis may not have yet
        self.counters = {"steps": 0, "frames_applied": 0, "negatives_applied": 0, "negatives_rejected_stale": 0,
                         "negatives_rejected_invalid": 0}
        self._frames_since_snapshot = 0
        self._negatives_since_snapshot = 0
        self._last_snapshot = 0.0
        self._last_checkpoint = time.monotonic()
        self.checkpoint_error: str | None = None  # why the last checkpoint failed; None once one succeeds
        self._checkpoint_failures = 0
        self._checkpoint_retry_at = 0.0
        self.metrics = WakeMetrics(len(self.model.layers))
        self._last_good = to_bytes(self.model)  # the last published weights (finite by construction)
        self._last_metrics = 0.0
        self._window_started: float | None = None  # when the positive accumulator got its first frame
        self.awaiting: tuple[int, float] | None = None  # (dream version, since): negatives not yet applied
        self._negatives_checked = 0.0
        self._last_positive_step = 0.0
        self._frames_per_entry = 1.0  # running mean: how many entries make wake_read_count frames
        self.running = True

    def set_model(self, model) -> None:
        """Learn ``model`` from now on (a fresh optimizer and positive accumulator)."""
        self.model = model
        self.learner = OnlineLearner(model, model_io.online_config(self.settings))

    # ---- lifecycle -----------------------------------------------------------------------
    @property
    def checkpoint_dir(self) -> Path:
        return Path(self.settings.checkpoint_dir) / "wake"

    def latest_checkpoint(self) -> Path | None:
        pointer = self.checkpoint_dir / "LATEST"
        return self.checkpoint_dir / pointer.read_text().strip() if pointer.is_file() else None

    def resume(self) -> None:
        """Continue from the last checkpoint on disk, if there is one."""
        folder = self.latest_checkpoint()
        if folder is None:
            return
        progress = json.loads((folder / "progress.json").read_text())
        model = load_checkpoint(folder / "model", self.device)
        want, have = self.model.config, model.config
        if _shape(want) != _shape(have):
            raise WakeError(f"the checkpoint in {self.checkpoint_dir} is a {have.input_dim}-{list(have.widths)}-"
                            f"{have.num_classes} net but the settings ask for {want.input_dim}-{list(want.widths)}-"
                            f"{want.num_classes}: point FFS_CHECKPOINT_DIR at a new folder to start afresh")
        self.set_model(model)
        self.version = int(progress["version"])
        self.frames_seen = int(progress["frames_seen"])
        self.negatives_cursor = progress["negatives_cursor"]
        self.applied = {k: int(v) for k, v in progress["applied"].items()}
        self.last_ids = dict(progress["last_ids"])
        self.last_seqs = {k: int(v) for k, v in progress.get("last_seqs", {}).items()}
        self.duplicates = {k: int(v) for k, v in progress.get("duplicates", {}).items()}
        # Redis's applied counts go back to what these weights include; re-reading the pending
        # frames brings them forward again, each frame once.
        pipe = self.redis.pipeline(transaction=False)
        for stream, n in self.applied.items():
            pipe.hset(self.keys.stream(stream), mapping={"applied": n, "duplicates": self.duplicates.get(stream, 0)})
        pipe.hset(self.keys.model, mapping={"frames_applied": sum(self.applied.values()),
                                            "frames_duplicate": sum(self.duplicates.values())})
        pipe.execute()
        self.metrics.checkpoint_time.set((folder / "progress.json").stat().st_mtime)
        log.info("resumed from %s at version %d, %d frames seen", folder, self.version, self.frames_seen)

    def checkpoint(self) -> bool:
        """Weights (safetensors + JSON) and progress in a new folder, made current by atomically
        replacing the LATEST pointer; then the frames it includes are acknowledged. Frames whose
        positive gradient is still accumulated are applied first, so the weights include them.

        If the disk refuses (unwritable, full), nothing is acknowledged and nothing half-written
        is left: the worker keeps learning, retries with backoff, and says why in Redis (for
        /readyz, /v1/model and ingest's backpressure) and in a metric. Returns success."""
        self.positive_step()
        if not self.weights_finite():
            self.publish()  # goes back to the last good snapshot; only finite weights are kept
        name = f"ckpt-{time.time_ns()}"
        tmp = self.checkpoint_dir / f"{name}.tmp"
        try:
            self._write_checkpoint(tmp, name)
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            self._checkpoint_failed(e)
            return False
        if self.checkpoint_error is not None:
            log.warning("checkpoints work again after %d failures", self._checkpoint_failures)
            self.redis.hdel(self.keys.model, "checkpoint_error", "frames_unacked")
        self.checkpoint_error, self._checkpoint_failures = None, 0
        pipe = self.redis.pipeline(transaction=False)
        for stream in self._counts_dirty:  # again, in case a Redis outage swallowed the last write
            pipe.hset(self.keys.stream(stream), mapping={"applied": self.applied.get(stream, 0),
                                                         "duplicates": self.duplicates.get(stream, 0)})
        pipe.execute()
        self._counts_dirty = set()
        if self.unacked:
            pipe = self.redis.pipeline(transaction=False)
            pipe.xack(self.keys.frames, WAKE_GROUP, *self.unacked)
            # Entries up to the newest one acknowledged are done with (one consumer reading in
            # order): trim them, or the stream would hold every frame ever posted.
            pipe.xtrim(self.keys.frames, minid=max(self.unacked, key=entry_id_order), approximate=False)
            pipe.execute()
            self.unacked = []
        self._last_checkpoint = time.monotonic()
        now = time.time()
        self.redis.hset(self.keys.model, mapping={"checkpoint_time": now})
        self.metrics.checkpoint_time.set(now)
        log.info("checkpoint %s written at version %d", name, self.version)
        return True

    def _write_checkpoint(self, tmp: Path, name: str) -> None:
        save_checkpoint(self.model, tmp / "model")
        progress = {"version": self.version, "frames_seen": self.frames_seen, "negatives_cursor": self.negatives_cursor,
                    "applied": self.applied, "last_ids": self.last_ids, "last_seqs": self.last_seqs,
                    "duplicates": self.duplicates}
        (tmp / "progress.json").write_text(json.dumps(progress))
        tmp.rename(self.checkpoint_dir / name)
        pointer = self.checkpoint_dir / "LATEST.tmp"
        pointer.write_text(name)
        pointer.replace(self.checkpoint_dir / "LATEST")
        for old in self.checkpoint_dir.glob("ckpt-*"):
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)

    def _checkpoint_failed(self, error: OSError) -> None:
        self._checkpoint_failures += 1
        delay = min(CHECKPOINT_RETRY_MAX_S, 2.0 ** (self._checkpoint_failures - 1))
        self._checkpoint_retry_at = time.monotonic() + delay
        self.checkpoint_error = f"checkpoint failed in {self.checkpoint_dir}: {error.strerror or error}"
        self.metrics.checkpoint_failures.inc()
        # One line per failure, at most one every few seconds by the backoff: never a flood.
        log.error("%s; %d frames applied but not acknowledged; retrying in %.0f s", self.checkpoint_error,
                  len(self.unacked), delay)
        self.redis.hset(self.keys.model, mapping={"checkpoint_error": self.checkpoint_error,
                                                  "frames_unacked": len(self.unacked)})

    def warm_start(self, folder: str) -> None:
        """Start from the weights of an ``ffcore train`` checkpoint of a recurrent net of the same
        shape (a model pretrained offline, adapted online here); the settings keep their say on
        everything else (damping, readout averaging, centering)."""
        try:
            pretrained = load_checkpoint(folder, self.device)
        except (OSError, ValueError) as e:
            raise WakeError(f"FFS_INIT_CHECKPOINT={folder}: cannot load it: {e}") from e
        if getattr(pretrained, "kind", None) != "recurrent":
            raise WakeError(f"FFS_INIT_CHECKPOINT={folder} holds a {pretrained.kind} model: the service learns a "
                            "recurrent net (train one with `ffcore train --preset ...-recurrent...`)")
        want, have = self.model.config, pretrained.config
        if _shape(want) != _shape(have):
            raise WakeError(f"FFS_INIT_CHECKPOINT={folder} is a {have.input_dim}-{list(have.widths)}-{have.num_classes} "
                            f"net but the settings ask for {want.input_dim}-{list(want.widths)}-{want.num_classes}: "
                            "set FFS_INPUT_DIM, FFS_WIDTHS and FFS_NUM_CLASSES to match it")
        self.model.load_state_dict(pretrained.state_dict())
        if not have.readout_average:  # trained offline: its readout is the last iterate, serve that
            with torch.no_grad():
                self.model.readout_mean.copy_(self.model.readout.linear.weight)
        self.set_model(self.model)
        log.info("warm start from %s", folder)

    def setup(self) -> None:
        self.resume()
        if self.latest_checkpoint() is None:
            if self.settings.init_checkpoint:  # a fresh service: a later restart resumes its own checkpoints
                self.warm_start(self.settings.init_checkpoint)
            self.checkpoint()  # a checkpoint exists from the start: a crash never loses the config
        try:
            self.redis.xgroup_create(self.keys.frames, WAKE_GROUP, id="0", mkstream=True)
        except Exception as e:  # BUSYGROUP: the group exists already, which is what we want
            if "BUSYGROUP" not in str(e):
                raise WakeError(f"cannot create consumer group on {self.keys.frames}: {e}") from e
        config = json.dumps(self.model.config.to_dict())
        self.redis.hset(self.keys.model, mapping={"config": config, "device": str(self.device)})
        self.publish()

    def stop(self, *_) -> None:
        self.running = False

    # ---- the loop ------------------------------------------------------------------------
    def run(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        self.setup()
        self.recover()
        outage = RedisOutage("wake")
        while self.running:
            try:
                self.poll(pending=False)
                outage.over()
            except REDIS_ERRORS as e:  # Redis restarting: keep the weights, wait, carry on
                outage.wait(e)
        if not self.checkpoint():
            raise WakeError(f"{self.checkpoint_error}: the frames applied since the last checkpoint will be "
                            "delivered again when the worker restarts")

    def recover(self) -> int:
        """Re-read every entry this consumer was given but never acknowledged (those after the last
        checkpoint, from before a crash), in order. Returns the frames applied again."""
        cursor, applied = "0", 0
        while True:
            reply = self.redis.xreadgroup(WAKE_GROUP, CONSUMER, {self.keys.frames: cursor},
                                          count=self.read_count())
            entries = reply[0][1] if reply else []
            if not entries:
                break
            cursor = entries[-1][0]
            applied += self.process(entries)
            self.housekeeping()
        if applied:
            log.info("recovered %d frames delivered before a restart", applied)
        return applied

    def poll(self, pending: bool = False) -> int:
        """One round: negatives, then frames (``pending``: all those delivered before a restart;
        else new ones), then housekeeping. Returns frames applied."""
        if pending:
            return self.recover()
        self.apply_negatives()
        self.maybe_positive_step()
        # A full window waiting for its negatives: do not sleep long in the read, they are due.
        block = 5 if self.awaiting is not None and self.learner.positive.count else self.settings.wake_block_ms
        reply = self.redis.xreadgroup(WAKE_GROUP, CONSUMER, {self.keys.frames: ">"},
                                      count=self.read_count(), block=block)
        applied = self.process(reply[0][1] if reply else [])
        self.housekeeping()
        return applied

    def read_count(self) -> int:
        """Entries to read so that a poll holds about ``wake_read_count`` frames."""
        return max(1, min(1024, round(self.settings.wake_read_count / self._frames_per_entry)))

    def housekeeping(self) -> None:
        now = time.monotonic()
        self.redis.set(self.keys.heartbeat("wake"), time.time(), px=int(self.settings.heartbeat_ttl_s * 1000))
        self.maybe_positive_step(window_only=False)
        # Positive steps publish their weights with their dreams; this keeps predict's snapshot
        # fresh in between (the readout learns every frame) and after negatives.
        changed = self._frames_since_snapshot or self._negatives_since_snapshot
        if (self._frames_since_snapshot >= self.settings.snapshot_every_frames
                or (changed and now - self._last_snapshot >= self.settings.snapshot_every_s)):
            self.publish()
        if now >= self._checkpoint_retry_at and (
                self.redis.getdel(self.keys.checkpoint_request) is not None
                or now - self._last_checkpoint >= self.settings.checkpoint_every_s
                or len(self.unacked) >= self.settings.checkpoint_every_frames):
            self.checkpoint()
        elif self.checkpoint_error is not None and now - self._last_metrics >= 1.0:
            self.redis.hset(self.keys.model, "frames_unacked", len(self.unacked))  # ingest's backpressure reads it
        if now - self._last_metrics >= 1.0:
            self.refresh_metrics()
            self._last_metrics = now
        gone = self.streams.evict_idle(self.settings.stream_idle_s)
        if gone:
            if self.settings.evicted_state == "save":  # kept without expiry; the stream resumes from it
                pipe = self.redis.pipeline(transaction=False)
                for s, state in gone.items():
                    pipe.set(self.keys.stream_state(s), state.to_bytes())
                pipe.execute()
            log.info("evicted %d idle streams (state %s)", len(gone), "saved" if self.settings.evicted_state == "save"
                     else "dropped")

    def refresh_metrics(self) -> None:
        """The gauges that are read rather than counted (about once a second)."""
        m = self.metrics
        received, applied, dup = self.redis.hmget(self.keys.model, ["frames_received", "frames_applied",
                                                                    "frames_duplicate"])
        m.queue_lag.set(queue_lag(received, applied, dup))
        m.queue_pending.set(self.redis.xpending(self.keys.frames, WAKE_GROUP)["pending"])
        m.active_streams.set(len(self.streams.rows))
        m.sleep_up.set(int(self.redis.exists(self.keys.heartbeat("sleep"))))
        with torch.no_grad():
            for i, layer in enumerate(self.model.layers):
                m.weight_norm.labels(str(i)).set(float(layer.linear.weight.norm()))
        hits = [sum(h) / len(h) for h in self.streams.hits.values() if h]
        if hits:
            m.accuracy.set(sum(hits) / len(hits))
        if self.device.type == "cuda":
            m.gpu_memory.labels("allocated").set(torch.cuda.memory_allocated(self.device))
            m.gpu_memory.labels("reserved").set(torch.cuda.memory_reserved(self.device))

    # ---- the wake/sleep rhythm -------------------------------------------------------------
    def maybe_positive_step(self, window_only: bool = True) -> bool:
        """Apply the accumulated positive gradient if the window is full (or, unless
        ``window_only``, has waited ``wake_window_s``) and the last step's negatives have been
        applied (or waited for ``negative_wait_s``). Returns whether a step was taken."""
        count = self.learner.positive.count
        if not count:
            return False
        now = time.monotonic()
        if self._window_started is None:
            self._window_started = now
        if count < self.settings.wake_window and (window_only or now - self._window_started < self.settings.wake_window_s):
            return False
        if now - self._last_positive_step < self.settings.wake_step_interval_s:
            return False
        if self.awaiting is not None and now - self._negatives_checked >= 0.002:
            self._negatives_checked = now
            self.apply_negatives()
        if self.awaiting is not None:
            if now - self.awaiting[1] < self.settings.negative_wait_s:
                return False  # frames keep accumulating: the next step covers them all
            log.warning("no negatives for dream v%d after %.1f s: positive step without them",
                        self.awaiting[0], now - self.awaiting[1])
            self.metrics.negatives_missed.inc()
            self.awaiting = None
        self.positive_step()
        return True

    def positive_step(self) -> None:
        """Apply the accumulated positive gradient as one step, publish the weights and the dream
        (a sample of the frames just learned) the sleep worker answers with the negative phase."""
        grad, sample = self.learner.take_positive(), self.learner.take_replay()
        self._window_started = None
        if not grad.count:
            return
        self._last_positive_step = time.monotonic()
        self.learner.apply(grad)
        self.metrics.positive_steps.inc()
        if not self.publish() or sample is None or self.settings.freeze:
            return
        self.redis.hset(self.keys.dream, mapping={"version": self.version, "sample": sample.to_bytes(),
                                                  "frames": grad.count})
        self.awaiting = (self.version, time.monotonic())

    # ---- positive phase ------------------------------------------------------------------
    def process(self, entries: list) -> int:
        """Apply a batch of frame entries (each one request's frames): step k advances every
        stream that has a k-th frame. Entries a checkpoint already includes are skipped, and so
        are frames whose client seq was already applied. Returns the frames applied. Redis is
        written only after every frame is stepped and recorded in memory, so an outage cannot
        leave frames acknowledged but never learned."""
        per_stream: OrderedDict[str, list] = OrderedDict()  # stream -> [(entry id, frame, label, seq)]
        now = time.time()
        seqs: dict[str, int] = {}  # newest client seq per stream in this batch
        duplicates: dict[str, int] = {}
        dim = self.model.config.input_dim
        for eid, fields in entries:
            self.unacked.append(eid)  # acknowledged with the next checkpoint, applied or skipped
            if not fields:  # an entry deleted from the stream while pending: nothing to apply
                continue
            entry = FrameEntry.from_fields(fields, dim)
            self._frames_per_entry += 0.1 * (len(entry.frames) - self._frames_per_entry)
            stream = entry.stream
            last = self.last_ids.get(stream)
            if last is not None and entry_id_order(eid) <= entry_id_order(last):
                continue  # already in the checkpointed weights
            wait = max(now - entry.t, 0.0)
            items = per_stream.setdefault(stream, [])
            for frame, label, seq in zip(entry.frames, entry.labels.tolist(), entry.seqs.tolist()):
                if seq >= 0:
                    # A client that retries after an ambiguous failure (say a 503 while Redis went
                    # down after storing its frames) resends the same seqs: those are learned once.
                    if seq <= max(self.last_seqs.get(stream, -1), seqs.get(stream, -1)):
                        duplicates[stream] = duplicates.get(stream, 0) + 1
                        continue
                    seqs[stream] = seq
                self.metrics.queue_wait_seconds.observe(wait)
                items.append((eid, frame, label, seq))
        per_stream = OrderedDict((s, items) for s, items in per_stream.items() if items)
        stats = {}
        saved = self.saved_states(list(per_stream))  # I/O before the steps, not inside them
        depth = max((len(v) for v in per_stream.values()), default=0)
        self.learn_readout(per_stream, depth)
        for k in range(depth):
            batch = [(s, items[k]) for s, items in per_stream.items() if k < len(items)]
            start = time.perf_counter()
            stats = self.step([s for s, _ in batch], [item for _, item in batch], saved) or stats
            self.metrics.update_seconds.observe(time.perf_counter() - start)
            try:
                self.maybe_positive_step()
            except REDIS_ERRORS as e:
                # The frames of this batch are stepped and recorded whatever happens: the step's
                # weights are kept and published once Redis is back; only its dream is lost.
                log.warning("redis unreachable during a positive step (%s): publishing later", e)
        for key, value in stats.items():  # g_pos_<layer>: the last labeled step's mean goodness
            self.metrics.goodness.labels(key.rsplit("_", 1)[1]).set(value)
        applied = sum(len(items) for items in per_stream.values())
        for stream, n in duplicates.items():
            self.duplicates[stream] = self.duplicates.get(stream, 0) + n
            self._counts_dirty.add(stream)
        for s, items in per_stream.items():
            self.applied[s] = self.applied.get(s, 0) + len(items)
            self._counts_dirty.add(s)
            last_id = items[-1][0]
            self.last_ids[s] = last_id.decode() if isinstance(last_id, bytes) else last_id
            if s in seqs:
                self.last_seqs[s] = seqs[s]
        if not applied and not duplicates:
            return 0
        pipe = self.redis.pipeline(transaction=False)
        for stream, n in duplicates.items():
            pipe.hset(self.keys.stream(stream), "duplicates", self.duplicates[stream])
        if duplicates:
            pipe.hincrby(self.keys.model, "frames_duplicate", sum(duplicates.values()))
            self.metrics.duplicates.inc(sum(duplicates.values()))
        for s in per_stream:
            pipe.hset(self.keys.stream(s), "applied", self.applied[s])
            hits = self.streams.hits.get(s)
            if hits:
                pipe.hset(self.keys.stream(s), "accuracy", sum(hits) / len(hits))
        if applied:
            pipe.hset(self.keys.model, mapping={"frames_seen": self.frames_seen, **stats})
            pipe.hincrby(self.keys.model, "frames_applied", applied)
        pipe.execute()
        return applied

    def learn_readout(self, per_stream: OrderedDict, depth: int) -> None:
        """Prequential: every labeled frame of the batch is predicted (the readout on its bottom-up
        features, the path /v1/predict takes for a frame without context) before the readout
        learns from it, in the order the steps take the frames; many steps' frames at once."""
        order = [(s, items[k]) for k in range(depth) for s, items in per_stream.items()
                 if k < len(items) and items[k][2] >= 0]
        if not order:
            return
        frames = torch.from_numpy(np.stack([item[1] for _, item in order])).to(self.device)
        labels = torch.tensor([item[2] for _, item in order], device=self.device)
        hits = (self.learner.learn_readout(frames, labels).argmax(dim=1) == labels).tolist()
        for (s, _), hit in zip(order, hits):
            window = self.streams.hits.get(s)
            if window is None:
                window = self.streams.hits[s] = deque(maxlen=self.settings.accuracy_window)
            window.append(int(hit))

    def step(self, ids: list[str], items: list[tuple], saved: dict[str, RecurrentState] | None = None) -> dict:
        """One damped synchronous iteration for these streams, each advanced by one frame (its
        ``(entry id, frame (D,), label, seq)``), with a prediction made before learning and the
        positive phase's gradient accumulated. ``saved``: states of evicted streams to resume."""
        frames = torch.from_numpy(np.stack([item[1] for item in items])).to(self.device)
        labels = torch.tensor([item[2] for item in items], device=self.device)
        rows = self.streams.ensure(self.model, ids, frames, self.settings.accuracy_window, saved)
        result = self.learner.learn_step(frames, labels, self.streams.state.index(rows), readout=False)
        new_state = result.state
        stats = {f"g_pos_{i}": g for i, g in enumerate(result.goodness.mean(dim=0).tolist())}
        self.streams.state.scatter(rows, new_state)
        self.frames_seen += len(ids)
        self._frames_since_snapshot += len(ids)
        self.counters["steps"] += 1
        self.counters["frames_applied"] += len(ids)
        self.metrics.steps.inc()
        self.metrics.frames_applied.inc(len(ids))
        return stats

    def saved_states(self, ids: list[str]) -> dict[str, RecurrentState]:
        """States saved at eviction for the streams among ``ids`` that are not active."""
        new = self.streams.new_ids(ids)
        if self.settings.evicted_state != "save" or not new:
            return {}
        blobs = self.redis.mget([self.keys.stream_state(s) for s in new])
        widths = list(self.model.config.widths)
        saved = {}
        for s, blob in zip(new, blobs):
            if blob is None:
                continue
            state = RecurrentState.from_bytes(blob, self.device)
            if [y.shape[1] for y in state.activities] != widths or len(state.activities[0]) != 1:
                log.warning("saved state of stream %r does not fit the model (widths %s): starting afresh", s, widths)
                continue
            saved[s] = state
        return saved

    # ---- negative phase (from the sleep worker) -------------------------------------------
    def apply_negatives(self) -> int:
        """Apply the negative-phase gradients the sleep worker sent, through the same optimizer as
        the positive phase; refuse stale, invalid and exploding ones (counted)."""
        reply = self.redis.xread({self.keys.negatives: self.negatives_cursor}, count=16)
        entries = reply[0][1] if reply else []
        applied = 0
        for eid, fields in entries:
            self.negatives_cursor = eid.decode() if isinstance(eid, bytes) else eid
            version = int(fields[b"version"])
            if self.awaiting is not None and version >= self.awaiting[0]:
                self.awaiting = None  # answered (applied or refused): the next positive step may go
            if self.version - version > self.settings.max_delta_staleness:
                self.counters["negatives_rejected_stale"] += 1
                self.metrics.negatives_rejected.labels("stale").inc()
                self.redis.hincrby(self.keys.model, "negatives_rejected_stale", 1)
                continue
            try:
                grad = FFGradient.from_bytes(fields[b"gradient"], self.device)
                if not grad.is_finite():
                    raise ValueError("non-finite values")
                if len(grad.weights) != len(self.model.layers) or any(
                        g.shape != layer.linear.weight.shape for g, layer in zip(grad.weights, self.model.layers)):
                    raise ValueError(f"gradient shapes {[tuple(g.shape) for g in grad.weights]} do not fit the model")
                ratio = max(self.learner.step_ratio(grad))
                if ratio > self.settings.max_delta_ratio:
                    self._refuse_negative("exploding", f"changes a layer by {ratio:.3g} of its norm "
                                                       f"(limit {self.settings.max_delta_ratio})")
                    continue
                self.learner.apply(grad)
            except ValueError as e:
                self._refuse_negative("invalid", str(e))
                continue
            applied += 1
            self._negatives_since_snapshot += 1
            self.counters["negatives_applied"] += 1
            self.metrics.negatives_applied.inc()
            self.redis.hincrby(self.keys.model, "negatives_applied", 1)
        if entries:  # consumed (one wake worker): keep the queue from holding every update ever sent
            self.redis.xtrim(self.keys.negatives, minid=self.negatives_cursor)
        return applied

    def _refuse_negative(self, reason: str, why: str) -> None:
        log.warning("refused negative update %s: %s", self.negatives_cursor, why)
        self.counters[f"negatives_rejected_{reason}"] = self.counters.get(f"negatives_rejected_{reason}", 0) + 1
        self.metrics.negatives_rejected.labels(reason).inc()
        self.redis.hincrby(self.keys.model, f"negatives_rejected_{reason}", 1)

    # ---- snapshots -----------------------------------------------------------------------
    def weights_finite(self) -> bool:
        return all(bool(torch.isfinite(p).all()) for p in self.model.parameters())

    def publish(self) -> bool:
        """Publish the weights as the next snapshot. Weights that are not finite are never served:
        the worker goes back to the last published snapshot instead (counted). Returns whether
        a new version was published."""
        if not self.weights_finite():
            self.metrics.rollbacks.inc()
            self.redis.hincrby(self.keys.model, "rollbacks", 1)
            log.error("weights became non-finite: back to snapshot v%d", self.version)
            self.set_model(from_bytes(self._last_good, self.device))
            self._frames_since_snapshot = self._negatives_since_snapshot = 0
            return False
        self.version += 1
        self._last_good = to_bytes(self.model)
        model_io.publish_snapshot(self.redis, self.keys, self._last_good, self.version, self.settings.snapshots_kept)
        pipe = self.redis.pipeline(transaction=False)
        # The last negative update these weights include: the sleep worker waits for its own.
        now = time.time()
        pipe.hset(self.keys.model, mapping={"version": self.version, "frames_seen": self.frames_seen,
                                            "snapshot_time": now, "negatives_cursor": self.negatives_cursor})
        self.metrics.version.set(self.version)
        self.metrics.snapshot_time.set(now)
        if self.streams.state is not None:  # predict may use a stream's context: publish it with the weights
            for s, row in self.streams.rows.items():
                pipe.set(self.keys.stream_state(s), self.streams.state.index([row]).to_bytes(),
                         ex=int(self.settings.stream_idle_s) + 60)
        pipe.execute()
        self._frames_since_snapshot = self._negatives_since_snapshot = 0
        self._last_snapshot = time.monotonic()
        return True

def main(settings: Settings) -> None:
    from service.redis_io import sync_client

    worker = WakeWorker(settings, sync_client(settings))
    serve(worker.metrics.registry, settings.host, settings.wake_metrics_port)
    log.info("wake worker on %s, metrics on port %d", worker.device, settings.wake_metrics_port)
    worker.run()
