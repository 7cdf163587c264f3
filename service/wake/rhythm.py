"""The wake/sleep rhythm: when the accumulated positive phase is stepped, how its negative phase is
asked of the sleep worker, and how long the next step waits for it.

A positive step is *deferred*: the sleep worker gets a dream (a sample of the frames just learned)
with the weights the step would make (``OnlineLearner.trial``), and the live weights take the
positive and the negative step together once the negatives are back. The frames that arrive in
the meantime are stepped on weights where both phases are balanced, one step old; applying the
positive step at once would have them learn on weights raised by the positive phase alone
(benchmarks/online_learning.py, MNIST 50k x 2: deferred 5.63% test error, negatives one step
late 6.54%, in-process interleaved 4.83%)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from ffcore.checkpoint import to_bytes
from ffcore.online import FFGradient
from service.redis_io import Dream

log = logging.getLogger("service.wake")


@dataclass
class Awaited:
    """A dream the sleep worker has not answered yet."""

    dream: int  # the dream's id: its negatives come back tagged with it
    since: float  # monotonic time the dream was published
    positive: FFGradient | None  # the deferred positive step (None once applied without its negatives)


class Rhythm:
    """Mixed into :class:`service.wake.worker.WakeWorker`."""

    awaiting: Awaited | None
    sleep_answers: bool  # the last awaited dream was answered (not given up on after negative_wait_s)

    def maybe_positive_step(self, window_only: bool = True) -> bool:
        """Step the accumulated positive gradient if the window is full (or, unless
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
        if self.awaiting is not None:
            self.apply_negatives()  # those already in this process's socket: no round trip
        if self.awaiting is not None and count >= self.settings.wake_window_max and self.sleep_answers:
            # Full: wait for the answer rather than let the step grow (larger steps learn less
            # per frame). Not after a step went without its negatives (a paused or stuck sleep
            # worker): then steps go ahead every negative_wait_s as before, until one is answered.
            left = self.awaiting.since + self.settings.negative_wait_s - now
            if left > 0:
                self.apply_negatives(timeout=left)
                self.metrics.negative_wait_seconds.inc(time.monotonic() - now)
            now = time.monotonic()
        if self.awaiting is not None:
            if now - self.awaiting.since < self.settings.negative_wait_s:
                return False  # frames keep accumulating: the next step covers them all
            log.warning("no negatives for dream %d after %.1f s: positive step without them",
                        self.awaiting.dream, now - self.awaiting.since)
            self._missed()
            self.release_positive()  # a late answer is still applied if it is not too stale
            self.awaiting = None
            self.sleep_answers = False
        self.positive_step()
        return True

    def positive_step(self, flush: bool = False) -> None:
        """Step the accumulated positive gradient: deferred, with a dream for the sleep worker
        (see the module docstring), or at once when frozen, when there is nothing to dream, or
        when ``flush`` asks for the weights to include every frame learned (a checkpoint)."""
        if flush:
            self.release_positive()
        grad, sample = self.learner.take_positive(), self.learner.take_replay()
        self._window_started = None
        if not grad.count:
            return
        self._last_positive_step = time.monotonic()
        self.metrics.positive_steps.inc()
        self.metrics.step_frames.observe(grad.count)
        dream = sample is not None and not self.settings.freeze and self.awaiting is None
        if dream and not flush:
            with self.learner.trial(grad) as ahead:
                weights = to_bytes(ahead, self.dream_dtype) if self.weights_finite(ahead) else None
            if weights is not None:
                self._dream(sample, weights, grad.count, grad, count_step=True)
                return
            dream = False  # not finite: never dreamt with; applied below, then rolled back (counted)
        self.redis.hincrby(self.keys.model, "positive_steps", 1)
        # At once: the weights include these frames now. A flushed step still gets its negatives
        # (computed on the weights that include it, applied when they come back).
        self.learner.apply(grad)
        if self.publish() and dream:
            self._dream(sample, self._last_good, grad.count, None)

    def _dream(self, sample, weights: bytes, frames: int, positive: FFGradient | None,
               count_step: bool = False) -> None:
        """Ask the sleep worker for the negative phase of ``sample`` on ``weights`` (a snapshot's
        bytes), on its pub/sub channel. The step is awaited before the dream is sent: if Redis
        refuses, the deferred positive step is applied alone after ``negative_wait_s`` instead of
        being lost; if no sleep worker is listening (stopped, restarting), at once. Dreams have
        their own ids, not snapshot versions, so a step need not publish a snapshot: predict's
        snapshots follow their own schedule (``housekeeping``)."""
        self.dream_id += 1
        self.awaiting = Awaited(self.dream_id, time.monotonic(), positive)
        pipe = self.redis.pipeline(transaction=False)  # one round trip per step (``count_step``: its count too)
        if count_step:
            pipe.hincrby(self.keys.model, "positive_steps", 1)
        # The sample travels in float32 whatever FFS_DREAM_DTYPE says: rounded to bfloat16, its
        # frames (or even its states alone) learned worse in-process on low-contrast and sparse
        # frames (docs/RESULTS.md), for 5-15% fewer bytes a step.
        pipe.hset(self.keys.dream, mapping={"id": self.dream_id, "version": self.version, "frames": frames})
        pipe.publish(self.keys.dreams, Dream(self.dream_id, self.version, frames, sample.to_bytes(), weights).to_bytes())
        listeners = pipe.execute()[-1]
        if listeners:
            if self._sleep_unheard:
                log.info("a sleep worker listens again: positive steps wait for their negatives")
            self._sleep_unheard = False
            return
        if not self._sleep_unheard:  # said once, until one listens again
            log.warning("no sleep worker is listening for dreams: positive steps go ahead without negatives")
        self._sleep_unheard = True
        self._missed()
        self.release_positive()
        self.awaiting = None

    def _missed(self) -> None:
        """Count a positive step that goes without its negatives (metric and ``/v1/model``)."""
        self.metrics.negatives_missed.inc()
        self.redis.hincrby(self.keys.model, "negatives_missed", 1)

    def release_positive(self, publish: bool = True) -> None:
        """Apply the deferred positive step (its negatives are back, or it waits no longer)."""
        if self.awaiting is not None and self.awaiting.positive is not None:
            self.learner.apply(self.awaiting.positive)
            self.awaiting.positive = None
            if publish:
                self.publish()
            else:  # the caller publishes, or the snapshot schedule does
                self._negatives_since_snapshot += 1
