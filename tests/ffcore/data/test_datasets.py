import numpy as np
import pytest

from ffcore.data import load_dataset, load_idx_dataset, write_idx
from ffcore.data.idx import IdxError


def make_idx_folder(path, n_train=120, n_test=30, shape=(28, 28), seed=0):
    """A tiny MNIST-format folder (gzip IDX files) made from random data."""
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True, exist_ok=True)
    write_idx(path / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (n_train, *shape), dtype=np.uint8))
    write_idx(path / "train-labels-idx1-ubyte.gz", (np.arange(n_train) % 10).astype(np.uint8))
    write_idx(path / "t10k-images-idx3-ubyte", rng.integers(0, 256, (n_test, *shape), dtype=np.uint8))
    write_idx(path / "t10k-labels-idx1-ubyte", (np.arange(n_test) % 10).astype(np.uint8))
    return path


def test_split_train_validation_test(tmp_path):
    splits = load_idx_dataset(make_idx_folder(tmp_path), val_size=20)
    assert len(splits.train_x) == 100 and len(splits.val_x) == 20 and len(splits.test_x) == 30
    assert splits.train_x.shape[1] == 784 and splits.image_shape == (28, 28) and splits.num_classes == 10
    assert 0.0 <= splits.train_x.min() and splits.train_x.max() <= 1.0


def test_paper_split_on_full_size_training_file(tmp_path):
    # 60,000 training images -> 50,000 train / 10,000 validation, as in the paper
    folder = make_idx_folder(tmp_path, n_train=60_000, n_test=10, shape=(2, 2))
    splits = load_idx_dataset(folder)
    assert (len(splits.train_x), len(splits.val_x)) == (50_000, 10_000)


def test_missing_or_mismatched_files_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_idx_dataset(tmp_path / "nope")
    folder = make_idx_folder(tmp_path / "d")
    (folder / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte\\(.gz\\) not found"):
        load_idx_dataset(folder)
    write_idx(folder / "t10k-labels-idx1-ubyte", np.zeros(7, dtype=np.uint8))
    with pytest.raises(IdxError, match="has 30 images but .* has 7 labels"):
        load_idx_dataset(folder)


def test_load_dataset_by_name():
    assert load_dataset("synthetic").input_dim == 196
    with pytest.raises(ValueError, match="needs --data-dir"):
        load_dataset("mnist")
    with pytest.raises(ValueError, match="unknown dataset 'cifar'"):
        load_dataset("cifar", "x")


def test_the_colour_stand_in_puts_the_class_in_the_shape_over_a_background_of_its_own():
    import torch

    from ffcore.data.synthetic import make_synthetic, make_synthetic_color

    x, y = make_synthetic_color(200, image_shape=(16, 16), seed=4)
    again, _ = make_synthetic_color(200, image_shape=(16, 16), seed=4)
    assert x.shape == (200, 3 * 256) and torch.equal(x, again) and 0 <= x.min() and x.max() <= 1
    _, shapes_y = make_synthetic(200, image_shape=(16, 16), noise=0.0, seed=4)
    assert torch.equal(y, shapes_y)  # the labels of the shapes drawn
    planes = x.view(200, 3, 256)
    assert (planes[:, 0] - planes[:, 1]).abs().mean() > 0.1  # colour, not grey
    # two images of one class share a shape, not their pixels
    a, b = (y == y[0]).nonzero().squeeze(1)[:2]
    assert (x[a] - x[b]).abs().mean() > 0.1
