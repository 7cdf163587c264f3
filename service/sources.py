"""Sources of frames for ``ffstream send``: video files and cameras, image folders, sensor files.

Every source yields ``(frame, label)``: a float32 vector of the model's ``input_dim`` values in
[0, 1] (or the file's own values, for sensor vectors) and an int label or None.

Video is decoded with PyAV: its wheels carry FFmpeg's libraries, so decoding needs no system
package and no subprocess, and frames arrive as numpy arrays (imageio-ffmpeg pipes raw bytes
from an ffmpeg binary instead). A camera is a device path (``/dev/video0``, read with v4l2).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".flv", ".gif"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}


class SourceError(ValueError):
    """A source cannot be read as frames of the model's shape; the message says why."""


@dataclass
class FrameShape:
    """How images become frames: ``height`` x ``width``, gray (1 channel) or RGB (3)."""

    height: int
    width: int
    channels: int = 1

    @property
    def size(self) -> int:
        return self.height * self.width * self.channels

    @classmethod
    def for_input(cls, input_dim: int, shape: tuple[int, int] | None = None, color: bool = False) -> FrameShape:
        channels = 3 if color else 1
        if shape is not None:
            out = cls(shape[0], shape[1], channels)
        else:
            side = math.isqrt(input_dim // channels)
            if side * side * channels != input_dim:
                raise SourceError(f"the model takes {input_dim} values per frame, not a square {'RGB ' if color else ''}"
                                  "image: give --shape HEIGHT WIDTH")
            out = cls(side, side, channels)
        if out.size != input_dim:
            raise SourceError(f"{out.height}x{out.width}x{out.channels} = {out.size} values, but the model takes "
                              f"{input_dim} per frame")
        return out


def to_frame(image: np.ndarray, shape: FrameShape) -> np.ndarray:
    """An (H, W) or (H, W, C) uint8 image -> the model's flattened float32 frame in [0, 1]."""
    from PIL import Image

    img = Image.fromarray(image)
    img = img.convert("RGB" if shape.channels == 3 else "L")
    if img.size != (shape.width, shape.height):
        img = img.resize((shape.width, shape.height), Image.Resampling.BILINEAR)
    return (np.asarray(img, dtype=np.float32) / 255.0).reshape(-1)


def read_labels(path: Path) -> dict[int, int]:
    """A side file of ``frame_index,label`` lines (a header line is allowed)."""
    labels: dict[int, int] = {}
    with path.open(newline="") as f:
        for n, row in enumerate(csv.reader(f), 1):
            if not row or row[0].strip().startswith("#"):
                continue
            try:
                index, label = int(row[0]), int(row[1])
            except (ValueError, IndexError):
                if n == 1:
                    continue  # a header
                raise SourceError(f"{path}:{n}: expected frame_index,label, got {','.join(row)!r}") from None
            if index < 0 or label < 0:
                raise SourceError(f"{path}:{n}: frame index and label must be >= 0")
            labels[index] = label
    return labels


@dataclass
class Source:
    frames: Iterator[tuple[np.ndarray, int | None]]
    fps: float | None  # the source's own rate (video), None when it has none
    total: int | None
    kind: str


def video_source(path: str, shape: FrameShape) -> Source:
    import av

    options = {"format": "v4l2"} if path.startswith("/dev/video") else {}
    try:
        container = av.open(path, **options)
    except (av.error.FFmpegError, OSError) as e:
        raise SourceError(f"cannot open video {path}: {e}") from e
    if not container.streams.video:
        container.close()
        raise SourceError(f"{path} has no video stream")
    stream = container.streams.video[0]
    fps = float(stream.average_rate) if stream.average_rate else None
    total = stream.frames or None

    def frames():
        try:
            for frame in container.decode(stream):
                fmt = "rgb24" if shape.channels == 3 else "gray"
                yield to_frame(frame.to_ndarray(format=fmt), shape), None
        finally:
            container.close()

    return Source(frames(), fps, total, "video")


def folder_source(folder: Path, shape: FrameShape) -> Source:
    """Images in ``folder`` (sorted by name); with sub-folders, each sub-folder is a class,
    labeled by its index in the sorted sub-folder names."""
    from PIL import Image

    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if classes:
        files = [(p, i) for i, c in enumerate(classes) for p in sorted((folder / c).iterdir())
                 if p.suffix.lower() in IMAGE_SUFFIXES]
    else:
        files = [(p, None) for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise SourceError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder}")

    def frames():
        for path, label in files:
            try:
                with Image.open(path) as img:
                    yield to_frame(np.asarray(img.convert("RGB")), shape), label
            except OSError as e:
                raise SourceError(f"{path}: not a readable image ({e})") from e

    return Source(frames(), None, len(files), f"images ({len(classes)} classes)" if classes else "images")


def _check_vectors(x: np.ndarray, input_dim: int, where: str) -> np.ndarray:
    if x.ndim != 2 or x.shape[1] != input_dim:
        raise SourceError(f"{where}: expected rows of {input_dim} values (the model's input), got shape {x.shape}")
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise SourceError(f"{where}: row {int(np.argmin(np.isfinite(x).all(axis=1)))} holds NaN or infinity")
    return x


def array_source(path: Path, input_dim: int, label_column: str | None = None) -> Source:
    """Sensor vectors: CSV (a header row allowed; ``label_column`` by name or index), NPY (n, D),
    or NPZ (``frames`` or ``x``, optional ``labels`` or ``y``)."""
    labels = None
    suffix = path.suffix.lower()
    if suffix == ".npy":
        x = np.load(path, allow_pickle=False)
    elif suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            key = next((k for k in ("frames", "x") if k in z), None)
            if key is None:
                raise SourceError(f"{path}: an NPZ needs an array named 'frames' or 'x'; it has {sorted(z.files)}")
            x = z[key]
            ykey = next((k for k in ("labels", "y") if k in z), None)
            labels = z[ykey] if ykey else None
    elif suffix == ".csv":
        x, labels = _read_csv(path, label_column)
    else:
        raise SourceError(f"{path}: not a video, image folder, CSV, NPY or NPZ")
    x = _check_vectors(np.asarray(x), input_dim, str(path))
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (len(x),) or not np.issubdtype(labels.dtype, np.number):
            raise SourceError(f"{path}: labels must be one number per row ({len(x)}), got shape {labels.shape}")
    rows = [(x[i], None if labels is None or labels[i] < 0 else int(labels[i])) for i in range(len(x))]
    return Source(iter(rows), None, len(x), "vectors")


def _read_csv(path: Path, label_column: str | None) -> tuple[np.ndarray, np.ndarray | None]:
    with path.open(newline="") as f:
        rows = [r for r in csv.reader(f) if r]
    if not rows:
        raise SourceError(f"{path} is empty")
    header = None
    try:
        [float(v) for v in rows[0]]
    except ValueError:
        header, rows = rows[0], rows[1:]
    column = None
    if label_column is not None:
        if header is not None and label_column in header:
            column = header.index(label_column)
        elif label_column.lstrip("-").isdigit():
            column = int(label_column) % len(rows[0])
        else:
            raise SourceError(f"{path}: no column {label_column!r} (header: {header})")
    try:
        values = np.array([[float(v) for v in r] for r in rows], dtype=np.float64)
    except ValueError as e:
        raise SourceError(f"{path}: every value must be a number ({e})") from None
    if column is None:
        return values, None
    return np.delete(values, column, axis=1), values[:, column].astype(np.int64)


def open_source(spec: str, input_dim: int, shape: tuple[int, int] | None = None, color: bool = False,
                label_column: str | None = None, labels_file: Path | None = None) -> Source:
    """The source named by ``spec`` (a path or a camera device), frames of the model's shape, and
    labels from ``labels_file`` (``frame_index,label``) overriding any the source has."""
    path = Path(spec)
    if spec.startswith("/dev/video") or path.suffix.lower() in VIDEO_SUFFIXES:
        source = video_source(spec, FrameShape.for_input(input_dim, shape, color))
    elif path.is_dir():
        source = folder_source(path, FrameShape.for_input(input_dim, shape, color))
    elif path.is_file():
        source = array_source(path, input_dim, label_column)
    else:
        raise SourceError(f"{spec}: no such file, folder or camera")
    if labels_file is not None:
        side = read_labels(labels_file)
        inner = source.frames
        source.frames = ((f, side.get(i, label)) for i, (f, label) in enumerate(inner))
    return source
