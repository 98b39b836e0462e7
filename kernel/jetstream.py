"""JetStream helpers every block shares: a lean publish-with-ack and transport errors as Dapr codes."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import functools
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import nats.errors
from nats.aio.client import Client
from nats.js import api
from nats.js.errors import BadRequestError, NotFoundError, ServerError, ServiceUnavailableError
from nats.js.manager import JetStreamManager

from kernel.components import Component
from kernel.errors import Codes, NatriumError
from kernel.request import request

__all__ = [
    "JetStreamRejected",
    "StoredEntry",
    "adopt_stream",
    "ensure_stream",
    "last_by_subject",
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
    """Report JetStream being unreachable or leaderless (or a too-large message) as the operation's Dapr code."""

    def wrap(method: F) -> F:
        @functools.wraps(method)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return await method(*args, **kwargs)
            except _TRANSPORT as exc:
                raise NatriumError(code, f"JetStream did not answer: {type(exc).__name__}", retryable=True) from None
            except ServiceUnavailableError as exc:
                # 503 / 10008 while a stream elects a leader (a partition, a node restart): transient.
                raise NatriumError(code, f"JetStream unavailable: {exc.description}", retryable=True) from None
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


async def adopt_stream(js: JetStreamManager, config: Any) -> int:
    """Create the stream when it is missing, else leave it as its owner made it; its replica count.

    For the processes that share a stream another service owns (actor hosts, clients): updating
    it to their own idea of its config would undo the owner's (replicas above all)."""
    try:
        info = await js.stream_info(config.name)
    except NotFoundError:
        await ensure_stream(js, config)
        return int(config.num_replicas or 1)
    return int(info.config.num_replicas or 1)


@dataclass(frozen=True)
class StoredEntry:
    seq: int
    headers: dict[str, str]
    data: bytes


async def last_by_subject(
    nc: Client, stream: str, subject: str, *, leader: bool, timeout: float = 5.0
) -> StoredEntry | None:
    """The last message of `subject`, None when there is none.

    `leader` asks the stream leader (`STREAM.MSG.GET`), the only server sure to have the latest
    write of a replicated stream; otherwise any server answers (`DIRECT.GET`), which is faster but
    may trail a just-acknowledged write on a follower."""
    if not leader:
        reply = await nc.request(f"$JS.API.DIRECT.GET.{stream}.{subject}", b"", timeout=timeout)
        headers = dict(reply.headers or {})
        status = headers.get("Status")
        if status == "404":
            return None
        if status:
            raise JetStreamRejected({"code": int(status), "description": headers.get("Description", "")})
        return StoredEntry(int(headers["Nats-Sequence"]), headers, bytes(reply.data))
    body = json.dumps({"last_by_subj": subject}).encode()
    reply = await nc.request(f"$JS.API.STREAM.MSG.GET.{stream}", body, timeout=timeout)
    answer = json.loads(reply.data)
    if "error" in answer:
        if answer["error"].get("code") == 404:
            return None
        raise JetStreamRejected(answer["error"])
    message = answer["message"]
    raw_headers = base64.b64decode(message.get("hdrs") or b"").decode(errors="replace")
    headers = dict(line.split(": ", 1) for line in raw_headers.split("\r\n")[1:] if ": " in line)
    return StoredEntry(int(message["seq"]), headers, base64.b64decode(message.get("data") or b""))


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
