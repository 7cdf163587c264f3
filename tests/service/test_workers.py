"""Wake and sleep workers against a real redis-server, driven one poll at a time."""

import time

import numpy as np
import pytest
import torch
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from redis import ConnectionError as RedisConnectionError

from ffcore.online import FFGradient
from service.keys import WAKE_GROUP, Keys
from service.redis_io import Dream, NegativeUpdate, enqueue_frames, receive, ring_sleep, sync_client
from service.sleep import SleepWorker
from service.wake import WakeError, WakeWorker
from service.wake.worker import CONSUMER


def _post(redis, keys, stream, value, label=-1, seq=-1):
    """What the API does with one accepted frame."""
    pipe = redis.pipeline(transaction=True)
    enqueue_frames(pipe, keys, stream, np.full((1, 196), value, np.float32), np.array([label]), np.array([seq]),
                   now=0.0)
    pipe.execute()


def _samples(registry) -> dict[str, float]:
    """{"name|label=value,...": value} of a registry's current exposition."""
    text = generate_latest(registry).decode()
    return {s.name + ("|" + ",".join(f"{k}={v}" for k, v in sorted(s.labels.items())) if s.labels else ""): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _polled(settings, redis, keys, frames: int, first: float, step: float) -> WakeWorker:
    """A wake worker that has read and stepped ``frames`` labeled frames of stream "a"."""
    for seq in range(frames):
        _post(redis, keys, "a", first + step * seq, label=seq % 3, seq=seq)
    wake = WakeWorker(settings, redis, keys)
    wake.setup()
    wake.poll(pending=False)
    return wake


def _sleeper(settings, keys=None) -> SleepWorker:
    """A sleep worker listening for dreams (one published before it listens is gone)."""
    sleep = SleepWorker(settings, sync_client(settings), keys)
    sleep.listen()
    return sleep


def _answer(sleep: SleepWorker) -> int:
    """The sleep worker takes the dream sent to it and answers it: the negatives generated."""
    assert sleep.receive(timeout=2.0), "no dream arrived"
    return sleep.cycle()


def _update(dream: int, gradient: bytes, n: int = 1) -> bytes:
    return NegativeUpdate(dream, 0, n, gradient).to_bytes()


class RecordingWake(WakeWorker):
    """Records every step (ours to instrument: the worker's own method)."""

    def __init__(self, *a, fail_at_step=None, **k):
        super().__init__(*a, **k)
        self.calls, self.fail_at_step = [], fail_at_step

    def step(self, ids, items, saved=None):
        if self.fail_at_step is not None and len(self.calls) == self.fail_at_step:
            raise RuntimeError("crash in the middle of a batch")
        self.calls.append([(s, int(item[3])) for s, item in zip(ids, items)])
        return super().step(ids, items, saved)


def test_interleaved_streams_keep_their_order_and_share_steps(settings, sync_redis):
    keys = Keys(settings.key_prefix)
    for seq in range(4):
        for stream in ("a", "b", "c"):
            if not (stream == "c" and seq > 1):
                _post(sync_redis, keys, stream, 0.1 * seq, label=seq % 10, seq=seq)
    worker = RecordingWake(settings, sync_client(settings))
    worker.setup()
    assert worker.poll(pending=False) == 10
    # step k advances every stream that has a k-th frame, by exactly that one frame
    assert worker.calls[0] == [("a", 0), ("b", 0), ("c", 0)]
    assert worker.calls[2] == [("a", 2), ("b", 2)]
    for stream in ("a", "b", "c"):
        seqs = [seq for call in worker.calls for s, seq in call if s == stream]
        assert seqs == sorted(seqs) and len(seqs) == (2 if stream == "c" else 4)
    assert all(len({s for s, _ in call}) == len(call) for call in worker.calls)
    assert sync_redis.hget(keys.stream("a"), "applied") == b"4"
    assert sync_redis.xpending(keys.frames, "wake")["pending"] == 10  # acknowledged by the next checkpoint
    worker.checkpoint()
    assert sync_redis.xpending(keys.frames, "wake")["pending"] == 0


def test_frames_are_acked_only_after_being_applied(settings, sync_redis):
    keys = Keys(settings.key_prefix)
    for seq in range(3):
        _post(sync_redis, keys, "a", 0.5, label=1, seq=seq)
    crashing = RecordingWake(settings, sync_client(settings), fail_at_step=1)
    crashing.setup()
    with pytest.raises(RuntimeError, match="crash"):
        crashing.poll(pending=False)
    assert sync_redis.xpending(keys.frames, "wake")["pending"] == 3  # nothing acknowledged
    assert sync_redis.hget(keys.stream("a"), "applied") is None
    restarted = RecordingWake(settings, sync_client(settings))
    restarted.setup()
    assert restarted.poll(pending=True) == 3  # re-reads its pending entries first
    assert [c[0][1] for c in restarted.calls] == [0, 1, 2]
    assert sync_redis.hget(keys.stream("a"), "applied") == b"3"
    restarted.checkpoint()
    assert sync_redis.xpending(keys.frames, "wake")["pending"] == 0


def test_a_crash_redoes_exactly_the_frames_after_the_last_checkpoint(settings, sync_redis):
    keys = Keys(settings.key_prefix)
    for seq in range(3):
        _post(sync_redis, keys, "a", 0.5, label=1, seq=seq)
    first = RecordingWake(settings, sync_client(settings))
    first.setup()
    first.poll()
    first.checkpoint()  # includes frames 0-2: acknowledged
    for seq in range(3, 6):
        _post(sync_redis, keys, "a", 0.5, label=1, seq=seq)
    _post(sync_redis, keys, "b", 0.5, label=2, seq=0)
    first.poll()  # applied, not yet in a checkpoint: then the worker dies (no checkpoint, no ack)
    assert sync_redis.hget(keys.stream("a"), "applied") == b"6"
    assert sync_redis.xpending(keys.frames, "wake")["pending"] == 4

    second = RecordingWake(settings, sync_client(settings))
    second.setup()  # weights and counts of the checkpoint
    assert sync_redis.hget(keys.stream("a"), "applied") == b"3"
    assert second.poll(pending=True) == 4
    redone = sorted((s, seq) for call in second.calls for s, seq in call)
    assert redone == [("a", 3), ("a", 4), ("a", 5), ("b", 0)]  # each frame after the checkpoint, once
    assert sync_redis.hget(keys.stream("a"), "applied") == b"6" and sync_redis.hget(keys.stream("b"), "applied") == b"1"
    # a crash between writing a checkpoint and acknowledging: the re-read frames are all skipped
    second.unacked, kept = [], list(second.unacked)
    second.checkpoint()
    third = RecordingWake(settings, sync_client(settings))
    third.setup()
    assert third.poll(pending=True) == 0 and third.calls == []
    assert sync_redis.hget(keys.stream("a"), "applied") == b"6"
    third.checkpoint()
    assert sync_redis.xpending(keys.frames, "wake")["pending"] == 0 and kept


class SwallowingWake(RecordingWake):
    """Its first read of new frames is swallowed by an outage: Redis delivered the entries to this
    consumer (they are pending) but the reply never came; then more frames of the same stream
    arrive. Stops once it has applied ``until`` frames of stream "a" (or after 20 polls)."""

    def __init__(self, *a, until: int, **k):
        super().__init__(*a, **k)
        self.until, self.polls = until, []

    def poll(self, pending=False):
        self.polls.append(pending)
        if len(self.polls) == 1:
            self.redis.xreadgroup(WAKE_GROUP, CONSUMER, {self.keys.frames: ">"})  # delivered; the reply is lost
            for seq in range(3, 5):
                _post(self.redis, self.keys, "a", 0.5, label=1, seq=seq)
            raise RedisConnectionError("connection reset by peer (Redis shutting down)")
        applied = super().poll(pending)
        self.running = self.applied.get("a", 0) < self.until and len(self.polls) < 20
        return applied


def test_entries_whose_read_an_outage_swallowed_are_read_again_before_newer_ones(settings, sync_redis):
    keys = Keys(settings.key_prefix)
    for seq in range(3):
        _post(sync_redis, keys, "a", 0.5, label=1, seq=seq)
    wake = SwallowingWake(settings, sync_client(settings), until=5)
    wake.run()  # the real loop: the error, the outage's wait, the next polls, a checkpoint at the end
    assert wake.polls[:2] == [False, True]  # the first read after the outage is of the pending entries
    assert [seq for call in wake.calls for _, seq in call] == [0, 1, 2, 3, 4]  # each frame once, in order
    assert sync_redis.hget(keys.stream("a"), "applied") == b"5"
    assert sync_redis.xpending(keys.frames, "wake")["pending"] == 0  # all acknowledged by the final checkpoint


def test_sleep_pushes_negatives_and_wake_applies_fresh_rejects_stale(settings, sync_redis):
    keys = Keys(settings.key_prefix)
    wake = _polled(settings, sync_client(settings), keys, 8, 0.1, 0.05)
    assert wake.learner.positive.count == 8  # accumulated, fewer than a window: not applied yet
    before = [p.detach().clone() for p in wake.model.layers.parameters()]
    version = wake.version
    sleep = _sleeper(settings)
    wake.positive_step()  # what a full window (or wake_window_s) triggers: a deferred step, a dream
    assert wake.awaiting is not None and not wake.maybe_positive_step()  # waits for the negatives
    assert all(torch.equal(a, b) for a, b in zip(before, wake.model.layers.parameters()))  # deferred
    assert sleep.receive(timeout=2.0) == 1 and sleep.due()
    assert sleep.cycle() == 8 and not sleep.due()
    assert wake.apply_negatives(timeout=2.0) == 1 and wake.awaiting is None  # both phases applied
    assert any(not torch.equal(a, b) for a, b in zip(before, wake.model.layers.parameters()))
    # no snapshot per step: the schedule's next one serves both phases together
    assert wake.version == version and wake._negatives_since_snapshot > 0
    assert wake.counters["negatives_applied"] == 1
    wake.refresh_metrics()
    w, z = _samples(wake.metrics.registry), _samples(sleep.metrics.registry)
    assert w["ffstream_wake_frames_applied_total"] == 8 and w["ffstream_negative_updates_applied_total"] == 1
    assert w["ffstream_queue_wait_seconds_count"] == 8 and w["ffstream_wake_update_duration_seconds_count"] == 8
    assert w["ffstream_queue_lag_frames"] == 0 and w["ffstream_queue_pending_frames"] == 8  # until a checkpoint
    assert w["ffstream_wake_active_streams"] == 1 and w["ffstream_weight_norm|layer=0"] > 0
    assert w["ffstream_online_goodness|layer=1"] > 0 and 0 <= w["ffstream_prequential_accuracy"] <= 1
    assert z["ffstream_sleep_cycles_total"] == 1 and z["ffstream_sleep_negatives_generated_total"] == 8
    separation = z["ffstream_goodness|layer=0,phase=positive"] - z["ffstream_goodness|layer=0,phase=negative"]
    assert z["ffstream_goodness_separation|layer=0"] == pytest.approx(separation)
    # a delta for a dream too many positive steps old is refused, and counted
    wake.dream_id += settings.max_delta_staleness + 1  # as if that many dreams had gone since
    sync_redis.publish(keys.negatives, _update(1, FFGradient([], []).to_bytes(), 0))
    assert wake.apply_negatives(timeout=2.0) == 0
    assert wake.counters["negatives_rejected_stale"] == 1
    assert sync_redis.hget(keys.model, "negatives_rejected_stale") == b"1"


def test_the_workers_talk_by_messages_that_never_reach_the_append_only_file(settings, sync_redis):
    """A dream goes to the sleep worker and its negative update back on pub/sub channels (each
    read from the listener's own socket, no polling, nothing stored); a ring from the sleep
    routes is an empty message; the hash keeps only the dream's id."""
    keys = Keys(settings.key_prefix)
    wake = _polled(settings, sync_client(settings), keys, 4, 0.2, 0.1)
    sleep = _sleeper(settings)
    assert sleep.receive() == 0  # nothing yet: no wait without a timeout
    wake.positive_step()  # a deferred step: its dream goes to the listening sleep worker
    assert sleep.receive(timeout=2.0) == 1 and sleep.latest.id == wake.dream_id == wake.awaiting.dream
    assert sleep.latest.frames == 4
    assert sync_redis.hgetall(keys.dream) == {b"id": str(wake.dream_id).encode(), b"version": str(wake.version).encode(),
                                              b"frames": b"4"}  # no sample, no weights stored
    start = time.monotonic()
    assert sleep.tick() == 4  # publishes the update
    assert time.monotonic() - start < 1.0
    assert wake.apply_negatives(timeout=2.0) == 1 and wake.awaiting is None
    assert sync_redis.keys(f"{keys.prefix}:negatives*") == []  # nothing left in Redis
    pipe = sync_redis.pipeline()
    ring_sleep(pipe, keys)
    pipe.execute()
    start = time.monotonic()
    assert sleep.receive(timeout=2.0) == 1 and time.monotonic() - start < 1.0  # a ring wakes it at once
    assert not sleep.due()  # a ring is not a dream: the latest one is answered already


def test_without_a_listening_sleep_worker_the_step_goes_ahead_at_once(settings, sync_redis):
    keys = Keys(settings.key_prefix)
    wake = _polled(settings, sync_client(settings), keys, 4, 0.2, 0.1)
    before = [p.detach().clone() for p in wake.model.layers.parameters()]
    wake.positive_step()  # nobody listens: no wait of negative_wait_s for an answer that cannot come
    assert wake.awaiting is None and any(not torch.equal(a, b) for a, b in zip(before, wake.model.layers.parameters()))
    assert sync_redis.hget(keys.model, "negatives_missed") == b"1"
    assert _samples(wake.metrics.registry)["ffstream_negative_updates_missed_total"] == 1
    sleep = _sleeper(settings)  # one listens again: the next step waits for its negatives
    _post(sync_redis, keys, "a", 0.9, label=1, seq=4)
    wake.poll(pending=False)
    wake.positive_step()
    assert wake.awaiting is not None and _answer(sleep) == 1
    assert wake.apply_negatives(timeout=2.0) == 1 and wake.awaiting is None


def _one_dream(settings, prefix):
    """A deferred step of 8 frames, its dream answered and applied: (dream bytes, negative bytes, weights)."""
    settings = settings.model_copy(update={"key_prefix": prefix})
    keys = Keys(prefix)
    redis = sync_client(settings)
    wake = _polled(settings, redis, keys, 8, 0.1, 0.05)
    sleep = _sleeper(settings, keys)
    listener = redis.pubsub()  # hears the negative update as the wake worker does
    listener.subscribe(keys.negatives)
    wake.positive_step()
    assert _answer(sleep) == 8
    dream_bytes = len(sleep.latest.weights)
    negative_bytes = len(NegativeUpdate.from_bytes(receive(listener, 2.0)[0]).gradient)
    assert wake.apply_negatives(timeout=2.0) == 1 and wake.awaiting is None
    return dream_bytes, negative_bytes, [p.detach().clone() for p in wake.model.layers.parameters()]


def test_bfloat16_dreams_halve_the_bytes_and_change_the_step_by_rounding_only(settings, sync_redis):
    full = _one_dream(settings.model_copy(update={"dream_dtype": "float32"}), "f32")
    half = _one_dream(settings.model_copy(update={"dream_dtype": "bfloat16"}), "bf16")
    assert half[0] < 0.55 * full[0] and half[1] < 0.55 * full[1]
    moved = 0.0
    for a, b in zip(full[2], half[2]):
        assert a.dtype == b.dtype == torch.float32
        torch.testing.assert_close(b, a, rtol=0, atol=1e-3 * float(a.abs().max()) + 1e-6)
        moved = max(moved, float((a - b).abs().max()))
    assert moved > 0  # the rounding is real: the bytes carried bfloat16


def test_non_finite_negative_updates_are_refused(settings, sync_redis):
    keys = Keys(settings.key_prefix)
    wake = WakeWorker(settings, sync_client(settings))
    wake.setup()
    def gradient(fill):
        return FFGradient([torch.full((32, 196 + 32), fill), torch.ones(32, 42)], [torch.ones(32), torch.ones(32)], 1)

    sync_redis.publish(keys.negatives, _update(wake.dream_id, gradient(float("nan")).to_bytes()))
    sync_redis.publish(keys.negatives, _update(wake.dream_id, b"not safetensors"))
    wrong_shape = FFGradient([torch.ones(3, 3), torch.ones(32, 42)], [torch.ones(3), torch.ones(32)], 1)
    sync_redis.publish(keys.negatives, _update(wake.dream_id, wrong_shape.to_bytes()))
    no_id = _update(wake.dream_id, gradient(1.0).to_bytes()).replace(b'"dream"', b'"dreem"')
    sync_redis.publish(keys.negatives, no_id)  # no dream id
    sync_redis.publish(keys.negatives, b"not a message")
    deadline = time.monotonic() + 2.0
    while wake.counters["negatives_rejected_invalid"] < 5 and time.monotonic() < deadline:
        assert wake.apply_negatives(timeout=0.1) == 0
    assert wake.counters["negatives_rejected_invalid"] == 5
    assert all(torch.isfinite(p).all() for p in wake.model.parameters())
    # finite but exploding: a step many times the size of the weights themselves
    before = [p.detach().clone() for p in wake.model.parameters()]
    sync_redis.publish(keys.negatives, _update(wake.dream_id, gradient(1e5).to_bytes()))
    assert wake.apply_negatives(timeout=2.0) == 0 and wake.counters["negatives_rejected_exploding"] == 1
    assert all(torch.equal(a, b) for a, b in zip(before, wake.model.parameters()))
    assert _samples(wake.metrics.registry)["ffstream_negative_updates_rejected_total|reason=exploding"] == 1


def test_sleep_can_be_paused_and_triggered(settings, sync_redis):
    keys = Keys(settings.key_prefix)
    sleep = SleepWorker(settings, sync_client(settings))
    assert not sleep.due()  # nothing to answer yet
    sleep.latest = Dream(1, 1, 0, b"", b"")  # a dream to answer
    sync_redis.hset(keys.sleep, "paused", 1)
    assert not sleep.due()
    sync_redis.set(keys.sleep_trigger, 1)
    assert sleep.due()
    sync_redis.hset(keys.sleep, "paused", 0)
    assert sleep.due()
    sleep.dreamt = 1  # answered: nothing more until the next dream
    assert not sleep.due()
    sleep.dreamt = 57  # answered many before the wake worker started again on an empty Redis (ids from 1)
    assert sleep.due()


def test_checkpoint_and_resume(settings, sync_redis):
    keys = Keys(settings.key_prefix)
    for seq in range(5):
        _post(sync_redis, keys, "a", 0.3, label=2, seq=seq)
    wake = WakeWorker(settings, sync_client(settings))
    wake.setup()
    wake.poll(pending=False)
    wake.checkpoint()
    resumed = WakeWorker(settings, sync_client(settings))
    resumed.resume()
    assert resumed.frames_seen == 5 and resumed.version == wake.version
    for a, b in zip(wake.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("mode", ["save", "drop"])
def test_idle_streams_are_evicted_and_their_state_saved_or_dropped(settings, sync_redis, mode):
    settings = settings.model_copy(update={"stream_idle_s": 0.05, "evicted_state": mode})
    keys = Keys(settings.key_prefix)
    for seq in range(3):
        _post(sync_redis, keys, "a", 0.2 + 0.1 * seq, label=1, seq=seq)
    wake = WakeWorker(settings, sync_client(settings))
    wake.setup()
    wake.poll(pending=False)
    last = wake.streams.state.index([wake.streams.rows["a"]])
    sync_redis.delete(keys.stream_state("a"))  # only what eviction writes counts here
    time.sleep(0.1)
    wake.housekeeping()
    assert "a" not in wake.streams.rows
    saved = wake.saved_states(["a"])
    if mode == "save":
        assert sync_redis.ttl(keys.stream_state("a")) == -1  # kept without expiry
        assert all(torch.equal(x, y) for x, y in zip(saved["a"].activities, last.activities))
        # back again: the stream resumes from its saved state, not from a bottom-up pass
        rows = wake.streams.ensure(wake.model, ["a"], torch.full((1, 196), 0.5), 10, saved)
        resumed = wake.streams.state.index(rows)
        assert all(torch.equal(x, y) for x, y in zip(resumed.activities, last.activities))
        fresh = wake.model.initial_state(torch.full((1, 196), 0.5))
        assert not torch.equal(fresh.activities[0], last.activities[0])
    else:
        assert saved == {} and sync_redis.get(keys.stream_state("a")) is None


def test_a_checkpoint_of_another_shape_is_refused_clearly(settings, sync_redis):
    WakeWorker(settings, sync_client(settings)).setup()  # writes a checkpoint of the 32-32 net
    wider = settings.model_copy(update={"widths": [48, 48]})
    with pytest.raises(WakeError, match=r"settings ask for 196-\[48, 48\]-10: point FFS_CHECKPOINT_DIR"):
        WakeWorker(wider, sync_client(wider)).setup()


def test_unsupervised_mode_learns_from_unlabeled_frames_and_dreams_hybrids(settings, sync_redis):
    settings = settings.model_copy(update={"mode": "unsupervised"})
    keys = Keys(settings.key_prefix)
    rng = np.random.default_rng(0)
    for seq in range(6):
        frame = rng.random((1, 196), dtype=np.float32)
        pipe = sync_redis.pipeline(transaction=True)
        enqueue_frames(pipe, keys, "u", frame, np.array([-1]), np.array([seq]), now=0.0)
        pipe.execute()
    wake = WakeWorker(settings, sync_client(settings))
    wake.setup()
    before = [p.detach().clone() for p in wake.model.layers.parameters()]
    assert wake.poll() == 6
    sleep = _sleeper(settings)
    wake.positive_step()  # deferred: the weights wait for the negative phase
    assert all(torch.equal(a, b) for a, b in zip(before, wake.model.layers.parameters()))
    assert _answer(sleep) == 6  # hybrids of the six unlabeled frames
    assert wake.apply_negatives(timeout=2.0) == 1
    assert any(not torch.equal(a, b) for a, b in zip(before, wake.model.layers.parameters()))  # learned, no labels
    z = _samples(sleep.metrics.registry)
    assert z["ffstream_goodness|layer=0,phase=negative"] > 0


def test_unsupervised_mode_needs_a_frame_shape_for_non_square_frames():
    from pydantic import ValidationError

    from service.settings import Settings

    with pytest.raises(ValidationError, match="set frame_shape"):
        Settings(mode="unsupervised", input_dim=200)
    assert Settings(mode="unsupervised", input_dim=200, frame_shape=[10, 20]).image_shape == (10, 20)
    assert Settings(mode="unsupervised", input_dim=784).image_shape == (28, 28)


def test_adversarial_frames_never_make_the_served_model_non_finite(settings, sync_redis):
    keys = Keys(settings.key_prefix)
    kinds = {"huge": 3e38, "huge negative": -3e38, "zero": 0.0, "one": 1.0}
    seq = 0
    for value in kinds.values():
        for _ in range(30):  # constant frames with alternating labels
            _post(sync_redis, keys, "adv", value, label=seq % 2, seq=seq)
            seq += 1
    alternating = np.where(np.arange(196) % 2 == 0, 3e38, -3e38).astype(np.float32)[None]
    pipe = sync_redis.pipeline(transaction=True)
    enqueue_frames(pipe, keys, "adv", alternating, np.array([9]), np.array([seq]), now=0.0)
    pipe.execute()
    wake = WakeWorker(settings, sync_client(settings))
    wake.setup()
    applied = 0
    while (n := wake.poll()) > 0:
        applied += n
    assert applied == 4 * 30 + 1
    sleep = _sleeper(settings)
    wake.positive_step()  # weights that would not be finite are never dreamt with: maybe no dream
    sleep.receive(timeout=0.5)
    sleep.cycle()
    wake.apply_negatives(timeout=0.5)
    assert wake.publish()
    from service.model import load_snapshot

    version, served = load_snapshot(sync_redis, keys)
    assert version == wake.version and all(torch.isfinite(p).all() for p in served.parameters())


def test_non_finite_weights_are_never_published_and_roll_back(settings, sync_redis):
    wake = WakeWorker(settings, sync_client(settings))
    wake.setup()  # publishes v1
    good = [p.detach().clone() for p in wake.model.parameters()]
    with torch.no_grad():
        wake.model.layers[0].linear.weight[0, 0] = float("nan")
    assert wake.publish() is False and wake.version == 1
    assert all(torch.equal(a, b) for a, b in zip(good, wake.model.parameters()))
    assert _samples(wake.metrics.registry)["ffstream_weight_rollbacks_total"] == 1
    assert sync_redis.hget(Keys(settings.key_prefix).model, "rollbacks") == b"1"


def test_a_resent_frame_with_an_applied_seq_is_skipped_once_and_counted(settings, sync_redis):
    keys = Keys(settings.key_prefix)
    for seq in (0, 1, 2, 1, 2, 3):  # 1 and 2 resent (say after a 503 whose frames were stored anyway)
        _post(sync_redis, keys, "a", 0.5, label=1, seq=seq)
    _post(sync_redis, keys, "a", 0.5, label=1)  # no seq: always learned
    wake = RecordingWake(settings, sync_client(settings))
    wake.setup()
    assert wake.poll() == 5
    assert [seq for call in wake.calls for _, seq in call] == [0, 1, 2, 3, -1]
    stream = sync_redis.hgetall(keys.stream("a"))
    assert stream[b"applied"] == b"5" and stream[b"duplicates"] == b"2" and stream[b"received"] == b"7"
    wake.checkpoint()
    again = RecordingWake(settings, sync_client(settings))
    again.setup()
    _post(sync_redis, keys, "a", 0.5, label=1, seq=3)  # after a restart the checkpoint remembers seq 3
    assert again.poll() == 0 and again.duplicates == {"a": 3}


def test_a_refused_update_does_not_leave_the_wake_worker_waiting(settings, sync_redis):
    keys = Keys(settings.key_prefix)
    for seq in range(4):
        _post(sync_redis, keys, "a", 0.2 * seq, label=seq % 2, seq=seq)
    wake = WakeWorker(settings, sync_client(settings))
    wake.setup()
    wake.poll()
    sleep = _sleeper(settings)
    wake.positive_step()
    assert _answer(sleep) == 4
    wake.dream_id += settings.max_delta_staleness + 1  # the update goes stale before wake reads it
    assert wake.apply_negatives(timeout=2.0) == 0 and wake.counters["negatives_rejected_stale"] == 1
    assert wake.awaiting is None  # answered, if refused: the next positive step may go ahead
    _post(sync_redis, keys, "a", 0.9, label=1, seq=4)
    wake.poll()
    wake.positive_step()
    assert sleep.receive(timeout=2.0) == 1 and sleep.due() and sleep.cycle() == 1


def test_without_an_answer_the_positive_step_goes_ahead_after_the_wait(settings, sync_redis):
    settings = settings.model_copy(update={"wake_window": 2, "negative_wait_s": 0.2})
    keys = Keys(settings.key_prefix)
    for seq in range(6):
        _post(sync_redis, keys, "a", 0.1 * seq, label=seq % 2, seq=seq)
    wake = WakeWorker(settings, sync_client(settings))
    wake.setup()
    sleep = _sleeper(settings)  # listens, never answers (as if paused)
    wake.poll()  # the first window's step, then frames accumulate while it waits for negatives
    steps = _samples(wake.metrics.registry)["ffstream_positive_steps_total"]
    assert steps == 1 and wake.learner.positive.count == 4 and sleep.receive(timeout=2.0) >= 1
    time.sleep(0.25)  # no answer: after negative_wait_s the next step goes ahead, counted
    assert wake.maybe_positive_step()
    w = _samples(wake.metrics.registry)
    assert w["ffstream_positive_steps_total"] == 2 and w["ffstream_negative_updates_missed_total"] == 1


def test_a_full_step_waits_for_its_negatives_unless_the_sleep_worker_stopped_answering(settings, sync_redis):
    settings = settings.model_copy(update={"wake_window": 2, "wake_window_max": 4, "negative_wait_s": 0.3,
                                           "wake_step_interval_s": 0.0})
    keys = Keys(settings.key_prefix)
    seq = iter(range(100))

    def post(n):
        for _ in range(n):
            k = next(seq)
            _post(sync_redis, keys, "a", 0.05 * k, label=k % 2, seq=k)

    wake = WakeWorker(settings, sync_client(settings))
    wake.setup()
    sleep = _sleeper(settings)
    post(2)
    wake.poll()  # a full window: a step, its dream sent
    assert wake.awaiting is not None and _answer(sleep) == 2  # answered, not yet read by the wake worker
    post(4)
    start = time.monotonic()
    wake.poll()  # at 4 frames (the cap) it reads the answer, then steps again
    assert time.monotonic() - start < 0.25 and wake.awaiting is not None and wake.awaiting.dream == 2
    assert wake.counters["negatives_applied"] == 1
    metrics = _samples(wake.metrics.registry)  # the rhythm, as an operator sees it
    assert metrics["ffstream_positive_step_frames_count"] == 2 and metrics["ffstream_positive_step_frames_sum"] == 4
    assert metrics["ffstream_negative_round_trip_seconds_count"] == 1
    post(4)  # dream 2 is never answered: one wait of negative_wait_s at the cap, then a step without
    start = time.monotonic()
    wake.poll()
    assert time.monotonic() - start >= 0.25 and not wake.sleep_answers
    metrics = _samples(wake.metrics.registry)
    assert metrics["ffstream_negative_updates_missed_total"] == 1
    assert metrics["ffstream_wake_negative_wait_seconds_total"] >= 0.25
    assert metrics["ffstream_negative_round_trip_seconds_count"] == 1  # a step given up on has no round trip
    post(6)
    start = time.monotonic()
    wake.poll()  # no more stalls: frames accumulate past the cap, as when there was no cap
    assert time.monotonic() - start < 0.25 and wake.learner.positive.count > settings.wake_window_max


def test_frames_read_before_the_step_interval_passes_join_the_step_past_the_cap(settings, sync_redis):
    """FFS_WAKE_STEP_INTERVAL_S comes first: the cap makes a step wait only once it has passed
    (so at a full rate a step covers at least the frames of one interval; docs/SERVICE.md)."""
    settings = settings.model_copy(update={"wake_window": 2, "wake_window_max": 4, "negative_wait_s": 0.3,
                                           "wake_step_interval_s": 30.0})
    keys = Keys(settings.key_prefix)
    wake = WakeWorker(settings, sync_client(settings))
    wake.setup()
    sleep = _sleeper(settings)  # listens, does not answer
    for k in range(8):
        _post(sync_redis, keys, "a", 0.05 * k, label=k % 2, seq=k)
    start = time.monotonic()
    wake.poll()  # the first step at 2 frames; the next 6 arrive within the interval: no wait at the cap
    assert time.monotonic() - start < 0.25
    assert _samples(wake.metrics.registry)["ffstream_positive_step_frames_count"] == 1
    assert wake.awaiting is not None and wake.learner.positive.count == 6 > settings.wake_window_max
    assert sleep.receive(timeout=2.0) and sleep.latest.frames == 2  # the one dream, of the first step


def test_frozen_ff_layers_stay_bit_identical_and_the_readout_learns(settings, sync_redis):
    settings = settings.model_copy(update={"freeze": True})
    keys = Keys(settings.key_prefix)
    for seq in range(10):
        _post(sync_redis, keys, "a", 0.1 * seq, label=seq % 3, seq=seq)
    wake = WakeWorker(settings, sync_client(settings))
    wake.setup()
    layers = [p.detach().clone() for p in wake.model.layers.parameters()]
    readout = wake.model.readout.linear.weight.detach().clone()
    assert wake.poll() == 10
    wake.checkpoint()
    assert all(torch.equal(a, b) for a, b in zip(layers, wake.model.layers.parameters()))
    assert not torch.equal(readout, wake.model.readout.linear.weight)
    assert sync_redis.hget(keys.dream, "version") is None  # frozen: nothing for the sleep worker to do


def test_a_fresh_service_warm_starts_from_an_ffcore_checkpoint_of_the_same_shape(settings, sync_redis, tmp_path):
    from ffcore.checkpoint import save_checkpoint
    from ffcore.recurrent import RecurrentConfig, RecurrentFF

    torch.manual_seed(7)
    pretrained = RecurrentFF(RecurrentConfig(input_dim=196, widths=(32, 32), num_classes=10))
    torch.nn.init.normal_(pretrained.readout.linear.weight)  # as if trained: not the zeros of a fresh readout
    save_checkpoint(pretrained, tmp_path / "pretrained")  # what `ffcore train` writes
    warm = settings.model_copy(update={"init_checkpoint": str(tmp_path / "pretrained")})
    wake = WakeWorker(warm, sync_client(warm))
    wake.setup()
    assert all(torch.equal(a, b) for a, b in zip(pretrained.layers.parameters(), wake.model.layers.parameters()))
    assert wake.model.config.readout_average == warm.readout_average  # the settings keep their say
    frames = torch.rand(4, 196)
    assert torch.allclose(wake.model.predict_fast(frames), pretrained.predict_fast(frames), atol=1e-6)
    _post(sync_redis, Keys(settings.key_prefix), "a", 0.3, label=1, seq=0)
    assert wake.poll() == 1  # and it learns on from there
    wake.checkpoint()
    again = WakeWorker(warm, sync_client(warm))  # a restart resumes its own checkpoint, not the pretrained one
    again.setup()
    assert all(torch.equal(a, b) for a, b in zip(wake.model.parameters(), again.model.parameters()))

    other = tmp_path / "other"
    save_checkpoint(RecurrentFF(RecurrentConfig(input_dim=196, widths=(16,), num_classes=10)), other / "ckpt")
    fresh = settings.model_copy(update={"init_checkpoint": str(other / "ckpt"), "checkpoint_dir": str(other / "svc")})
    with pytest.raises(WakeError, match=r"is a 196-\[16\]-10 net but the settings ask for 196-\[32, 32\]-10"):
        WakeWorker(fresh, sync_client(fresh)).setup()
    missing = settings.model_copy(update={"init_checkpoint": str(tmp_path / "nowhere"),
                                          "checkpoint_dir": str(tmp_path / "svc2")})
    with pytest.raises(WakeError, match="cannot load it"):
        WakeWorker(missing, sync_client(missing)).setup()


def test_a_failing_checkpoint_is_retried_and_reported_while_learning_goes_on(settings, sync_redis, tmp_path):
    from fastapi.testclient import TestClient

    from service.api.app import create_app

    keys = Keys(settings.key_prefix)
    worker = WakeWorker(settings, sync_client(settings))
    worker.setup()
    good = worker.settings
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the checkpoint folder should be")
    worker.settings = good.model_copy(update={"checkpoint_dir": str(blocker / "ckpt")})
    for seq in range(3):
        _post(sync_redis, keys, "a", 0.5, label=1, seq=seq)
    assert worker.poll() == 3
    assert worker.checkpoint() is False
    assert not list(tmp_path.glob("**/*.tmp"))  # nothing half-written left behind
    model = sync_redis.hgetall(keys.model)
    assert b"checkpoint failed" in model[b"checkpoint_error"] and model[b"frames_unacked"] == b"3"
    assert sync_redis.xpending(keys.frames, "wake")["pending"] == 3  # not acknowledged: redelivered after a crash
    assert _samples(worker.metrics.registry)["ffstream_checkpoint_failures_total"] == 1
    worker.housekeeping()  # within the backoff: no second attempt yet
    assert _samples(worker.metrics.registry)["ffstream_checkpoint_failures_total"] == 1
    with TestClient(create_app(settings.model_copy(update={"max_unacked_frames": 3}))) as c:
        ready = c.get("/readyz")
        assert ready.status_code == 503 and any("checkpoint failed" in p for p in ready.json()["problems"])
        status = c.get("/v1/model").json()
        assert "checkpoint failed" in status["checkpoint_error"] and status["frames_unacked"] == 3
        r = c.post("/v1/streams/a/frames", json={"frames": [{"data": [0.5] * settings.input_dim}]})
        assert r.status_code == 503 and r.headers["retry-after"] == "10" and "checkpoint" in r.json()["detail"]
    _post(sync_redis, keys, "a", 0.5, label=1, seq=3)
    assert worker.poll() == 1  # learning goes on meanwhile
    worker.settings = good
    assert worker.checkpoint() is True
    assert sync_redis.xpending(keys.frames, "wake")["pending"] == 0
    assert b"checkpoint_error" not in sync_redis.hgetall(keys.model)


def test_a_checkpoint_applies_the_deferred_step_and_still_asks_for_the_negatives(settings, sync_redis):
    keys = Keys(settings.key_prefix)
    for seq in range(6):
        _post(sync_redis, keys, "a", 0.1 * seq, label=seq % 3, seq=seq)
    wake = WakeWorker(settings, sync_client(settings))
    wake.setup()
    wake.poll()
    before = [p.detach().clone() for p in wake.model.layers.parameters()]
    sleep = _sleeper(settings)
    assert wake.checkpoint()  # the weights it saves include every frame it acknowledges
    assert any(not torch.equal(a, b) for a, b in zip(before, wake.model.layers.parameters()))
    assert wake.learner.positive.count == 0 and wake.awaiting is not None and wake.awaiting.positive is None
    assert int(sync_redis.hget(keys.dream, "id")) == wake.awaiting.dream  # negatives still asked for
    assert _answer(sleep) == 6
    assert wake.apply_negatives(timeout=2.0) == 1 and wake.awaiting is None


def _post_fast(redis, keys, stream, frame, label):
    pipe = redis.pipeline(transaction=True)
    enqueue_frames(pipe, keys, stream, frame[None], np.array([label]), np.array([-1]), now=0.0, fast=True)
    pipe.execute()


@pytest.mark.parametrize("layers,freeze", [("all", False), ("readout", False), ("all", True)])
def test_a_fast_correction_is_served_at_once(settings, sync_redis, layers, freeze):
    from service.model import load_snapshot

    settings = settings.model_copy(update={"freeze": freeze, "correction_layers": layers})
    keys = Keys(settings.key_prefix)
    rng = np.random.default_rng(0)
    for seq in range(40):  # some ordinary learning first
        frame = rng.random((1, 196), dtype=np.float32)
        pipe = sync_redis.pipeline(transaction=True)
        enqueue_frames(pipe, keys, "a", frame, np.array([seq % 3]), np.array([seq]), now=0.0)
        pipe.execute()
    wake = WakeWorker(settings, sync_client(settings))
    wake.setup()
    assert wake.poll() == 40
    frame = torch.from_numpy(rng.random(196, dtype=np.float32))
    _, served = load_snapshot(sync_redis, keys)
    given = {int(served.predict(frame[None], m)) for m in ("softmax", "goodness")}
    label = min(set(range(10)) - given)  # a label neither classifier gives
    before = [p.detach().clone() for p in wake.model.layers.parameters()]
    version = wake.version
    _post_fast(sync_redis, keys, "a", frame.numpy(), label)
    assert wake.poll() == 1
    assert wake.version > version  # published at once
    _, served = load_snapshot(sync_redis, keys)
    assert int(served.predict(frame[None], "softmax")) == label
    if freeze or layers == "readout":  # only the readout is corrected, the FF layers stay bit for bit
        assert all(torch.equal(a, b) for a, b in zip(before, wake.model.layers.parameters()))
    else:
        assert not all(torch.equal(a, b) for a, b in zip(before, wake.model.layers.parameters()))
        assert int(served.predict(frame[None], "goodness")) == label
    assert int(sync_redis.hget(keys.model, "fast_corrections")) == 1
    assert _samples(wake.metrics.registry)["ffstream_fast_corrections_total"] == 1
