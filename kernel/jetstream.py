"""JetStream helpers every block shares: a lean publish-with-ack and transport errors as Dapr codes."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import nats.errors
from nats.aio.client import Client
from nats.js import api
from nats.js.errors import BadRequestError, ServerError
from nats.js.manager import JetStreamManager

from kernel.components import Component
from kernel.errors import Codes, NatriumError
from kernel.request import request

__all__ = [
    "JetStreamRejected",
    "ensure_stream",
    "kv_stream_config",
    "message_time",
    "publish",
    "storage_of",
    "transport_errors_as",
]

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
_TRANSPORT = (
    TimeoutError,
    asyncio.TimeoutError,
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionClosedError,
    nats.errors.OutboundBufferLimitError,
)


class JetStreamRejected(Exception):
    """The server refused a publish: `error` is its `{"code","err_code","description"}`."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error.get("description", "rejected"))
        self.code = int(error.get("code", 0))
        self.err_code = int(error.get("err_code", 0))
        self.description = str(error.get("description", "rejected"))


async def publish(nc: Client, subject: str, payload: bytes, headers: dict[str, str] | None) -> dict[str, Any]:
    """Publish and return the PubAck as a dict (`seq`, `duplicate`...).

    A plain request and a dict lookup: nats-py's js.publish PubAck dataclass parsing was a
    visible share of a write's CPU in bench/state.py.
    """
    msg = await request(nc, subject, payload, headers=headers or None)
    ack: dict[str, Any] = json.loads(msg.data)
    if "error" in ack:
        raise JetStreamRejected(ack["error"])
    return ack


def transport_errors_as(code: str) -> Callable[[F], F]:
    """Report JetStream being unreachable (or a too-large message) as the operation's Dapr code."""

    def wrap(method: F) -> F:
        @functools.wraps(method)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return await method(*args, **kwargs)
            except _TRANSPORT as exc:
                raise NatriumError(code, f"JetStream did not answer: {type(exc).__name__}", retryable=True) from None
            except nats.errors.MaxPayloadError:
                raise NatriumError(code, "message is over the NATS max payload", status=500) from None

        return wrapper  # type: ignore[return-value]

    return wrap


async def ensure_stream(jsm: JetStreamManager, config: Any, attempts: int = 4) -> None:
    """Create the stream, or bring an existing one up to `config`.

    A 500 from the server ("error creating store for stream") has been seen once under load and
    went away on retry, so it is retried a few times before it is reported.
    """
    for attempt in range(attempts):
        try:
            await jsm.add_stream(config)
            return
        except BadRequestError as exc:
            if exc.err_code != 10058:  # "stream name already in use with a different configuration"
                raise
            await jsm.update_stream(config)
            return
        except ServerError:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.1 * 2**attempt)


def storage_of(component: Component) -> api.StorageType:
    """The component's `storage` metadata (`file`, the default, or `memory`)."""
    storage = (component.meta("storage", "file") or "file").lower()
    if storage not in ("file", "memory"):
        raise NatriumError(
            Codes.COMPONENT_INVALID, f"component {component.name!r}: storage must be file or memory, got {storage!r}"
        )
    return api.StorageType.MEMORY if storage == "memory" else api.StorageType.FILE


def kv_stream_config(bucket: str, description: str, component: Component, **overrides: Any) -> api.StreamConfig:
    """The stream of a KV bucket, laid out as nats-py's KV client expects it; `overrides` win.

    A full bucket refuses writes (discard new): natrium never drops stored data to make room.
    """
    settings: dict[str, Any] = {
        "name": f"KV_{bucket}",
        "description": description,
        "subjects": [f"$KV.{bucket}.>"],
        "allow_direct": True,
        "allow_rollup_hdrs": True,
        "deny_delete": True,
        "discard": api.DiscardPolicy.NEW,
        "max_msgs_per_subject": 1,
        "num_replicas": component.meta_int("replicas", 1),
        "storage": storage_of(component),
    }
    settings.update(overrides)
    return api.StreamConfig(**settings)


def message_time(stamp: str) -> dt.datetime:
    """A `Nats-Time-Stamp` (RFC 3339 with nanoseconds) as an aware datetime (microseconds kept)."""
    base, _, frac = stamp.rstrip("Z").partition(".")
    parsed = dt.datetime.fromisoformat(base).replace(tzinfo=dt.UTC)
    return parsed + dt.timedelta(microseconds=int((frac + "000000")[:6])) if frac else parsed


# Headers and error codes of JetStream's optimistic concurrency and KV conventions.
EXPECTED_LAST_SUBJECT_SEQUENCE = "Nats-Expected-Last-Subject-Sequence"
MSG_TTL = "Nats-TTL"
KV_OPERATION = "KV-Operation"
WRONG_LAST_SEQUENCE = (10071, 10164)
"""err_code values of "wrong last sequence": the compare-and-swap lost."""


def component_bucket(component: Component, kind: str) -> str:
    """A component's bucket: its `bucket` metadata, else `<kind>-<name>` with the name made bucket-safe."""
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in component.name)
    return component.meta("bucket") or f"{kind}-{safe}"
