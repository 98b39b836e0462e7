"""msgpack by default, JSON on request; undecodable bodies raise ValueError."""

from __future__ import annotations

import pytest

from kernel.codec import Encoding, decode, encode, encoding_of


def test_encoding_follows_content_type() -> None:
    assert encoding_of(None) is Encoding.MSGPACK
    assert encoding_of({"Content-Type": "application/json; charset=utf-8"}) is Encoding.JSON
    assert encoding_of({"content-type": "application/msgpack"}) is Encoding.MSGPACK


@pytest.mark.parametrize("encoding", list(Encoding))
def test_round_trip(encoding: Encoding) -> None:
    value = {"a": [1, "ü", None, True], "b": {"c": 1.5}}
    assert decode(encode(value, encoding), encoding) == value


def test_msgpack_keeps_bytes() -> None:
    assert decode(encode({"v": b"\x00\xff"}, Encoding.MSGPACK), Encoding.MSGPACK) == {"v": b"\x00\xff"}


@pytest.mark.parametrize("encoding, data", [(Encoding.JSON, b"{x"), (Encoding.MSGPACK, b"\xc1")])
def test_garbage_raises_value_error(encoding: Encoding, data: bytes) -> None:
    with pytest.raises(ValueError):
        decode(data, encoding)


def test_empty_body_is_none() -> None:
    assert decode(b"", Encoding.JSON) is None
