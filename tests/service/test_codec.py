import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.codec import FrameDecodeError, decode_frames, encode_frames


def test_round_trip_float32_and_uint8():
    x = np.random.default_rng(0).random((3, 5), dtype=np.float32)
    frames, labels, seqs = decode_frames(encode_frames(x, [1, None, 4], [10, 11, None]))
    assert np.array_equal(frames, x) and labels.tolist() == [1, -1, 4] and seqs.tolist() == [10, 11, -1]
    pixels = np.array([[0, 255, 51]], dtype=np.uint8)
    frames, _, _ = decode_frames(encode_frames(pixels, dtype=2))
    assert np.allclose(frames, [[0.0, 1.0, 0.2]])


@pytest.mark.parametrize("mutate,message", [
    (lambda b: b[:10], "shorter than the 16-byte header"),
    (lambda b: b"NOPE" + b[4:], "bad magic"),
    (lambda b: b[:4] + b"\x07" + b[5:], "unknown dtype code 7"),
    (lambda b: b[:-1], "need 88 bytes, body has 87"),
    (lambda b: b + b"\x00", "need 88 bytes, body has 89"),
    (lambda b: b[:5] + b"\x01" + b[6:], "padding"),
])
def test_malformed_bodies_say_what_is_wrong(mutate, message):
    body = encode_frames(np.zeros((2, 6), np.float32))
    assert len(body) == 88
    with pytest.raises(FrameDecodeError, match=message):
        decode_frames(mutate(body))


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_decode_or_raise_the_documented_error(data):
    try:
        frames, labels, seqs = decode_frames(data)
    except FrameDecodeError:
        return
    assert frames.dtype == np.float32 and len(frames) == len(labels) == len(seqs) >= 1


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 5), st.integers(1, 8), st.data())
def test_valid_bodies_decode_exactly(n, dim, data):
    values = data.draw(st.lists(st.floats(-1e6, 1e6, width=32), min_size=n * dim, max_size=n * dim))
    x = np.asarray(values, np.float32).reshape(n, dim)
    frames, _, _ = decode_frames(encode_frames(x))
    assert np.array_equal(frames, x)


def test_a_request_is_one_redis_entry_and_reads_back_exactly():
    from service.redis_io import FrameEntry

    rng = np.random.default_rng(0)
    entry = FrameEntry("cam", rng.random((3, 5), dtype=np.float32), np.array([1, -1, 7]), np.array([10, 11, -1]), 12.5)
    fields = {k.encode(): (v if isinstance(v, bytes) else str(v).encode()) for k, v in entry.fields().items()}
    back = FrameEntry.from_fields(fields, dim=5)
    assert back.stream == "cam" and back.t == 12.5
    assert np.array_equal(back.frames, entry.frames) and back.labels.tolist() == [1, -1, 7]
    assert back.seqs.tolist() == [10, 11, -1]


def test_uint8_frames_travel_as_bytes_and_read_back_scaled():
    from service.redis_io import FrameEntry

    raw = np.arange(15, dtype=np.uint8).reshape(3, 5) * 17
    frames, _, _ = decode_frames(encode_frames(raw, dtype=2), keep_uint8=True)
    assert frames.dtype == np.uint8 and np.array_equal(frames, raw)
    entry = FrameEntry("cam", frames, np.array([1, 2, 3]), np.array([-1, -1, -1]), 1.0)
    fields = {k.encode(): (v if isinstance(v, bytes) else str(v).encode()) for k, v in entry.fields().items()}
    assert len(fields[b"data"]) == 15  # one byte per value in Redis
    back = FrameEntry.from_fields(fields, dim=5)
    assert back.frames.dtype == np.float32
    np.testing.assert_allclose(back.frames, decode_frames(encode_frames(raw, dtype=2))[0])
