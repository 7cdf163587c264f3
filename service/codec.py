"""Frames on the wire and in Redis.

Binary request body (``Content-Type: application/x-ffs-frames``), all little-endian::

    magic   4 bytes  b"FFS1"
    dtype   u8       1 = float32, 2 = uint8 (scaled by 1/255)
    pad     3 bytes  zero
    count   u32      number of frames
    dim     u32      values per frame
    labels  count x i32   -1 = unlabeled
    seqs    count x i64   client sequence numbers, -1 = none
    data    count x dim values of dtype

Any body that does not follow this exactly raises :class:`FrameDecodeError` saying what is wrong.
In Redis a frame is a stream entry whose ``data`` field holds raw float32 bytes (no pickle).
"""

from __future__ import annotations

import struct

import numpy as np

MAGIC = b"FFS1"
HEADER = struct.Struct("<4sB3xII")
DTYPES = {1: np.dtype("<f4"), 2: np.dtype("u1")}


class FrameDecodeError(ValueError):
    """A binary frame body is malformed."""


def encode_frames(frames: np.ndarray, labels=None, seqs=None, dtype: int = 1) -> bytes:
    """Build a binary body (clients and tests). ``frames``: (n, dim)."""
    frames = np.asarray(frames)
    if frames.ndim != 2:
        raise ValueError(f"frames must be 2-D (n, dim), got shape {frames.shape}")
    n, dim = frames.shape
    labels = np.full(n, -1, "<i4") if labels is None else np.asarray([(-1 if v is None else v) for v in labels], "<i4")
    seqs = np.full(n, -1, "<i8") if seqs is None else np.asarray([(-1 if v is None else v) for v in seqs], "<i8")
    data = frames.astype(DTYPES[dtype])
    return HEADER.pack(MAGIC, dtype, n, dim) + labels.tobytes() + seqs.tobytes() + data.tobytes()


def decode_frames(body: bytes, keep_uint8: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parse a binary body into float32 frames (n, dim), int labels (n,) and int seqs (n,).
    ``keep_uint8``: uint8 frames stay uint8 (the reader scales them by 1/255 later)."""
    if len(body) < HEADER.size:
        raise FrameDecodeError(f"body of {len(body)} bytes is shorter than the {HEADER.size}-byte header")
    magic, dtype, n, dim = HEADER.unpack_from(body)
    if magic != MAGIC:
        raise FrameDecodeError(f"bad magic {magic!r}: a binary frame body starts with {MAGIC!r}")
    if body[5:8] != b"\x00\x00\x00":
        raise FrameDecodeError("header padding bytes 5-7 must be zero")
    if dtype not in DTYPES:
        raise FrameDecodeError(f"unknown dtype code {dtype}: 1 = float32, 2 = uint8")
    if n == 0 or dim == 0:
        raise FrameDecodeError(f"count and dim must be >= 1, got count={n}, dim={dim}")
    expected = HEADER.size + n * 4 + n * 8 + n * dim * DTYPES[dtype].itemsize
    if len(body) != expected:
        raise FrameDecodeError(f"{n} frames of {dim} {DTYPES[dtype].name} values need {expected} bytes, body has {len(body)}")
    off = HEADER.size
    labels = np.frombuffer(body, "<i4", n, off).astype(np.int64)
    seqs = np.frombuffer(body, "<i8", n, off + 4 * n).astype(np.int64)
    bad = np.nonzero(seqs < -1)[0]
    if len(bad):  # as in JSON: a seq is >= 0, or absent (-1); -2 must not mean "none" by accident
        raise FrameDecodeError(f"frame {int(bad[0])} has seq {int(seqs[bad[0]])}; seqs are >= 0, or -1 for none")
    data = np.frombuffer(body, DTYPES[dtype], n * dim, off + 12 * n).reshape(n, dim)
    if dtype == 2:
        frames = data.copy() if keep_uint8 else data.astype(np.float32) / 255.0
    else:
        frames = data.astype(np.float32)
    return frames, labels, seqs
