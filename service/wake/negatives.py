"""The negative phase, as it comes back from the sleep worker: checked (age, shape, finite, size)
and applied through the same update rule as the positive phase, right after the deferred positive
step it answers; the next scheduled snapshot serves both."""

from __future__ import annotations

import logging

from ffcore.online import FFGradient

log = logging.getLogger("service.wake")


# How often the queue is read while a step waits for its negatives although the doorbell has not
# rung (a ring is lost while the doorbell's connection reconnects).
UNRUNG_CHECK_S = 0.05


class Negatives:
    """Mixed into :class:`service.wake.worker.WakeWorker`."""

    def negatives_rang(self, now: float) -> bool:
        """Whether the queue is worth reading: the sleep worker rang the doorbell (it publishes on
        ``keys.negatives_doorbell`` with every update) or ``UNRUNG_CHECK_S`` passed. Looking for a
        ring reads this process's own socket, without a round trip through Redis: the wake worker
        looks after every step while it waits."""
        rang = False
        if self.doorbell is None:
            self.doorbell = self.redis.pubsub(ignore_subscribe_messages=True)
            self.doorbell.subscribe(self.keys.negatives_doorbell)
        while self.doorbell.get_message(timeout=0.0) is not None:
            rang = True
        if rang or now - self._negatives_checked >= UNRUNG_CHECK_S:
            self._negatives_checked = now
            return True
        return False

    def apply_negatives(self) -> int:
        """Apply the negative-phase gradients the sleep worker sent, through the same optimizer as
        the positive phase; refuse stale, invalid and exploding ones (counted)."""
        reply = self.redis.xread({self.keys.negatives: self.negatives_cursor}, count=16)
        entries = reply[0][1] if reply else []
        if not entries:
            return 0
        applied = 0
        pipe = self.redis.pipeline(transaction=False)  # the counts and the trim: one round trip
        for eid, fields in entries:
            self.negatives_cursor = eid.decode() if isinstance(eid, bytes) else eid
            if b"dream" not in fields:
                self._refuse_negative(pipe, "invalid", "no dream id")
                continue
            dream = int(fields[b"dream"])
            answered = self.awaiting is not None and dream >= self.awaiting.dream
            if answered:  # applied or refused, the deferred positive step goes in now
                self.release_positive(publish=False)
                self.awaiting = None  # and the next positive step may go
            if self.dream_id - dream > self.settings.max_delta_staleness:
                self.counters["negatives_rejected_stale"] += 1
                self.metrics.negatives_rejected.labels("stale").inc()
                pipe.hincrby(self.keys.model, "negatives_rejected_stale", 1)
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
                    self._refuse_negative(pipe, "exploding", f"changes a layer by {ratio:.3g} of its norm "
                                                       f"(limit {self.settings.max_delta_ratio})")
                    continue
                self.learner.apply(grad)
            except ValueError as e:
                self._refuse_negative(pipe, "invalid", str(e))
                continue
            applied += 1
            # Served by the next scheduled snapshot, the positive and negative phases together.
            self._negatives_since_snapshot += 1
            self.counters["negatives_applied"] += 1
            self.metrics.negatives_applied.inc()
            pipe.hincrby(self.keys.model, "negatives_applied", 1)
        # consumed (one wake worker): keep the queue from holding every update ever sent
        pipe.xtrim(self.keys.negatives, minid=self.negatives_cursor)
        pipe.execute()
        return applied

    def _refuse_negative(self, pipe, reason: str, why: str) -> None:
        log.warning("refused negative update %s: %s", self.negatives_cursor, why)
        self.counters[f"negatives_rejected_{reason}"] = self.counters.get(f"negatives_rejected_{reason}", 0) + 1
        self.metrics.negatives_rejected.labels(reason).inc()
        pipe.hincrby(self.keys.model, f"negatives_rejected_{reason}", 1)
