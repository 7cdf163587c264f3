"""The sleep worker: on a schedule, loads the latest weight snapshot, replays recent frames,
generates negative data (supervised: wrong labels drawn from the snapshot's own predictions;
unsupervised: hybrid frames, two replayed frames mixed through a blurred mask) and pushes the
negative-phase update, as a compact weight delta tagged with its snapshot version, onto a Redis
queue for the wake worker. It can be paused, to watch "sleep deprivation" in the metrics."""

from __future__ import annotations

import logging
import signal
import time

import numpy as np
import torch

from ffcore.delta import WeightDelta
from ffcore.negatives import hybrid_images
from service import model as model_io
from service.keys import Keys
from service.metrics import SleepMetrics, serve
from service.redis_io import REDIS_ERRORS, RedisOutage, entry_id_order
from service.settings import Settings

log = logging.getLogger(__name__)
# The wake worker trims what it consumed, and a sleep worker waits for its last update to be
# served before sending the next, so the queue holds a few updates; this cap bounds it anyway.
NEGATIVES_MAXLEN = 100
# A cycle's negatives stand for at most this many times the frames it replays. Past that (sleep
# fell far behind) they are under-weighted instead of landing as one large step, which kills
# units: measured, docs/RESULTS.md.
MAX_WEIGHT_PER_SAMPLE = 2


