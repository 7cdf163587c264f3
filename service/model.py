"""Building the service's model from Settings, and publishing / loading weight snapshots."""

from __future__ import annotations

import torch

from ffcore.checkpoint import from_bytes
from ffcore.finite import all_finite
from ffcore.layers import LayerConfig
from ffcore.online import OnlineConfig
from ffcore.recurrent import RecurrentConfig, RecurrentFF
from service.keys import Keys
from service.settings import Settings


# FFS_DREAM_DTYPE: what a dream's weights and the negative gradient are rounded to on the way.
DREAM_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def recurrent_config(settings: Settings) -> RecurrentConfig:
    layer = LayerConfig(optimizer="sgd", lr=settings.learning_rate, momentum=settings.momentum,
                        weight_decay=settings.weight_decay, peer_normalization=settings.peer_normalization,
                        temperature=settings.temperature)
    return RecurrentConfig(input_dim=settings.input_dim, num_classes=settings.num_classes,
                           widths=tuple(settings.widths), damping=settings.damping, iterations=8, eval_window=(3, 5),
                           layer=layer, readout_lr=settings.readout_step / sum(settings.widths),
                           center_input=settings.center_input, readout_average=settings.readout_average)


def online_config(settings: Settings) -> OnlineConfig:
    return OnlineConfig(lr=settings.learning_rate, momentum=settings.momentum, weight_decay=settings.weight_decay,
                        freeze=settings.freeze, unsupervised=settings.mode == "unsupervised",
                        replay=settings.sleep_sample, step_frames=settings.wake_window)


def build(settings: Settings) -> RecurrentFF:
    """A fresh model, its initial weights drawn from ``settings.seed`` (reproducible runs)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        return RecurrentFF(recurrent_config(settings))


def weights_finite(model: torch.nn.Module) -> bool:
    """No NaN or infinity in any weight: what may be served, checkpointed or dreamt with."""
    return all_finite(model.parameters())


def publish_snapshot(redis, keys: Keys, blob: bytes, version: int, kept: int) -> None:
    """Store ``blob`` (``ffcore.checkpoint.to_bytes`` of the model) as snapshot ``version`` and
    point ``latest`` at it; drop old versions."""
    pipe = redis.pipeline(transaction=True)
    pipe.set(keys.snapshot(version), blob)
    pipe.set(keys.snapshot_latest, version)
    if version - kept > 0:
        pipe.delete(keys.snapshot(version - kept))
    pipe.execute()


def latest_version(redis, keys: Keys) -> int | None:
    v = redis.get(keys.snapshot_latest)
    return int(v) if v is not None else None


def load_snapshot(redis, keys: Keys, device="cpu") -> tuple[int, RecurrentFF] | None:
    """The latest published snapshot as (version, model), or None when none exists yet."""
    version = latest_version(redis, keys)
    if version is None:
        return None
    blob = redis.get(keys.snapshot(version))
    if blob is None:  # replaced between the two reads: take the newer one
        return load_snapshot(redis, keys, device)
    return version, from_bytes(blob, device)
