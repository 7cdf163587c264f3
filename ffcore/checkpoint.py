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

FORMAT = "ffcore-checkpoint"
FORMAT_VERSION = 1
MODEL_KINDS = {"ff": FFMLP, "bp": BackpropMLP}
WEIGHTS, CONFIG = "model.safetensors", "config.json"


def build_model(kind: str, config: MLPConfig):
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r}; choose one of {', '.join(MODEL_KINDS)}")
    return MODEL_KINDS[kind](config)


def save_checkpoint(model, directory: str | Path, extra: dict | None = None) -> Path:
    """Write ``model`` (an FFMLP or BackpropMLP) to ``directory``; returns the folder."""
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
    model = build_model(meta["kind"], MLPConfig.from_dict(meta["config"]))
    weights = Path(directory) / WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"{directory} is not a checkpoint: no {WEIGHTS}")
    model.load_state_dict(load_file(weights), strict=True)
    return model.to(device)
