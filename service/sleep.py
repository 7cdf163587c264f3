"""The sleep worker: answers each "dream" the wake worker publishes on ``keys.dreams`` (a sample of
the frames its last positive step learned from, with labels and stream states, and the weights
that step makes) with the negative phase computed on those weights: negative data (supervised:
wrong labels drawn from those weights' own predictions; unsupervised: hybrid frames, two
replayed frames mixed through a blurred mask) run from each frame's own context, and the FF-loss
gradient, tagged with the dream's id, goes back on ``keys.negatives``. Its work is proportional
to the frames it dreams. It can be paused, to watch "sleep deprivation" in the metrics."""

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
from service.redis_io import REDIS_ERRORS, Dream, NegativeUpdate, RedisOutage, receive, subscribe
from service.settings import Settings

log = logging.getLogger(__name__)
# The longest wait on the channel: every dream, pause, resume and trigger arrives on it
# (``service.redis_io.ring_sleep``), so this only paces the heartbeat of an idle worker, a stop,
# and how late a ring lost while reconnecting is made up for.
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
        self.subscription = None  # to the wake worker's dreams (``listen``)
        self.latest: Dream | None = None  # the newest dream received (answered once, or on a trigger)
        self.metrics = SleepMetrics()
        self.dream_dtype = model_io.DREAM_DTYPES[settings.dream_dtype]  # of the gradients sent back

    def stop(self, *_) -> None:
        self.running = False

    def listen(self) -> None:
        """Subscribe to the dreams: before anything else, since a dream published while nobody
        listens is gone (the wake worker then steps without negatives)."""
        if self.subscription is None:
            self.subscription = subscribe(self.redis, self.keys.dreams)

    def receive(self, timeout: float = 0.0) -> int:
        """Take the messages on the channel (waiting up to ``timeout`` seconds for the first);
        the newest dream among them is the one to answer. Returns the messages taken."""
        self.listen()
        messages = receive(self.subscription, timeout)
        for data in messages:
            if data:  # empty: a ring (pause, resume, trigger), read in ``due``
                try:
                    self.latest = Dream.from_bytes(data)
                except ValueError as e:
                    log.warning("ignored a dream that cannot be read: %s", e)
        return len(messages)

    def due(self) -> bool:
        """A new dream to answer (not while paused), or a trigger (answers the latest even if
        paused). One round trip, with the heartbeat: the worker asks this after every message."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(self.keys.heartbeat("sleep"), time.time(), px=int(self.settings.heartbeat_ttl_s * 1000))
        pipe.hget(self.keys.sleep, "paused")
        pipe.getdel(self.keys.sleep_trigger)
        _, paused, trigger = pipe.execute()
        paused = paused == b"1"
        self.metrics.paused.set(int(paused))
        if trigger is not None:
            self.dreamt = 0
            return self.latest is not None
        # Paused: the wake worker's positive steps go ahead without negatives after
        # negative_wait_s ("sleep deprivation"); resuming answers only the newest dream.
        # "Different", not "newer": a wake worker that starts on an empty Redis counts from 1 again.
        return not paused and self.latest is not None and self.latest.id != self.dreamt

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
        outage = RedisOutage("sleep")
        while self.running and self.subscription is None:
            try:
                self.listen()
            except REDIS_ERRORS as e:
                outage.wait(e)
        self.warm_up()
        while self.running:
            try:
                if not self.tick():  # nothing answered: wait for a message, not a timer
                    self.receive(DOORBELL_WAIT_S)
                outage.over()
            except REDIS_ERRORS as e:  # Redis restarting: wait and carry on
                outage.wait(e)

    def tick(self) -> int | None:
        """The messages waiting, the heartbeat, then a cycle if one is due: the negatives
        generated, or None if none was due."""
        self.receive()
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
        if self.latest is None:
            return 0
        message = self.latest
        dream, version = message.id, message.version
        self.dreamt = dream
        # (The wake worker dreams only with finite weights, and checks the gradient that comes back.)
        try:
            model = self.model = load_bytes_into(self.model, message.weights)
            sample = ReplaySample.from_bytes(message.sample)
        except ValueError as e:
            log.warning("ignored dream %d: %s", dream, e)
            return 0
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
        update = NegativeUpdate(dream, version, grad.count, grad.to_bytes(self.dream_dtype))
        seconds = time.perf_counter() - start
        # One round trip: the update (the wake worker reads it from its own socket) and the counts.
        pipe = self.redis.pipeline(transaction=False)
        pipe.publish(self.keys.negatives, update.to_bytes())
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
