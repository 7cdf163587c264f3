"""Checkpoints: weights in safetensors, configuration in JSON. Never pickle.

A checkpoint is a folder holding ``model.safetensors`` and ``config.json``. Loading builds the
model from the JSON config, then loads the tensors strictly, so predictions are reproduced exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ffcore.backprop import BackpropMLP
from ffcore.mlp import FFMLP, MLPConfig
from ffcore.recurrent import RecurrentConfig, RecurrentFF
from ffcore.serial import metadata

FORMAT = "ffcore-checkpoint"
FORMAT_VERSION = 1
# kind -> (model class, config class)
MODEL_KINDS = {"ff": (FFMLP, MLPConfig), "bp": (BackpropMLP, MLPConfig), "recurrent": (RecurrentFF, RecurrentConfig)}
WEIGHTS, CONFIG = "model.safetensors", "config.json"


def build_model(kind: str, config):
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r}; choose one of {', '.join(MODEL_KINDS)}")
    model_cls, config_cls = MODEL_KINDS[kind]
    if not isinstance(config, config_cls):
        raise ValueError(f"a {kind} model takes a {config_cls.__name__}, got {type(config).__name__}")
    return model_cls(config)


def save_checkpoint(model, directory: str | Path, extra: dict | None = None) -> Path:
    """Write ``model`` (FFMLP, BackpropMLP or RecurrentFF) to ``directory``; returns the folder."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, directory / WEIGHTS)
    meta = {"format": FORMAT, "version": FORMAT_VERSION, "kind": model.kind,
            "config": model.config.to_dict(), "extra": extra or {}}
    (directory / CONFIG).write_text(json.dumps(meta, indent=2))
    return directory


def read_checkpoint_meta(directory: str | Path) -> dict:
    path = Path(directory) / CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{directory} is not a checkpoint: no {CONFIG}")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    if meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION:
        raise ValueError(f"{path}: not an {FORMAT} v{FORMAT_VERSION} file")
    return meta


def load_checkpoint(directory: str | Path, device: str | torch.device = "cpu"):
    """Rebuild the model saved in ``directory`` on ``device``."""
    meta = read_checkpoint_meta(directory)
    kind = meta.get("kind")
    if kind not in MODEL_KINDS:
        raise ValueError(f"{directory}: unknown model kind {kind!r}")
    model = build_model(kind, MODEL_KINDS[kind][1].from_dict(meta["config"]))
    weights = Path(directory) / WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"{directory} is not a checkpoint: no {WEIGHTS}")
    model.load_state_dict(load_file(weights), strict=True)
    return model.to(device)


def to_bytes(model, dtype: torch.dtype | None = None) -> bytes:
    """The whole model as one safetensors blob, its config in the header metadata (snapshots).
    ``dtype``: floating-point tensors rounded to it (bfloat16 halves a snapshot sent for one use,
    such as a dream; loading casts back to the model's own dtype)."""
    from safetensors.torch import save

    tensors = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().contiguous()
               for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "version": str(FORMAT_VERSION), "kind": model.kind,
            "config": json.dumps(model.config.to_dict())}
    return save(tensors, metadata=meta)


def _read_snapshot(data: bytes) -> tuple[dict, str, dict]:
    """(tensors, kind, config dict) of :func:`to_bytes` output; a ValueError for anything else."""
    from safetensors.torch import load

    try:
        tensors = load(data)
        meta = metadata(data)
    except Exception as e:  # safetensors raises its own error types for malformed bytes
        raise ValueError(f"not a model snapshot: {e}") from e
    kind = meta.get("kind")
    if meta.get("format") != FORMAT or kind not in MODEL_KINDS:
        raise ValueError("not a model snapshot: missing or unknown format/kind metadata")
    return tensors, kind, json.loads(meta["config"])


def from_bytes(data: bytes, device: str | torch.device = "cpu"):
    """Rebuild a model from :func:`to_bytes` output; refuses anything else with a ValueError."""
    tensors, kind, config = _read_snapshot(data)
    model = build_model(kind, MODEL_KINDS[kind][1].from_dict(config))
    model.load_state_dict(tensors, strict=True)
    return model.to(device)


def load_bytes_into(model, data: bytes):
    """Load :func:`to_bytes` output into ``model`` when it has the same kind and config (no new
    model built: the cheap path for a reader of frequent snapshots); else a new model. Returns it."""
    tensors, kind, config = _read_snapshot(data)
    if model is None or kind != model.kind or config != json.loads(json.dumps(model.config.to_dict())):
        return from_bytes(data, "cpu" if model is None else next(model.parameters()).device)
    model.load_state_dict(tensors, strict=True)
    return model
