"""Data: IDX files (MNIST, Fashion-MNIST), the paper's splits, downloads, a synthetic set."""

from ffcore.data.datasets import DATASETS, Splits, load_dataset, load_idx_dataset, load_synthetic
from ffcore.data.idx import IdxError, parse_idx, read_idx, write_idx

__all__ = [
    "DATASETS", "IdxError", "Splits", "load_dataset", "load_idx_dataset", "load_synthetic",
    "parse_idx", "read_idx", "write_idx",
]
