"""The wake/sleep messages and their channels, against a real redis-server."""

import contextlib
import logging
import time

import pytest
import redis
from hypothesis import given, settings as hsettings, strategies as st

from service.redis_io import Dream, NegativeUpdate, pack_message, receive, subscribe


def test_messages_round_trip_exactly():
    dream = Dream(7, 3, 150, b"sample \x00 bytes", b"\x80weights")
    assert Dream.from_bytes(dream.to_bytes()) == dream
    update = NegativeUpdate(7, 3, 100, b"gradient" * 1000)
    assert NegativeUpdate.from_bytes(update.to_bytes()) == update
    assert Dream.from_bytes(Dream(1, 0, 0, b"", b"").to_bytes()).sample == b""


@pytest.mark.parametrize("data,message", [
    (b"", "too short"),
    (b"\xff\xff\xff\x7f{}", "header of"),
    (b"\x02\x00\x00\x00{]", "not JSON"),
    (pack_message({"id": 1, "version": 0, "frames": 1}, b"a"), "sizes of 2 blobs"),
    (pack_message({"id": 1, "version": 0, "frames": 1}, b"a", b"b") + b"extra", "does not match its header"),
    (pack_message({"id": "1", "version": 0, "frames": 1}, b"a", b"b"), "'id' must be a whole number"),
    (pack_message({"version": 0, "frames": 1}, b"a", b"b"), "'id' must be a whole number"),
    (pack_message({"id": True, "version": 0, "frames": 1}, b"a", b"b"), "'id' must be a whole number"),
])
def test_a_malformed_dream_says_what_is_wrong(data, message):
    with pytest.raises(ValueError, match=message):
        Dream.from_bytes(data)


@hsettings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_any_bytes_read_as_a_message_or_raise_value_error(data):
    for kind in (Dream, NegativeUpdate):  # no other exception type escapes
        with contextlib.suppress(ValueError):
            kind.from_bytes(data)


def test_large_messages_are_read_whole_without_waiting(redis_server):
    """redis-py's ``get_message(timeout=0)`` raises on a message caught half-way through the
    socket (and its retry drops it); ``receive`` reads a message that has begun to the end."""
    client = redis.Redis.from_url(redis_server.url, socket_timeout=10)
    subscription = subscribe(client, "test:large")
    assert receive(subscription, 0.5) == []  # the subscription's confirmation, no message
    blob = bytes(range(256)) * 12_000  # 3 MB: many reads of the socket
    got = []
    for _ in range(40):
        client.publish("test:large", blob)
        got += receive(subscription, 0.0)
    deadline = time.monotonic() + 5.0
    while len(got) < 40 and time.monotonic() < deadline:
        got += receive(subscription, 0.1)
    assert len(got) == 40 and all(m == blob for m in got)
    subscription.close()
    client.close()


def test_messages_are_not_formatted_into_log_lines(redis_server, caplog):
    """redis-py's default handler formats every message into a debug line, a megabyte dream
    included, whether or not debug logging is on: the subscriptions hand messages on as they are."""
    client = redis.Redis.from_url(redis_server.url)
    subscription = subscribe(client, "test:quiet")
    with caplog.at_level(logging.DEBUG, logger="push_response"):
        client.publish("test:quiet", b"x" * 1000)
        assert receive(subscription, 2.0) == [b"x" * 1000]
    assert not [r for r in caplog.records if r.name == "push_response"]
    subscription.close()
    client.close()
