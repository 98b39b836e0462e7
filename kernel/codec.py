"""The bus body codec: msgpack by default, JSON when the request says `Content-Type: application/json`.

A reply always uses the encoding of the request it answers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

import msgpack

__all__ = ["Encoding", "CONTENT_TYPE", "content_headers", "decode", "encode", "encoding_of"]

CONTENT_TYPE = "Content-Type"


class Encoding(StrEnum):
    MSGPACK = "application/msgpack"
    JSON = "application/json"


def encoding_of(headers: Mapping[str, str] | None) -> Encoding:
    """Which encoding a message body uses, read from its headers."""
    if headers:
        ctype = headers.get(CONTENT_TYPE) or headers.get("content-type") or ""
        if ctype.split(";", 1)[0].strip().lower() == Encoding.JSON.value:
            return Encoding.JSON
    return Encoding.MSGPACK


def content_headers(encoding: Encoding) -> dict[str, str]:
    """Headers that announce a body's encoding: none for msgpack, the default.

    A message without headers skips nats-py's header parser on the other side, a measurable
    share of a small request's cost.
    """
    return {CONTENT_TYPE: Encoding.JSON.value} if encoding is Encoding.JSON else {}


def encode(obj: Any, encoding: Encoding) -> bytes:
    if encoding is Encoding.JSON:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return msgpack.packb(obj, use_bin_type=True)


def decode(data: bytes, encoding: Encoding) -> Any:
    """Decode a body; raises ValueError on bytes that are not valid in that encoding."""
    if not data:
        return None
    if encoding is Encoding.JSON:
        return json.loads(data)
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    except (msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, UnicodeDecodeError) as exc:
        raise ValueError(f"body is not valid msgpack: {exc}") from exc
