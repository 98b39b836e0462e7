"""One Dapr state store on one JetStream KV bucket.

- ETag = the key's KV revision (its stream sequence); an ETag write carries
  `Nats-Expected-Last-Subject-Sequence`, so the server does the compare-and-swap.
- first-write without an ETag = create: expected last sequence 0 (or the delete marker's).
- `ttlInSeconds` = per-message TTL (`Nats-TTL`, stream `allow_msg_ttl`).
- a transaction = one atomic batch (`allow_atomic`): all messages are stored or none are.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import nats.errors
from nats.aio.client import Client
from nats.js import api
from nats.js.errors import NotFoundError
from nats.nuid import NUID

from kernel.components import Component
from kernel.errors import Codes, NatriumError, malformed
from kernel.jetstream import (
    EXPECTED_LAST_SUBJECT_SEQUENCE,
    KV_OPERATION,
    MSG_TTL,
    WRONG_LAST_SEQUENCE,
    JetStreamRejected,
    component_bucket,
    ensure_stream,
    kv_stream_config,
    message_time,
    publish,
    transport_errors_as,
)
from kernel.request import request
from schemas.state import BulkItem, DeleteRequest, GetReply, SaveItem, TransactionOperation
from services.state.keys import KeyPolicy

__all__ = ["KvStateStore", "MAX_TRANSACTION_OPERATIONS"]

log = logging.getLogger("natrium.state")

# nats-server refuses atomic batches over 1000 messages.
MAX_TRANSACTION_OPERATIONS = 1000
T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


@dataclass(frozen=True)
class _Write:
    """One message to the bucket, already validated."""

    kv_key: str
    payload: bytes
    headers: dict[str, str]
    user_key: str


def _recreating_a_deleted_bucket(method: F) -> F:
    """A store operation that, when its bucket is gone (no stream answers), creates the bucket
    again and tries once more: the bucket is made on first use, whenever that use comes."""

    @functools.wraps(method)
    async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await method(self, *args, **kwargs)
        except nats.errors.NoRespondersError:
            if not await self.reopen_if_gone():
                raise
        return await method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


class KvStateStore:
    """The state operations of one store; `open()` creates or updates its bucket."""

    def __init__(self, nc: Client, component: Component, namespace: str | None = None) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.component = component
        self.bucket = component_bucket(component, "state")
        self.stream = f"KV_{self.bucket}"
        self.prefix = f"$KV.{self.bucket}."
        self.keys = KeyPolicy(component.meta("keyPrefix", "appid") or "appid", component.name, namespace)
        self.replicas = component.meta_int("replicas", 1)
        self.max_value_size = component.meta_int("maxValueSize", -1)
        self._nuid = NUID()

    # -- bucket ---------------------------------------------------------------------------------

    def stream_config(self) -> api.StreamConfig:
        c = self.component
        return kv_stream_config(
            self.bucket,
            f"natrium state store {c.name}",
            c,
            allow_msg_ttl=True,
            allow_atomic=True,
            duplicate_window=120,
            max_msgs_per_subject=c.meta_int("history", 1),
            max_bytes=c.meta_int("maxBytes", -1),
            max_msg_size=self.max_value_size,
        )

    async def open(self) -> None:
        config = self.stream_config()
        await ensure_stream(self.js, config)
        log.info("state store ready", extra={"store": self.component.name, "bucket": self.bucket})

    async def reopen_if_gone(self) -> bool:
        """Create the bucket again if someone deleted it while the service ran; True if it did."""
        try:
            await self.js.stream_info(self.stream)
            return False
        except NotFoundError:
            log.warning("state bucket was deleted; creating it again", extra={"store": self.component.name})
            await self.open()
            return True

    # -- reads ----------------------------------------------------------------------------------

    @transport_errors_as(Codes.STATE_GET)
    @_recreating_a_deleted_bucket
    async def get(self, app_id: str | None, key: str, consistency: str | None = None) -> GetReply:
        kv_key = self.keys.kv_key(app_id, key)
        msg = await self._read(kv_key, strong=consistency == "strong")
        if msg is None:
            return GetReply(found=False)
        data, revision, metadata = msg
        return GetReply(found=True, data=data, etag=str(revision), metadata=metadata)

    async def bulk_get(self, app_id: str | None, keys: list[str], parallelism: int | None) -> list[BulkItem]:
        async def one(key: str) -> BulkItem:
            try:
                reply = await self.get(app_id, key)
            except NatriumError as exc:
                return BulkItem(key=key, error=exc.message)
            if not reply.found:
                return BulkItem(key=key)
            return BulkItem(key=key, data=reply.data, etag=reply.etag, metadata=reply.metadata or None)

        return await _bounded_gather([functools.partial(one, key) for key in keys], parallelism or 64)

    async def _read(self, kv_key: str, strong: bool = False) -> tuple[bytes, int, dict[str, str]] | None:
        """The key's latest value, revision and metadata; None when missing or deleted."""
        subject = self.prefix + kv_key
        if strong and self.replicas > 1:
            # Direct gets may be served by a lagging follower; the leader answers MSG.GET.
            try:
                raw = await self.js.get_msg(self.stream, subject=subject, direct=False)
            except NotFoundError:
                return None
            headers, data, seq = dict(raw.headers or {}), raw.data or b"", raw.seq or 0
            stamp = None
        else:
            reply = await request(self.nc, f"$JS.API.DIRECT.GET.{self.stream}.{subject}")
            headers = reply.headers or {}
            status = headers.get("Status")
            if status == "404":
                return None
            if status:
                raise NatriumError(Codes.STATE_GET, f"direct get failed: {status} {headers.get('Description', '')}")
            data, seq, stamp = reply.data, int(headers["Nats-Sequence"]), headers.get("Nats-Time-Stamp")
        if headers.get(KV_OPERATION) in ("DEL", "PURGE"):
            return None
        metadata: dict[str, str] = {}
        ttl = headers.get(MSG_TTL)
        if ttl and stamp:
            expires = message_time(stamp) + dt.timedelta(seconds=_ttl_seconds(ttl))
            if expires <= dt.datetime.now(dt.UTC):
                return None  # expired; the server removes it any moment now
            metadata["ttlExpireTime"] = expires.isoformat().replace("+00:00", "Z")
        return data, seq, metadata

    async def _last_revision(self, kv_key: str) -> int:
        """The key's last sequence, delete markers included (0 if never written)."""
        reply = await request(self.nc, f"$JS.API.DIRECT.GET.{self.stream}.{self.prefix}{kv_key}")
        headers = reply.headers or {}
        if headers.get("Status") == "404":
            return 0
        return int(headers["Nats-Sequence"])

    # -- writes ---------------------------------------------------------------------------------

    def _write(self, app_id: str | None, item: SaveItem, metadata: dict[str, str], delete: bool = False) -> _Write:
        """Validate one item and build its message; `delete` makes a KV delete marker."""
        kv_key = self.keys.kv_key(app_id, item.key)
        headers: dict[str, str] = {}
        if item.etag:
            headers[EXPECTED_LAST_SUBJECT_SEQUENCE] = str(_parse_etag(item.etag))
        if delete:
            headers[KV_OPERATION] = "DEL"
            return _Write(kv_key, b"", headers, item.key)
        payload = item.value if isinstance(item.value, bytes) else _json_bytes(item.value)
        if self.max_value_size > 0 and len(payload) > self.max_value_size:
            raise NatriumError(
                Codes.STATE_SAVE,
                f"value of key {item.key!r} is {len(payload)} bytes, over this store's "
                f"maxValueSize of {self.max_value_size} bytes",
            )
        ttl = item.metadata.get("ttlInSeconds", metadata.get("ttlInSeconds"))
        seconds = _parse_ttl(ttl) if ttl is not None else None
        if seconds is not None:
            headers[MSG_TTL] = str(seconds)
        return _Write(kv_key, payload, headers, item.key)

    @transport_errors_as(Codes.STATE_SAVE)
    @_recreating_a_deleted_bucket
    async def save(self, app_id: str | None, items: list[SaveItem], metadata: dict[str, str]) -> list[str]:
        """Save every item (validated up front, written concurrently); the first failure is raised.

        As in daprd, a multi-item save is not atomic: use a transaction for all-or-nothing.
        """
        writes = [self._write(app_id, item, metadata) for item in items]
        if len(items) == 1:  # the common case, without a task per item
            return [str(await self._save_one(items[0], writes[0]))]
        results = await asyncio.gather(
            *(self._save_one(i, w) for i, w in zip(items, writes, strict=True)), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return [str(seq) for seq in results]

    async def _save_one(self, item: SaveItem, write: _Write) -> int:
        first_write = item.options is not None and item.options.concurrency == "first-write"
        if first_write and not item.etag:
            return await self._create(write)
        return await self._publish(write, Codes.STATE_SAVE)

    async def _create(self, write: _Write) -> int:
        """Write only if the key does not exist; a deleted key counts as not existing."""
        write.headers[EXPECTED_LAST_SUBJECT_SEQUENCE] = "0"
        try:
            return await self._publish(write, Codes.STATE_SAVE)
        except NatriumError as exc:
            if exc.status != 409:
                raise
            if await self._read(write.kv_key) is not None:
                raise
            write.headers[EXPECTED_LAST_SUBJECT_SEQUENCE] = str(await self._last_revision(write.kv_key))
            return await self._publish(write, Codes.STATE_SAVE)

    @transport_errors_as(Codes.STATE_DELETE)
    @_recreating_a_deleted_bucket
    async def delete(self, app_id: str | None, request: DeleteRequest) -> None:
        write = self._write(app_id, SaveItem(key=request.key, etag=request.etag), {}, delete=True)
        await self._publish(write, Codes.STATE_DELETE)

    async def _publish(self, write: _Write, code: str) -> int:
        try:
            ack = await publish(self.nc, self.prefix + write.kv_key, write.payload, write.headers)
        except JetStreamRejected as exc:
            raise _write_error(exc, code, write.user_key) from None
        return int(ack["seq"])

    @transport_errors_as(Codes.STATE_TRANSACTION)
    @_recreating_a_deleted_bucket
    async def transact(
        self, app_id: str | None, operations: list[TransactionOperation], metadata: dict[str, str]
    ) -> None:
        """Apply every operation or none: one atomic batch, each ETag checked by the server."""
        if len(operations) > MAX_TRANSACTION_OPERATIONS:
            raise NatriumError(
                Codes.STATE_TOO_MANY_TRANSACTIONS,
                f"{len(operations)} operations is over the limit of {MAX_TRANSACTION_OPERATIONS}",
                status=400,
            )
        writes = []
        for op in operations:
            if op.operation not in ("upsert", "delete"):
                raise NatriumError(
                    Codes.NOT_SUPPORTED_STATE_OPERATION,
                    f"operation type {op.operation} not supported",
                    status=400,
                )
            try:
                write = self._write(app_id, op.request, metadata, delete=op.operation == "delete")
            except NatriumError as exc:
                if exc.code != Codes.STATE_SAVE:
                    raise
                raise NatriumError(Codes.STATE_TRANSACTION, exc.message) from None
            options = op.request.options
            if op.operation == "upsert" and options and options.concurrency == "first-write" and not op.request.etag:
                write.headers[EXPECTED_LAST_SUBJECT_SEQUENCE] = await self._create_expectation(write, op.request.key)
            writes.append(write)
        if writes:
            await self._atomic_batch(writes)

    async def _create_expectation(self, write: _Write, key: str) -> str:
        if await self._read(write.kv_key) is not None:
            raise NatriumError(Codes.STATE_TRANSACTION, f"first-write: key {key!r} already exists")
        return str(await self._last_revision(write.kv_key))

    async def _atomic_batch(self, writes: list[_Write]) -> None:
        batch_id = self._nuid.next().decode()
        last = len(writes)
        for number, write in enumerate(writes, 1):
            headers = {**write.headers, "Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(number)}
            subject = self.prefix + write.kv_key
            if number < last:
                await self.nc.publish(subject, write.payload, headers=headers)
                continue
            headers["Nats-Batch-Commit"] = "1"
            try:
                reply = await self.nc.request(subject, write.payload, headers=headers, timeout=5)
            except Exception as exc:
                raise NatriumError(
                    Codes.STATE_TRANSACTION,
                    f"transaction outcome unknown, commit not acknowledged: {type(exc).__name__}",
                    retryable=False,
                ) from None
        ack = json.loads(reply.data or b"{}")
        error = ack.get("error")
        if error:
            why = error.get("description", "rejected")
            if error.get("err_code") in WRONG_LAST_SEQUENCE:
                why = f"possible etag mismatch ({why}); nothing was written"
            raise NatriumError(Codes.STATE_TRANSACTION, f"transaction failed: {why}")


def _write_error(error: JetStreamRejected, code: str, key: str) -> NatriumError:
    if error.err_code in WRONG_LAST_SEQUENCE:
        return NatriumError(
            code,
            f"possible etag mismatch. error from state store: key {key!r}: {error.description}",
            status=409,
        )
    return NatriumError(code, f"failed saving key {key!r}: {error.description}", retryable=error.code == 503)


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _parse_etag(etag: str) -> int:
    try:
        revision = int(etag)
    except ValueError:
        revision = 0
    if revision < 1:
        raise NatriumError(Codes.STATE_SAVE, f"invalid etag value: {etag!r}", status=400)
    return revision


def _parse_ttl(raw: str) -> int | None:
    """Seconds for `Nats-TTL`; None for -1 (never expires)."""
    try:
        seconds = int(raw)
    except ValueError:
        raise malformed(f"metadata ttlInSeconds must be an integer, got {raw!r}") from None
    if seconds == -1:
        return None
    if seconds <= 0:
        raise malformed(f"metadata ttlInSeconds must be -1 or a positive number, got {seconds}")
    return seconds


def _ttl_seconds(header: str) -> float:
    # The server accepts bare seconds or a Go duration; natrium writes bare seconds.
    try:
        return float(header)
    except ValueError:
        return float("inf") if header == "never" else 0.0


async def _bounded_gather(calls: list[Callable[[], Awaitable[T]]], limit: int) -> list[T]:
    slots = asyncio.Semaphore(limit)

    async def run(call: Callable[[], Awaitable[T]]) -> T:
        async with slots:
            return await call()

    return list(await asyncio.gather(*(run(c) for c in calls)))
