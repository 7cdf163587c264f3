"""The wake worker: owns the weights, pipelines frames through the recurrent FF net, learns the
positive phase from every frame, and applies the sleep worker's negative phase between steps.

Learning goes through ``ffcore.online``: each frame's positive gradient is accumulated; every
``wake_window`` frames (or ``wake_window_s`` seconds) the sum becomes a *deferred* step. The
sleep worker gets a "dream" on a pub/sub channel (a sample of those frames with their labels
and stream states, and the weights the step would make); the live weights take the positive
and the negative step together when the negative update comes back on the other channel (at
most ``negative_wait_s`` later; at once when no sleep worker is listening). The two phases
alternate, as in the interleaved trainer.

Frames come from a Redis Stream through a consumer group. Each step advances every stream that
has a pending frame by exactly one frame, so per-stream order holds while many streams share one
tensor step.

Delivery is exactly once relative to checkpoints. A frame is acknowledged only once a checkpoint
holds the weights it changed, together with each stream's applied count and last applied entry
id. After a crash the worker resumes from that checkpoint and re-reads its pending entries:
those the checkpoint already includes (id <= the stream's last applied id) are skipped, the
others are applied again to the restored weights, so every accepted frame ends up in the
weights once and Redis's per-stream applied count equals the accepted count. A Redis outage
(no crash) ends the same way: the first read after it re-reads the pending entries, because a
read whose reply the outage swallowed left its entries delivered but unseen, and a read of new
entries never returns them.

The package: this module is the loop and the positive phase (``WakeWorker``); ``streams`` keeps
each stream's recurrent state, ``rhythm`` decides when positive steps happen, ``negatives``
applies what the sleep worker sends, ``checkpoints`` makes it all durable.
"""

from service.wake.checkpoints import WakeError
from service.wake.streams import StreamTable
from service.wake.worker import CONSUMER, WakeWorker, main

__all__ = ["CONSUMER", "StreamTable", "WakeError", "WakeWorker", "main"]
