import gzip
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ffcore.data.idx import IdxError, parse_idx, read_idx, write_idx


def test_round_trip_raw_and_gzip(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (5, 4, 3), dtype=np.uint8)
    for name in ("a-idx3-ubyte", "a-idx3-ubyte.gz"):
        write_idx(tmp_path / name, images)
        assert np.array_equal(read_idx(tmp_path / name), images)
    assert (tmp_path / "a-idx3-ubyte.gz").read_bytes()[:2] == b"\x1f\x8b"


def test_header_is_checked():
    labels = struct.pack(">HBBI", 0, 0x08, 1, 3) + bytes([1, 2, 3])
    assert parse_idx(labels).tolist() == [1, 2, 3]
    with pytest.raises(IdxError, match="bad IDX magic number 0x0801"):
        parse_idx(b"\x08\x01" + labels[2:])
    with pytest.raises(IdxError, match="truncated: shape \\(3,\\) needs 11 bytes, file has 10"):
        parse_idx(labels[:-1])
    with pytest.raises(IdxError, match="trailing bytes"):
        parse_idx(labels + b"\x00")
    with pytest.raises(IdxError, match="truncated header"):
        parse_idx(struct.pack(">HBB", 0, 0x08, 3) + b"\x00\x00\x00\x01")
    with pytest.raises(IdxError, match="too short"):
        parse_idx(b"\x00")


def test_corrupt_gzip_is_a_clear_error(tmp_path):
    good = gzip.compress(struct.pack(">HBBI", 0, 0x08, 1, 1000) + bytes(1000))
    (tmp_path / "cut.gz").write_bytes(good[: len(good) // 2])
    with pytest.raises(IdxError, match="cut.gz: corrupt or truncated gzip"):
        read_idx(tmp_path / "cut.gz")
    with pytest.raises(FileNotFoundError, match="no such IDX file"):
        read_idx(tmp_path / "missing")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_any_bytes_decode_or_raise_idx_error(data):
    try:
        arr = parse_idx(data)
    except IdxError:
        return
    ndim = data[3]
    assert arr.ndim == ndim and len(data) >= 4 + 4 * ndim


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 255), min_size=1, max_size=30))
def test_valid_label_files_decode_exactly(values):
    data = struct.pack(">HBBI", 0, 0x08, 1, len(values)) + bytes(values)
    assert parse_idx(data).tolist() == values
