"""The sleep worker: answers each "dream" the wake worker publishes (a sample of the frames its
last positive step learned from, with labels and stream states, and the weights that step makes)
with the negative phase computed on those weights: negative data (supervised: wrong labels drawn
from those weights' own predictions; unsupervised: hybrid frames, two replayed frames mixed
through a blurred mask) run from each frame's own context, and the FF-loss gradient, tagged with
the dream's id, goes onto a Redis queue for the wake worker. Its work is proportional to the
frames it dreams. It can be paused, to watch "sleep deprivation" in the metrics."""

from __future__ import annotations

import logging
import signal
import time

import torch

from ffcore.checkpoint import from_bytes, load_bytes_into, to_bytes
from ffcore.negatives import hybrid_images
from ffcore.online import ReplaySample, negative_gradient
from service import model as model_io
from service.keys import Keys
from service.metrics import SleepMetrics, serve
from service.redis_io import REDIS_ERRORS, RedisOutage
from service.settings import Settings

log = logging.getLogger(__name__)
# The wake worker trims what it consumed and publishes one dream per positive step, so the
# queue holds a few updates; this cap bounds it anyway.
NEGATIVES_MAXLEN = 100
# The longest wait on the doorbell (``service.redis_io.ring_sleep``): every dream, pause, resume
# and trigger rings it, so this only paces the heartbeat of an idle worker (and a stop).
DOORBELL_WAIT_S = 0.5


