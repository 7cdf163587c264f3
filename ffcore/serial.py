"""safetensors bytes for what travels between processes (states, deltas, gradients, dreams):
never pickle, and a ValueError naming the kind for anything malformed."""

from __future__ import annotations

import json
from collections.abc import Callable

import torch
from safetensors.torch import load as st_load


def load_tensors(data: bytes, what: str, expected: Callable[[int], set[str]]) -> dict[str, torch.Tensor]:
    """The tensors of safetensors ``data``, whose names must be exactly ``expected(count)``;
    ``what`` names the kind in the error."""
    try:
        tensors = st_load(data)
    except Exception as e:  # safetensors raises its own error types for malformed bytes
        raise ValueError(f"not a serialized {what}: {e}") from e
    expected = expected(len(tensors))
    if set(tensors) != expected:
        raise ValueError(f"a serialized {what} holds {sorted(expected)}, got {sorted(tensors)}")
    return tensors


def metadata(data: bytes) -> dict:
    """The ``__metadata__`` strings of safetensors bytes (the header: 8 bytes of length, then JSON)."""
    size = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + size]).get("__metadata__", {}) or {}
