"""The wake worker's loop and positive phase (the package docstring says how it all fits)."""

from __future__ import annotations

import json
import logging
import signal
import time
from collections import OrderedDict, deque

import numpy as np
import torch

from ffcore.checkpoint import from_bytes, to_bytes
from ffcore.device import resolve_device
from ffcore.fast import correct
from ffcore.online import OnlineLearner
from ffcore.state import RecurrentState
from service import model as model_io
from service.keys import WAKE_GROUP, Keys
from service.metrics import WakeMetrics, serve
from service.redis_io import REDIS_ERRORS, FrameEntry, RedisOutage, entry_id_order, queue_lag
from service.settings import Settings
from service.wake.checkpoints import Checkpoints, WakeError
from service.wake.negatives import Negatives
from service.wake.rhythm import Awaited, Rhythm
from service.wake.streams import StreamTable


log = logging.getLogger("service.wake")
CONSUMER = "wake-0"
# Labeled frames the readout learns ahead of the FF steps (see ``process``).
READOUT_AHEAD_FRAMES = 128


class WakeWorker(Checkpoints, Rhythm, Negatives):
    def __init__(self, settings: Settings, redis, keys: Keys | None = None):
        self.settings = settings
        self.redis = redis
        self.keys = keys or Keys(settings.key_prefix)
        self.device = resolve_device(settings.device)
        self.set_model(model_io.build(settings).to(self.device))
        self.version = 0  # of the published snapshot (what predict serves)
        self.dream_id = 0  # of the last dream sent to the sleep worker: one per positive step
        self.dream_dtype = model_io.DREAM_DTYPES[settings.dream_dtype]
        self.frames_seen = 0
        self.streams = StreamTable()
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
        self.awaiting: Awaited | None = None  # the dream whose negatives are not back yet
        self.subscription = None  # to the sleep worker's negative updates (``listen_negatives``)
        self._sleep_unheard = False  # the last dream found no sleep worker listening
        self.sleep_answers = True  # the last awaited dream was answered (``Rhythm``)
        self._last_positive_step = 0.0
        self._frames_per_entry = 1.0  # running mean: how many entries make wake_read_count frames
        self.running = True

    def set_model(self, model) -> None:
        """Learn ``model`` from now on (a fresh optimizer and positive accumulator)."""
        self.model = model
        self.learner = OnlineLearner(model, model_io.online_config(self.settings))

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
        # Dream ids go on from the last one sent, so the sleep worker sees the next as new.
        self.dream_id = int(self.redis.hget(self.keys.dream, "id") or 0)
        self.listen_negatives()
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
        reread = False
        while self.running:
            try:
                self.poll(pending=reread)
                reread = False
                outage.over()
            except REDIS_ERRORS as e:  # Redis restarting: keep the weights, wait, carry on
                # A read whose reply the outage swallowed left its entries delivered to this
                # consumer (pending) but never seen, and a read of new entries (">") never returns
                # them again; an error inside ``process`` leaves read entries unapplied. So the
                # first read after an outage re-reads the pending entries, before any newer entry
                # of their streams moves ``last_ids`` past them (those already applied are skipped).
                reread = True
                outage.wait(e)
        if self.subscription is not None:
            self.subscription.close()
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
                items.append((eid, frame, label, seq, entry.fast and label >= 0))
        per_stream = OrderedDict((s, items) for s, items in per_stream.items() if items)
        stats = {}
        saved = self.saved_states(list(per_stream))  # I/O before the steps, not inside them
        depth = max((len(v) for v in per_stream.values()), default=0)
        # The readout learns a few steps' frames ahead of the FF steps that take them: ahead, so
        # many frames share one call; a few steps, so its features come from weights at most a
        # couple of positive steps old (a whole 2,048-frame poll learned up front cost 0.2-0.4
        # points of MNIST test error in benchmarks/online_learning.py's service run).
        ahead = max(1, READOUT_AHEAD_FRAMES // max(len(per_stream), 1))
        corrections = 0
        for k in range(depth):
            if k % ahead == 0:
                self.learn_readout(per_stream, k, min(k + ahead, depth))
            batch = [(s, items[k]) for s, items in per_stream.items() if k < len(items)]
            start = time.perf_counter()
            stats = self.step([s for s, _ in batch], [item for _, item in batch], saved) or stats
            corrections += self.learn_fast([item for _, item in batch if item[4]])
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
        if corrections:
            pipe.hincrby(self.keys.model, "fast_corrections", corrections)
        pipe.execute()
        if corrections:
            self.publish()  # a correction is served at once, not after the next snapshot interval
        return applied

    def learn_readout(self, per_stream: OrderedDict, first: int, end: int) -> None:
        """Prequential: every labeled frame of steps ``first`` to ``end`` (excluded) of the batch is
        predicted (the readout on its bottom-up features, the path /v1/predict takes for a frame
        without context) before the readout learns from it, in the order the steps take them."""
        order = [(s, items[k]) for k in range(first, end) for s, items in per_stream.items()
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

    def learn_fast(self, items: list[tuple]) -> int:
        """Learn each labeled frame of a ``learn=fast`` request at once (``ffcore.fast.correct``: the
        readout in one step, the FF layers in at most three fast steps of equation 4, after its
        ordinary step): the softmax readout answers its label for it from the next snapshot on,
        and so does the goodness classifier unless three steps fell short (benchmarks/correction.py
        counts them). The FF layers only with ``FFS_CORRECTION_LAYERS=all``, not frozen, and in
        supervised mode.
        Returns the frames learned."""
        for _, frame, label, _, _ in items:
            correct(self.model, torch.tensor(frame, device=self.device), label,
                    ff_layers=self.settings.correction_layers == "all" and not self.settings.freeze
                    and self.settings.mode == "supervised")  # unsupervised FF layers never see a label
            self.counters["fast_corrections"] = self.counters.get("fast_corrections", 0) + 1
            self.metrics.fast_corrections.inc()
        return len(items)

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

    # ---- snapshots -----------------------------------------------------------------------
    def weights_finite(self, model=None) -> bool:
        return model_io.weights_finite(self.model if model is None else model)

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
        now = time.time()
        pipe.hset(self.keys.model, mapping={"version": self.version, "frames_seen": self.frames_seen,
                                            "snapshot_time": now})
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