class SleepWorker:
    def __init__(self, settings: Settings, redis, keys: Keys | None = None):
        self.settings = settings
        self.redis = redis
        self.keys = keys or Keys(settings.key_prefix)
        self.generator = torch.Generator().manual_seed(settings.seed)
        self.running = True
        self.cycles = 0
        self.dreamt = 0  # id of the last dream answered
        self._measured = 0.0  # when the goodness gauges were last measured
        self.model = None  # the weights being dreamt with, reloaded in place for each dream
        self.metrics = SleepMetrics()
        self.dream_dtype = model_io.DREAM_DTYPES[settings.dream_dtype]  # of the gradients sent back

    def stop(self, *_) -> None:
        self.running = False

    def due(self) -> bool:
        """A new dream to answer (not while paused), or a trigger (answers the latest even if
        paused). One round trip, with the heartbeat: the worker asks this after every doorbell."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(self.keys.heartbeat("sleep"), time.time(), px=int(self.settings.heartbeat_ttl_s * 1000))
        pipe.hget(self.keys.sleep, "paused")
        pipe.getdel(self.keys.sleep_trigger)
        pipe.hget(self.keys.dream, "id")
        _, paused, trigger, latest = pipe.execute()
        paused = paused == b"1"
        self.metrics.paused.set(int(paused))
        if trigger is not None:
            self.dreamt = 0
            return True
        # Paused: the wake worker's positive steps go ahead without negatives after
        # negative_wait_s ("sleep deprivation"); resuming answers only the newest dream.
        # "Different", not "newer": a wake worker that starts on an empty Redis counts from 1 again.
        latest = int(latest or 0)
        return not paused and latest != 0 and latest != self.dreamt

    def warm_up(self) -> None:
        """One dream on random frames before the first real one: torch's first calls take about a
        second, which would otherwise hold the wake worker's first positive steps back."""
        model = model_io.build(self.settings)
        frames = torch.rand(2, self.settings.input_dim)
        labels = torch.zeros(2, dtype=torch.long)
        wrong = model.negative_labels(frames, labels, torch.Generator().manual_seed(0))
        state = model.initial_state(frames)
        self.measure_goodness(model, frames, labels, frames, wrong, state)
        ReplaySample(frames, labels, state).to_bytes()
        negative_gradient(model, frames, wrong, self.settings.sleep_iterations, state).to_bytes()
        from_bytes(to_bytes(model))

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        self.warm_up()
        outage = RedisOutage("sleep")
        while self.running:
            try:
                if not self.tick():  # nothing answered: wait for the doorbell, not a timer
                    self.redis.blpop([self.keys.sleep_doorbell], timeout=DOORBELL_WAIT_S)
                outage.over()
            except REDIS_ERRORS as e:  # Redis restarting: wait and carry on
                outage.wait(e)

    def tick(self) -> int | None:
        """Heartbeat, then a cycle if one is due: the negatives generated, or None if none was due."""
        return self.cycle() if self.due() else None

    def measure_goodness(self, model, positives, labels, negatives, wrong, state) -> None:
        """Mean goodness per layer of the dreamt frames with their true labels (positive) and of
        the negative data (wrong labels, or hybrid frames), after the sleep's iterations from the
        frames' own stream states, on the dream's weights."""
        positive, negative = state, state
        for _ in range(self.settings.sleep_iterations):
            positive, g_pos = model.step(positives, labels, positive)
            negative, g_neg = model.step(negatives, wrong, negative)
        for i, (p, n) in enumerate(zip(g_pos.mean(dim=0).tolist(), g_neg.mean(dim=0).tolist())):
            self.metrics.goodness.labels("positive", str(i)).set(p)
            self.metrics.goodness.labels("negative", str(i)).set(n)
            self.metrics.separation.labels(str(i)).set(p - n)

    def cycle(self) -> int:
        """Answer the latest dream. Returns the number of negative examples generated (0 if none)."""
        start = time.perf_counter()
        dream, version, blob, weights = self.redis.hmget(self.keys.dream, ["id", "version", "sample", "weights"])
        if dream is None or blob is None or weights is None:
            return 0
        dream, version = int(dream), int(version or 0)
        self.dreamt = dream
        # (The wake worker dreams only with finite weights, and checks the gradient that comes back.)
        model = self.model = load_bytes_into(self.model, weights)
        sample = ReplaySample.from_bytes(blob)
        frames, labels = sample.frames, sample.labels
        if self.settings.mode == "unsupervised":  # neutral label on top; the negatives are hybrid frames
            if len(frames) < 2:
                return 0
            positive_labels = wrong = None
            negatives = hybrid_images(frames, self.settings.image_shape, generator=self.generator)
        else:
            positive_labels = labels
            wrong = model.negative_labels(frames, labels, self.generator)
            negatives = frames
        if time.monotonic() - self._measured >= 1.0:  # a gauge: once a second is enough
            self._measured = time.monotonic()
            self.measure_goodness(model, frames, positive_labels, negatives, wrong, sample.state)
        grad = negative_gradient(model, negatives, wrong, self.settings.sleep_iterations, sample.state)
        payload = {"dream": dream, "version": version, "gradient": grad.to_bytes(self.dream_dtype), "n": grad.count}
        seconds = time.perf_counter() - start
        # One round trip: the update, the wake worker's doorbell (it checks for the update without
        # asking Redis until it rings), and the counts.
        pipe = self.redis.pipeline(transaction=False)
        pipe.xadd(self.keys.negatives, payload, maxlen=NEGATIVES_MAXLEN, approximate=True)
        pipe.publish(self.keys.negatives_doorbell, dream)
        pipe.hincrby(self.keys.sleep, "cycles", 1)
        pipe.hincrby(self.keys.sleep, "negatives_generated", len(frames))
        pipe.hset(self.keys.sleep, mapping={"last_cycle_time": time.time(), "last_cycle_seconds": seconds,
                                            "last_cycle_dream": dream, "last_cycle_version": version})
        pipe.execute()
        self.cycles += 1
        self.metrics.cycles.inc()
        self.metrics.cycle_seconds.observe(seconds)
        self.metrics.negatives_generated.inc(len(frames))
        self.metrics.last_cycle_time.set(time.time())
        log.debug("sleep cycle %d: %d negatives for dream %d (snapshot v%d) in %.3fs", self.cycles, len(frames),
                  dream, version, seconds)
        return len(frames)


def main(settings: Settings) -> None:
    from service.redis_io import sync_client

    worker = SleepWorker(settings, sync_client(settings))
    serve(worker.metrics.registry, settings.host, settings.sleep_metrics_port)
    worker.run()
