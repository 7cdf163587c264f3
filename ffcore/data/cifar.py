"""CIFAR-10 from its standard *binary* version (``cifar-10-binary.tar.gz``; no pickle is ever
read): six files of 10,000 records, each record one label byte (0-9) and 3,072 pixel bytes (the
red, green and blue 32 x 32 planes, row-major). ``data_batch_1.bin`` ... ``data_batch_5.bin``
train, ``test_batch.bin`` tests. Read from the archive itself or from its extracted
``cifar-10-batches-bin`` folder; every file's size and every label is checked.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import torch

ARCHIVE = "cifar-10-binary.tar.gz"
FOLDER = "cifar-10-batches-bin"
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILE = "test_batch.bin"
RECORD = 1 + 3 * 32 * 32
RECORDS_PER_FILE = 10_000
NUM_CLASSES = 10
VAL_SIZE = 5_000  # the last 5,000 of the 50,000 training images validate (a tenth, as MNIST's sixth)


class CifarError(ValueError):
    """A CIFAR-10 binary file that is missing, truncated or not what it claims to be."""


def parse_records(data: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
    """One binary batch file's bytes -> (images (n, 3072) uint8, labels (n,) uint8)."""
    if len(data) == 0 or len(data) % RECORD:
        raise CifarError(f"{name}: {len(data)} bytes is not a whole number of {RECORD}-byte records "
                         "(1 label byte + 3,072 pixel bytes): truncated or not a CIFAR-10 binary file")
    if len(data) != RECORDS_PER_FILE * RECORD:
        raise CifarError(f"{name}: {len(data) // RECORD} records, expected {RECORDS_PER_FILE}")
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, RECORD)
    labels = records[:, 0]
    bad = np.flatnonzero(labels >= NUM_CLASSES)
    if len(bad):
        raise CifarError(f"{name}: record {int(bad[0])} has label {int(labels[bad[0]])}, labels are 0-9")
    return records[:, 1:], labels


def to_records(images: np.ndarray, labels: np.ndarray) -> bytes:
    """(n, 3072) uint8 images (channel-major) and (n,) labels 0-9 -> the bytes of n records."""
    images, labels = np.asarray(images), np.asarray(labels)
    if images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != RECORD - 1:
        raise CifarError(f"images must be (n, 3072) uint8, got {images.shape} {images.dtype}")
    if labels.shape != (len(images),) or (labels < 0).any() or (labels >= NUM_CLASSES).any():
        raise CifarError(f"labels must be {len(images)} integers in 0-9")
    return np.concatenate([labels.astype(np.uint8)[:, None], images], axis=1).tobytes()


def write_folder(folder: str | Path, images: np.ndarray, labels: np.ndarray) -> Path:
    """Write 60,000 images and labels as the binary version's extracted folder (``FOLDER`` inside
    ``folder``): the first 50,000 in the five training files, the rest in the test file. For tests,
    and for data of another origin in this format."""
    if len(images) != RECORDS_PER_FILE * (len(TRAIN_FILES) + 1):
        raise CifarError(f"the binary version holds {RECORDS_PER_FILE * (len(TRAIN_FILES) + 1)} images, got {len(images)}")
    out = Path(folder) / FOLDER
    out.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate((*TRAIN_FILES, TEST_FILE)):
        part = slice(i * RECORDS_PER_FILE, (i + 1) * RECORDS_PER_FILE)
        (out / name).write_bytes(to_records(images[part], labels[part]))
    return out


def _read_files(data_dir: Path) -> dict[str, bytes]:
    wanted = (*TRAIN_FILES, TEST_FILE)
    folder = data_dir / FOLDER
    if folder.is_dir():
        missing = [f for f in wanted if not (folder / f).is_file()]
        if missing:
            raise CifarError(f"{folder} lacks {', '.join(missing)}")
        return {f: (folder / f).read_bytes() for f in wanted}
    archive = data_dir / ARCHIVE
    if not archive.is_file():
        raise FileNotFoundError(f"neither {archive} nor {folder}/ found; get it with "
                                f"`ffcore data fetch cifar10 --dest {data_dir}`")
    out = {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                name = Path(member.name).name
                if member.isfile() and name in wanted:
                    out[name] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as e:
        raise CifarError(f"{archive}: not a readable .tar.gz ({e})") from e
    missing = [f for f in wanted if f not in out]
    if missing:
        raise CifarError(f"{archive} lacks {', '.join(missing)}")
    return out


def load_cifar10(data_dir: str | Path):
    """CIFAR-10 as :class:`ffcore.data.datasets.Splits`: inputs (n, 3072) in [0, 1], channel-major
    (R, G, B planes of 32 x 32); 45,000 train, the last 5,000 training images validate, 10,000 test."""
    from ffcore.data.datasets import Splits

    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"data dir {data_dir} does not exist")
    files = _read_files(data_dir)
    parts = [parse_records(files[f], f) for f in TRAIN_FILES]
    train_x = np.concatenate([p[0] for p in parts])
    train_y = np.concatenate([p[1] for p in parts])
    test_x, test_y = parse_records(files[TEST_FILE], TEST_FILE)

    def tensors(x, y):
        return torch.from_numpy(x.astype(np.float32) / 255.0), torch.from_numpy(y.astype(np.int64))

    cut = len(train_x) - VAL_SIZE
    tx, ty = tensors(train_x[:cut], train_y[:cut])
    vx, vy = tensors(train_x[cut:], train_y[cut:])
    sx, sy = tensors(test_x, test_y)
    return Splits(tx, ty, vx, vy, sx, sy, num_classes=NUM_CLASSES, image_shape=(32, 32))
