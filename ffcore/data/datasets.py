"""Datasets as tensors, split as in the paper: 50,000 train / 10,000 validation / official test."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ffcore.data.idx import IdxError, read_idx
from ffcore.data.synthetic import make_synthetic

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
DATASETS = ("mnist", "fashion-mnist", "cifar10", "synthetic")


@dataclass
class Splits:
    """Flattened float inputs in [0, 1], shape (n, D), and int64 labels, shape (n,)."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    image_shape: tuple[int, int]

    @property
    def input_dim(self) -> int:
        return self.train_x.shape[1]

    def to(self, device) -> "Splits":
        moved = {k: getattr(self, k).to(device) for k in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")}
        return Splits(**moved, num_classes=self.num_classes, image_shape=self.image_shape)


def _find(data_dir: Path, stem: str) -> Path:
    for candidate in (data_dir / f"{stem}.gz", data_dir / stem):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"{stem}(.gz) not found in {data_dir}; get it with `ffcore data fetch mnist --dest {data_dir}`"
    )


def _images_and_labels(data_dir: Path, which: str) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    images_path = _find(data_dir, IDX_FILES[f"{which}_images"])
    labels_path = _find(data_dir, IDX_FILES[f"{which}_labels"])
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3:
        raise IdxError(f"{images_path}: expected (n, rows, cols) images, got shape {images.shape}")
    if labels.ndim != 1:
        raise IdxError(f"{labels_path}: expected (n,) labels, got shape {labels.shape}")
    if len(images) != len(labels):
        raise IdxError(f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels")
    x = torch.from_numpy(images.reshape(len(images), -1).astype("float32") / 255.0)
    return x, torch.from_numpy(labels.astype("int64")), (images.shape[1], images.shape[2])


PAPER_VAL_SIZE = 10_000  # of MNIST's 60,000 training images: 50,000 train, 10,000 validate


def load_idx_dataset(data_dir: str | Path, val_size: int | None = None) -> Splits:
    """MNIST-format data from a folder: the last ``val_size`` training images validate
    (hyper-parameter search), the rest train, the official test set tests.

    ``val_size`` defaults to the paper's 10,000 for a full 60,000-image training file and to one
    sixth of the training file otherwise (the same proportion, for small folders)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"data dir {data_dir} does not exist")
    train_x, train_y, shape = _images_and_labels(data_dir, "train")
    test_x, test_y, test_shape = _images_and_labels(data_dir, "test")
    if shape != test_shape:
        raise IdxError(f"train images are {shape} but test images are {test_shape}")
    if val_size is None:
        val_size = PAPER_VAL_SIZE if len(train_x) == 60_000 else len(train_x) // 6
    if not 0 <= val_size < len(train_x):
        raise ValueError(f"val_size {val_size} must be in [0, {len(train_x)})")
    cut = len(train_x) - val_size
    return Splits(train_x[:cut], train_y[:cut], train_x[cut:], train_y[cut:], test_x, test_y,
                  num_classes=int(max(train_y.max(), test_y.max())) + 1, image_shape=shape)


def load_synthetic(n_train: int = 4000, n_val: int = 1000, n_test: int = 1000, seed: int = 0) -> Splits:
    shape = (14, 14)
    tx, ty = make_synthetic(n_train, image_shape=shape, seed=seed)
    vx, vy = make_synthetic(n_val, image_shape=shape, seed=seed + 1)
    sx, sy = make_synthetic(n_test, image_shape=shape, seed=seed + 2)
    return Splits(tx, ty, vx, vy, sx, sy, num_classes=10, image_shape=shape)


def load_dataset(name: str, data_dir: str | Path | None = None, seed: int = 0) -> Splits:
    """Load a dataset by name. ``mnist`` and ``fashion-mnist`` read IDX files from ``data_dir``."""
    if name == "synthetic":
        return load_synthetic(seed=seed)
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if name == "cifar10":
        if data_dir is None:
            raise ValueError("dataset 'cifar10' needs --data-dir (a folder with cifar-10-binary.tar.gz)")
        from ffcore.data.cifar import load_cifar10

        return load_cifar10(data_dir)
    if data_dir is None:
        raise ValueError(f"dataset {name!r} needs --data-dir (a folder with the four IDX files)")
    return load_idx_dataset(data_dir)
