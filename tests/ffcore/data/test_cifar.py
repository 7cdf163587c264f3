import io
import tarfile

import numpy as np
import pytest

from ffcore.data import cifar
from ffcore.data.cifar import CifarError, load_cifar10, parse_records
from ffcore.data.datasets import load_dataset
from ffcore.data.fetch import SOURCES


def _batch(seed: int, n: int = cifar.RECORDS_PER_FILE) -> tuple[bytes, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    pixels = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    return np.concatenate([labels[:, None], pixels], axis=1).tobytes(), pixels, labels


def _write_archive(folder, batches: dict[str, bytes]):
    with tarfile.open(folder / cifar.ARCHIVE, "w:gz", compresslevel=1) as tar:
        for name, data in batches.items():
            info = tarfile.TarInfo(f"{cifar.FOLDER}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def batches():
    return {name: _batch(i) for i, name in enumerate((*cifar.TRAIN_FILES, cifar.TEST_FILE))}


def test_the_archive_reads_into_the_standard_splits_record_for_record(tmp_path, batches):
    _write_archive(tmp_path, {name: b[0] for name, b in batches.items()})
    data = load_dataset("cifar10", tmp_path)
    assert (len(data.train_x), len(data.val_x), len(data.test_x)) == (45_000, 5_000, 10_000)
    assert data.input_dim == 3072 and data.num_classes == 10
    _, pixels, labels = batches["data_batch_1.bin"]
    assert np.array_equal((data.train_x[:10] * 255).round().numpy().astype(np.uint8), pixels[:10])
    assert np.array_equal(data.train_y[:10].numpy(), labels[:10])
    _, pixels, labels = batches["data_batch_5.bin"]  # its last 5,000 records validate
    assert np.array_equal(data.val_y.numpy(), labels[5_000:])
    assert np.array_equal(data.test_y.numpy(), batches["test_batch.bin"][2])


def test_the_extracted_folder_reads_the_same(tmp_path, batches):
    folder = tmp_path / cifar.FOLDER
    folder.mkdir()
    for name, b in batches.items():
        (folder / name).write_bytes(b[0])
    data = load_cifar10(tmp_path)
    assert np.array_equal(data.test_y.numpy(), batches["test_batch.bin"][2])


def test_truncated_short_mislabeled_and_missing_files_are_refused_clearly(tmp_path, batches):
    good = batches["test_batch.bin"][0]
    with pytest.raises(CifarError, match="not a whole number of 3073-byte records"):
        parse_records(good[:-5], "test_batch.bin")
    with pytest.raises(CifarError, match="9999 records, expected 10000"):
        parse_records(good[: 9_999 * cifar.RECORD], "test_batch.bin")
    bad = bytearray(good)
    bad[7 * cifar.RECORD] = 10
    with pytest.raises(CifarError, match="record 7 has label 10"):
        parse_records(bytes(bad), "test_batch.bin")
    _write_archive(tmp_path, {name: b[0] for name, b in batches.items() if name != "data_batch_3.bin"})
    with pytest.raises(CifarError, match="lacks data_batch_3.bin"):
        load_cifar10(tmp_path)
    (tmp_path / cifar.ARCHIVE).write_bytes(b"not gzip")
    with pytest.raises(CifarError, match="not a readable"):
        load_cifar10(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="ffcore data fetch cifar10"):
        load_cifar10(empty)


def test_fetch_knows_the_binary_archive_and_its_checksum():
    (remote,) = SOURCES["cifar10"].files
    assert remote.name == "cifar-10-binary.tar.gz" and remote.md5 == "c32a1d4ab5d03f1284b67883e8d87530"


def test_written_folders_read_back_record_for_record_and_bad_arrays_are_refused(tmp_path):
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (60_000, 3072), dtype=np.uint8)
    labels = rng.integers(0, 10, 60_000)
    cifar.write_folder(tmp_path, images, labels)
    data = load_cifar10(tmp_path)
    assert np.array_equal((data.test_x * 255).round().numpy().astype(np.uint8), images[50_000:])
    assert np.array_equal(data.val_y.numpy(), labels[45_000:50_000])
    with pytest.raises(CifarError, match="holds 60000 images"):
        cifar.write_folder(tmp_path, images[:10], labels[:10])
    with pytest.raises(CifarError, match="uint8"):
        cifar.to_records(images[:2].astype(np.int64), labels[:2])
    with pytest.raises(CifarError, match="integers in 0-9"):
        cifar.to_records(images[:2], np.array([3, 10]))