class SleepWorker:
    def __init__(self, settings: Settings, redis, keys: Keys | None = None, seed: int = 0):
        self.settings = settings
        self.redis = redis
        self.keys = keys or Keys(settings.key_prefix)
        self.generator = torch.Generator().manual_seed(seed)
        self.running = True
        self.cycles = 0
        self._received_at_last_cycle = 0  # the model's received counter at the last cycle
        self._last_pushed: str | None = None  # entry id of this worker's last negative update
        self.metrics = SleepMetrics()

    def stop(self, *_) -> None:
        self.running = False

    @property
    def paused(self) -> bool:
        return self.redis.hget(self.keys.sleep, "paused") == b"1"

    def frames_needing_negatives(self) -> int:
        """Frames accepted by the API so far (all time) that get negatives: the labeled ones, or
        all of them in unsupervised mode."""
        field = "frames_received" if self.settings.mode == "unsupervised" else "labeled_received"
        return int(self.redis.hget(self.keys.model, field) or 0)

    def last_update_served(self) -> bool:
        """Whether the latest snapshot includes (or has refused) this worker's last update: the
        wake worker records the last negative-queue entry each snapshot has seen."""
        if self._last_pushed is None:
            return True
        cursor = self.redis.hget(self.keys.model, "negatives_cursor")
        return cursor is not None and entry_id_order(cursor) >= entry_id_order(self._last_pushed)

    def due(self, last_cycle: float) -> bool:
        if self.redis.getdel(self.keys.sleep_trigger) is not None:
            return True
        if self.paused:
            # Frames that arrive while paused get no negatives ("sleep deprivation"); resuming
            # does not make up for them in one large step.
            self._received_at_last_cycle = self.frames_needing_negatives()
            return False
        if time.monotonic() - last_cycle >= self.settings.sleep_every_s:
            return True
        every = self.settings.sleep_every_frames
        return bool(every) and self.frames_needing_negatives() - self._received_at_last_cycle >= every

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        self._received_at_last_cycle = self.frames_needing_negatives()  # a restart does not replay the past
        last = 0.0
        outage = RedisOutage("sleep")
        while self.running:
            try:
                generated = self.tick(last)
                outage.over()
            except REDIS_ERRORS as e:  # Redis restarting: wait and carry on
                outage.wait(e)
                continue
            if generated is not None:
                last = time.monotonic()
                if generated:
                    continue
            time.sleep(0.05)

    def tick(self, last_cycle: float) -> int | None:
        """Heartbeat, then a cycle if one is due: the negatives generated, or None if none was due."""
        self.redis.set(self.keys.heartbeat("sleep"), time.time(), px=int(self.settings.heartbeat_ttl_s * 1000))
        paused = self.paused
        self.redis.hset(self.keys.sleep, "paused_state", int(paused))
        self.metrics.paused.set(int(paused))
        return self.cycle() if self.due(last_cycle) else None

    def measure_goodness(self, model, positives, labels, negatives, wrong) -> None:
        """Mean goodness per layer of the replayed frames with their true labels (positive) and of
        the negative data (wrong labels, or hybrid frames), over the sleep's iterations, on the
        snapshot's weights."""
        positive, negative = model.initial_state(positives), model.initial_state(negatives)
        for _ in range(self.settings.sleep_iterations):
            positive, g_pos = model.step(positives, labels, positive)
            negative, g_neg = model.step(negatives, wrong, negative)
        for i, (p, n) in enumerate(zip(g_pos.mean(dim=0).tolist(), g_neg.mean(dim=0).tolist())):
            self.metrics.goodness.labels("positive", str(i)).set(p)
            self.metrics.goodness.labels("negative", str(i)).set(n)
            self.metrics.separation.labels(str(i)).set(p - n)

    def cycle(self) -> int:
        """One sleep cycle. Returns the number of negative examples it generated (0 if none)."""
        start = time.perf_counter()
        if not self.last_update_served():
            return 0  # dreaming on weights without the last update would push the same way twice
        received = self.frames_needing_negatives()
        new, self._received_at_last_cycle = received - self._received_at_last_cycle, received
        entries = self.redis.xrevrange(self.keys.replay, count=self.settings.sleep_sample)
        unsupervised = self.settings.mode == "unsupervised"
        labeled = [f for _, f in entries if unsupervised or int(f[b"label"]) >= 0]
        if len(labeled) < (2 if unsupervised else 1) or new <= 0:
            return 0  # nothing new to dream about: skip loading the snapshot
        snap = model_io.load_snapshot(self.redis, self.keys)
        if snap is None:
            return 0
        version, model = snap
        dim = model.config.input_dim
        frames = torch.from_numpy(np.stack([np.frombuffer(f[b"data"], "<f4", dim) for f in labeled]))
        if unsupervised:  # neutral label on top throughout; the negatives are hybrid frames
            labels = wrong = None
            positives = frames
            frames = hybrid_images(frames, self.settings.image_shape, generator=self.generator)
        else:
            labels = torch.tensor([int(f[b"label"]) for f in labeled])
            wrong = model.negative_labels(frames, labels, self.generator)
            positives = frames
        self.measure_goodness(model, positives, labels, frames, wrong)
        # The loss is a mean over the B replayed frames; scaling by new / iterations gives the
        # negative phase the weight of one step per labeled frame that arrived since the last
        # cycle, as the wake worker gives the positive phase.
        iterations = self.settings.sleep_iterations
        scale = min(new, MAX_WEIGHT_PER_SAMPLE * len(labeled)) / iterations
        state, parts = model.initial_state(frames), []
        for _ in range(iterations):
            delta, state = model.negative_delta(frames, wrong, state)
            delta = WeightDelta([(left * scale, right) for left, right in delta.factors])
            # The dreaming copy takes its own step before the next iteration (feedback within
            # sleep); the wake worker later applies the sum of all the steps.
            model.apply_delta(delta)
            parts.append(delta)
        combined = WeightDelta([
            (torch.cat([p.factors[i][0] for p in parts]), torch.cat([p.factors[i][1] for p in parts]))
            for i in range(len(parts[0].factors))
        ])
        pushed = self.redis.xadd(self.keys.negatives, {"version": version, "delta": combined.to_bytes(), "n": len(labeled), "frames": new},
                        maxlen=NEGATIVES_MAXLEN, approximate=True)
        self._last_pushed = pushed.decode() if isinstance(pushed, bytes) else pushed
        self.cycles += 1
        seconds = time.perf_counter() - start
        self.metrics.cycles.inc()
        self.metrics.cycle_seconds.observe(seconds)
        self.metrics.negatives_generated.inc(len(labeled))
        self.metrics.last_cycle_time.set(time.time())
        pipe = self.redis.pipeline(transaction=False)
        pipe.hincrby(self.keys.sleep, "cycles", 1)
        pipe.hincrby(self.keys.sleep, "negatives_generated", len(labeled))
        pipe.hset(self.keys.sleep, mapping={"last_cycle_time": time.time(), "last_cycle_seconds": seconds,
                                            "last_cycle_version": version})
        pipe.execute()
        log.info("sleep cycle %d: %d negatives from snapshot v%d in %.2fs", self.cycles, len(labeled), version, seconds)
        return len(labeled)


def main(settings: Settings) -> None:
    from service.redis_io import sync_client

    worker = SleepWorker(settings, sync_client(settings))
    serve(worker.metrics.registry, settings.host, settings.sleep_metrics_port)
    worker.run()
