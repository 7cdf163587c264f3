"""The wake/sleep rhythm: when the accumulated positive phase is applied, published with a
dream for the sleep worker, and how long the next positive step waits for that dream's negatives."""

from __future__ import annotations

import logging
import time

log = logging.getLogger("service.wake")


class Rhythm:
    """Mixed into :class:`service.wake.worker.WakeWorker`."""

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
