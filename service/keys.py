"""Every Redis key the service uses, in one place. Shard-ready: frames live in per-shard streams."""

from __future__ import annotations

from dataclasses import dataclass

WAKE_GROUP = "wake"


@dataclass(frozen=True)
class Keys:
    prefix: str = "ffs"
    shard: int = 0

    @property
    def frames(self) -> str:  # Redis Stream read by the wake worker's consumer group
        return f"{self.prefix}:frames:{self.shard}"

    @property
    def dream(self) -> str:  # hash: id, version, frames of the last dream (its bytes go on ``dreams``)
        return f"{self.prefix}:dream:{self.shard}"

    # The two pub/sub channels carry the wake/sleep traffic: a dream and its negative update are
    # megabytes per positive step, needed once, by a process that is listening. On a channel they
    # are never written to Redis's append-only file (a stored copy of each made Redis write and
    # rewrite ~60 MB/s at 5,000 frames/s: a quarter of the service's throughput on 2 cores).
    @property
    def dreams(self) -> str:  # pub/sub, wake -> sleep: dreams (service.redis_io.Dream), and rings
        return f"{self.prefix}:dreams:{self.shard}"  # (empty messages: look at pause and trigger)

    @property
    def negatives(self) -> str:  # pub/sub, sleep -> wake: negative updates (service.redis_io.NegativeUpdate)
        return f"{self.prefix}:negatives"

    @property
    def snapshot_latest(self) -> str:
        return f"{self.prefix}:snapshot:latest"

    def snapshot(self, version: int) -> str:
        return f"{self.prefix}:snapshot:{version}"

    @property
    def model(self) -> str:  # hash: version, frames_seen, negatives applied/rejected, config
        return f"{self.prefix}:model"

    @property
    def sleep(self) -> str:  # hash: paused, cycles, negatives_generated, last_cycle_*
        return f"{self.prefix}:sleep"

    @property
    def sleep_trigger(self) -> str:
        return f"{self.prefix}:sleep:trigger"

    @property
    def checkpoint_request(self) -> str:
        return f"{self.prefix}:checkpoint:request"

    def heartbeat(self, role: str) -> str:
        return f"{self.prefix}:heartbeat:{role}"

    def stream(self, stream_id: str) -> str:  # hash: received, applied, labeled, correct, accuracy, seq_max
        return f"{self.prefix}:stream:{stream_id}"

    @property
    def streams(self) -> str:  # sorted set: stream id -> Unix time of its last accepted request
        return f"{self.prefix}:streams:active"  # (the stream limit counts those not idle)

    def stream_rate(self, stream_id: str, second: int) -> str:  # frames of a stream in one second
        return f"{self.prefix}:rate:{stream_id}:{second}"

    def stream_state(self, stream_id: str) -> str:  # safetensors bytes of the stream's recurrent state
        return f"{self.prefix}:state:{stream_id}"
