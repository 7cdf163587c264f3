"""The negative phase, as it comes back from the sleep worker (a message on the ``keys.negatives``
channel, read from this process's own socket): checked (age, shape, finite, size) and applied
through the same update rule as the positive phase, right after the deferred positive step it
answers; the next scheduled snapshot serves both."""

from __future__ import annotations

import logging
import time

from ffcore.online import FFGradient
from service.redis_io import NegativeUpdate, receive, subscribe

log = logging.getLogger("service.wake")


class Negatives:
    """Mixed into :class:`service.wake.worker.WakeWorker`."""

    def listen_negatives(self) -> None:
        """Subscribe to the sleep worker's negative updates: before the first dream, since a
        message published while nobody listens is gone."""
        if self.subscription is None:
            self.subscription = subscribe(self.redis, self.keys.negatives)

    def apply_negatives(self, timeout: float = 0.0) -> int:
        """Apply the negative-phase gradients the sleep worker sent (those already in this
        process's socket, or that arrive within ``timeout`` seconds), through the same optimizer
        as the positive phase; refuse stale, invalid and exploding ones (counted)."""
        self.listen_negatives()
        messages = receive(self.subscription, timeout)
        if not messages:
            return 0
        applied = 0
        pipe = self.redis.pipeline(transaction=False)  # the counts: one round trip
        for data in messages:
            try:
                update = NegativeUpdate.from_bytes(data)
            except ValueError as e:
                self._refuse_negative(pipe, "invalid", str(e))
                continue
            dream = update.dream
            answered = self.awaiting is not None and dream >= self.awaiting.dream
            if answered:  # applied or refused, the deferred positive step goes in now
                self.metrics.round_trip_seconds.observe(time.monotonic() - self.awaiting.since)
                self.release_positive(publish=False)
                self.awaiting = None  # and the next positive step may go
                self.sleep_answers = True
            if self.dream_id - dream > self.settings.max_delta_staleness:
                self.counters["negatives_rejected_stale"] += 1
                self.metrics.negatives_rejected.labels("stale").inc()
                pipe.hincrby(self.keys.model, "negatives_rejected_stale", 1)
                continue
            try:
                grad = FFGradient.from_bytes(update.gradient, self.device)
                if not grad.is_finite():
                    raise ValueError("non-finite values")
                if len(grad.weights) != len(self.model.layers) or any(
                        g.shape != layer.linear.weight.shape for g, layer in zip(grad.weights, self.model.layers)):
                    raise ValueError(f"gradient shapes {[tuple(g.shape) for g in grad.weights]} do not fit the model")
                ratio = max(self.learner.step_ratio(grad))
                if ratio > self.settings.max_delta_ratio:
                    self._refuse_negative(pipe, "exploding", f"changes a layer by {ratio:.3g} of its norm "
                                                       f"(limit {self.settings.max_delta_ratio})", dream)
                    continue
                self.learner.apply(grad)
            except ValueError as e:
                self._refuse_negative(pipe, "invalid", str(e), dream)
                continue
            applied += 1
            # Served by the next scheduled snapshot, the positive and negative phases together.
            self._negatives_since_snapshot += 1
            self.counters["negatives_applied"] += 1
            self.metrics.negatives_applied.inc()
            pipe.hincrby(self.keys.model, "negatives_applied", 1)
        pipe.execute()
        return applied

    def _refuse_negative(self, pipe, reason: str, why: str, dream: int | None = None) -> None:
        log.warning("refused negative update%s: %s", "" if dream is None else f" for dream {dream}", why)
        self.counters[f"negatives_rejected_{reason}"] = self.counters.get(f"negatives_rejected_{reason}", 0) + 1
        self.metrics.negatives_rejected.labels(reason).inc()
        pipe.hincrby(self.keys.model, f"negatives_rejected_{reason}", 1)
