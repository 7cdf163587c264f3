"""Checkpoints of the wake worker: what makes delivery exactly once (see the package docstring),
written atomically, retried with backoff when the disk refuses, and read back at start-up or
from an ``ffcore train`` folder (warm start)."""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import torch

from ffcore.checkpoint import load_checkpoint, save_checkpoint
from service.keys import WAKE_GROUP
from service.redis_io import entry_id_order

log = logging.getLogger("service.wake")
CHECKPOINT_RETRY_MAX_S = 60.0  # a failing checkpoint is retried after 1, 2, 4 ... seconds, at most this


class WakeError(RuntimeError):
    """The wake worker cannot go on."""


def _shape(config) -> tuple:
    return config.input_dim, config.num_classes, tuple(config.widths)


class Checkpoints:
    """Mixed into :class:`service.wake.worker.WakeWorker` (uses its model, counters and Redis)."""

    @property
    def checkpoint_dir(self) -> Path:
        return Path(self.settings.checkpoint_dir) / "wake"

    def latest_checkpoint(self) -> Path | None:
        pointer = self.checkpoint_dir / "LATEST"
        return self.checkpoint_dir / pointer.read_text().strip() if pointer.is_file() else None

    def resume(self) -> None:
        """Continue from the last checkpoint on disk, if there is one."""
        folder = self.latest_checkpoint()
        if folder is None:
            return
        progress = json.loads((folder / "progress.json").read_text())
        model = load_checkpoint(folder / "model", self.device)
        want, have = self.model.config, model.config
        if _shape(want) != _shape(have):
            raise WakeError(f"the checkpoint in {self.checkpoint_dir} is a {have.input_dim}-{list(have.widths)}-"
                            f"{have.num_classes} net but the settings ask for {want.input_dim}-{list(want.widths)}-"
                            f"{want.num_classes}: point FFS_CHECKPOINT_DIR at a new folder to start afresh")
        self.set_model(model)
        self.version = int(progress["version"])
        self.frames_seen = int(progress["frames_seen"])
        self.applied = {k: int(v) for k, v in progress["applied"].items()}
        self.last_ids = dict(progress["last_ids"])
        self.last_seqs = {k: int(v) for k, v in progress.get("last_seqs", {}).items()}
        self.duplicates = {k: int(v) for k, v in progress.get("duplicates", {}).items()}
        # Redis's applied counts go back to what these weights include; re-reading the pending
        # frames brings them forward again, each frame once.
        pipe = self.redis.pipeline(transaction=False)
        for stream, n in self.applied.items():
            pipe.hset(self.keys.stream(stream), mapping={"applied": n, "duplicates": self.duplicates.get(stream, 0)})
        pipe.hset(self.keys.model, mapping={"frames_applied": sum(self.applied.values()),
                                            "frames_duplicate": sum(self.duplicates.values())})
        pipe.execute()
        self.metrics.checkpoint_time.set((folder / "progress.json").stat().st_mtime)
        log.info("resumed from %s at version %d, %d frames seen", folder, self.version, self.frames_seen)

    def checkpoint(self) -> bool:
        """Weights (safetensors + JSON) and progress in a new folder, made current by atomically
        replacing the LATEST pointer; then the frames it includes are acknowledged. Frames whose
        positive gradient is still accumulated (or deferred, waiting for its negatives) are applied
        first, so the weights include them.

        If the disk refuses (unwritable, full), nothing is acknowledged and nothing half-written
        is left: the worker keeps learning, retries with backoff, and says why in Redis (for
        /readyz, /v1/model and ingest's backpressure) and in a metric. Returns success."""
        self.positive_step(flush=True)
        if not self.weights_finite():
            self.publish()  # goes back to the last good snapshot; only finite weights are kept
        name = f"ckpt-{time.time_ns()}"
        tmp = self.checkpoint_dir / f"{name}.tmp"
        try:
            self._write_checkpoint(tmp, name)
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            self._checkpoint_failed(e)
            return False
        if self.checkpoint_error is not None:
            log.warning("checkpoints work again after %d failures", self._checkpoint_failures)
            self.redis.hdel(self.keys.model, "checkpoint_error", "frames_unacked")
        self.checkpoint_error, self._checkpoint_failures = None, 0
        pipe = self.redis.pipeline(transaction=False)
        for stream in self._counts_dirty:  # again, in case a Redis outage swallowed the last write
            pipe.hset(self.keys.stream(stream), mapping={"applied": self.applied.get(stream, 0),
                                                         "duplicates": self.duplicates.get(stream, 0)})
        pipe.execute()
        self._counts_dirty = set()
        if self.unacked:
            pipe = self.redis.pipeline(transaction=False)
            pipe.xack(self.keys.frames, WAKE_GROUP, *self.unacked)
            # Entries up to the newest one acknowledged are done with (one consumer reading in
            # order): trim them, or the stream would hold every frame ever posted.
            pipe.xtrim(self.keys.frames, minid=max(self.unacked, key=entry_id_order), approximate=False)
            pipe.execute()
            self.unacked = []
        self._last_checkpoint = time.monotonic()
        now = time.time()
        self.redis.hset(self.keys.model, mapping={"checkpoint_time": now})
        self.metrics.checkpoint_time.set(now)
        log.info("checkpoint %s written at version %d", name, self.version)
        return True

    def _write_checkpoint(self, tmp: Path, name: str) -> None:
        save_checkpoint(self.model, tmp / "model")
        progress = {"version": self.version, "frames_seen": self.frames_seen,
                    "applied": self.applied, "last_ids": self.last_ids, "last_seqs": self.last_seqs,
                    "duplicates": self.duplicates}
        (tmp / "progress.json").write_text(json.dumps(progress))
        tmp.rename(self.checkpoint_dir / name)
        pointer = self.checkpoint_dir / "LATEST.tmp"
        pointer.write_text(name)
        pointer.replace(self.checkpoint_dir / "LATEST")
        for old in self.checkpoint_dir.glob("ckpt-*"):
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)

    def _checkpoint_failed(self, error: OSError) -> None:
        self._checkpoint_failures += 1
        delay = min(CHECKPOINT_RETRY_MAX_S, 2.0 ** (self._checkpoint_failures - 1))
        self._checkpoint_retry_at = time.monotonic() + delay
        self.checkpoint_error = f"checkpoint failed in {self.checkpoint_dir}: {error.strerror or error}"
        self.metrics.checkpoint_failures.inc()
        # One line per failure, at most one every few seconds by the backoff: never a flood.
        log.error("%s; %d frames applied but not acknowledged; retrying in %.0f s", self.checkpoint_error,
                  len(self.unacked), delay)
        self.redis.hset(self.keys.model, mapping={"checkpoint_error": self.checkpoint_error,
                                                  "frames_unacked": len(self.unacked)})

    def warm_start(self, folder: str) -> None:
        """Start from the weights of an ``ffcore train`` checkpoint of a recurrent net of the same
        shape (a model pretrained offline, adapted online here); the settings keep their say on
        everything else (damping, readout averaging, centering)."""
        try:
            pretrained = load_checkpoint(folder, self.device)
        except (OSError, ValueError) as e:
            raise WakeError(f"FFS_INIT_CHECKPOINT={folder}: cannot load it: {e}") from e
        if getattr(pretrained, "kind", None) != "recurrent":
            raise WakeError(f"FFS_INIT_CHECKPOINT={folder} holds a {pretrained.kind} model: the service learns a "
                            "recurrent net (train one with `ffcore train --preset ...-recurrent...`)")
        want, have = self.model.config, pretrained.config
        if _shape(want) != _shape(have):
            raise WakeError(f"FFS_INIT_CHECKPOINT={folder} is a {have.input_dim}-{list(have.widths)}-{have.num_classes} "
                            f"net but the settings ask for {want.input_dim}-{list(want.widths)}-{want.num_classes}: "
                            "set FFS_INPUT_DIM, FFS_WIDTHS and FFS_NUM_CLASSES to match it")
        self.model.load_state_dict(pretrained.state_dict())
        if not have.readout_average:  # trained offline: its readout is the last iterate, serve that
            with torch.no_grad():
                self.model.readout_mean.copy_(self.model.readout.linear.weight)
        self.set_model(self.model)
        log.info("warm start from %s", folder)
