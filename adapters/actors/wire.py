"""The wire between callers and an actor host (`<root>.actorhost.<host>`): one msgpack map each way.

Request: `{"op": "call"|"timer.create"|"timer.delete", "t": type, "i": id, "k": kind, "n": name,
"b": body bytes, "h": headers, "timer": {...}}`. Reply: `{"s": status, "b": body, "h": headers}`
for a turn that ran, `{"moved": host}` when another live host owns the actor, `{"retry": why}`
when this host cannot serve it right now (lease lapsed, draining, being deactivated). Runtime
errors are service error replies (`Nats-Service-Error-Code` + `{errorCode, message}`), as every
block answers them.
"""

from __future__ import annotations

from typing import Any

import msgpack
from nats.micro.request import ERROR_CODE_HEADER, ERROR_HEADER

from kernel.errors import NatriumError

__all__ = ["error_headers", "pack", "unpack"]

REENTRANCY_HEADER = "Dapr-Reentrancy-Id"


def pack(obj: dict[str, Any]) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def unpack(data: bytes) -> dict[str, Any]:
    value = msgpack.unpackb(data, raw=False, strict_map_key=False) if data else {}
    if not isinstance(value, dict):
        raise ValueError("actor host message is not a map")
    return value


def error_headers(error: NatriumError) -> dict[str, str]:
    return {
        ERROR_HEADER: error.message.replace("\r", " ").replace("\n", " ")[:512],
        ERROR_CODE_HEADER: str(error.status),
    }
