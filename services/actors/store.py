"""Actor state in one KV bucket per subject root: key `<type>.<id>.<key>`, every token encoded.

A transaction is one atomic batch (stream `allow_atomic`): the server stores all of its upserts
and deletes or none of them. `ttlInSeconds` becomes the message's `Nats-TTL`.
"""

from __future__ import annotations

import json
from typing import Any

from nats.aio.client import Client
from nats.js import api
from nats.nuid import NUID

from adapters.actors.placement import actor_replicas, state_bucket
from kernel.errors import Codes, NatriumError
from kernel.jetstream import (
    KV_OPERATION,
    MSG_TTL,
    JetStreamRejected,
    ensure_stream,
    last_by_subject,
    transport_errors_as,
)
from kernel.subjects import Subjects, encode_token
from schemas.actors import StateOperation

__all__ = ["ActorStateStore", "MAX_OPERATIONS"]

# nats-server refuses atomic batches over 1000 messages.
MAX_OPERATIONS = 1000


class ActorStateStore:
    """Get and transact the state of actors; `open()` creates or updates the bucket."""

    def __init__(self, nc: Client, subjects: Subjects, replicas: int | None = None) -> None:
        self.nc = nc
        self.subjects = subjects
        self.bucket = state_bucket(subjects)
        self.stream = f"KV_{self.bucket}"
        self.prefix = f"$KV.{self.bucket}."
        self.replicas = actor_replicas() if replicas is None else replicas
        self._nuid = NUID()

    async def open(self) -> None:
        config = api.StreamConfig(
            name=self.stream,
            description=f"natrium actor state {self.subjects.root}",
            subjects=[f"{self.prefix}>"],
            allow_direct=True,
            allow_rollup_hdrs=True,
            deny_delete=True,
            discard=api.DiscardPolicy.NEW,
            max_msgs_per_subject=1,
            num_replicas=self.replicas,
            allow_msg_ttl=True,
            allow_atomic=True,
            storage=api.StorageType.FILE,
        )
        await ensure_stream(self.nc.jetstream(), config)

    def _subject(self, actor_type: str, actor_id: str, key: str) -> str:
        return f"{self.prefix}{encode_token(actor_type)}.{encode_token(actor_id)}.{encode_token(key)}"

    @transport_errors_as(Codes.ACTOR_STATE_GET)
    async def get(self, actor_type: str, actor_id: str, key: str) -> bytes | None:
        subject = self._subject(actor_type, actor_id, key)
        try:
            # A turn reads what the previous one wrote: on replicas, from the leader.
            stored = await last_by_subject(self.nc, self.stream, subject, leader=self.replicas > 1)
        except JetStreamRejected as exc:
            raise NatriumError(Codes.ACTOR_STATE_GET, f"error getting actor state: {exc.description}") from None
        if stored is None:
            return None
        if stored.headers.get(KV_OPERATION) in ("DEL", "PURGE") or "Nats-Marker-Reason" in stored.headers:
            return None
        return stored.data

    @transport_errors_as(Codes.ACTOR_STATE_TRANSACTION_SAVE)
    async def transaction(self, actor_type: str, actor_id: str, operations: list[StateOperation]) -> None:
        if len(operations) > MAX_OPERATIONS:
            raise _failed(f"{len(operations)} operations is over the limit of {MAX_OPERATIONS}")
        writes = [self._write(actor_type, actor_id, op) for op in operations]
        if not writes:
            return
        batch = self._nuid.next().decode()
        for number, (subject, payload, headers) in enumerate(writes, 1):
            headers = {**headers, "Nats-Batch-Id": batch, "Nats-Batch-Sequence": str(number)}
            if number < len(writes):
                await self.nc.publish(subject, payload, headers=headers)
                continue
            headers["Nats-Batch-Commit"] = "1"
            try:
                reply = await self.nc.request(subject, payload, headers=headers, timeout=5)
            except Exception as exc:
                raise _failed(f"outcome unknown, commit not acknowledged: {type(exc).__name__}") from None
            error = json.loads(reply.data or b"{}").get("error")
            if error:
                raise _failed(str(error.get("description", "rejected")))

    def _write(self, actor_type: str, actor_id: str, op: StateOperation) -> tuple[str, bytes, dict[str, str]]:
        request = op.request
        key = request.get("key")
        if not isinstance(key, str) or not key:
            raise _failed("every operation needs a non-empty request.key", status=400)
        subject = self._subject(actor_type, actor_id, key)
        operation = op.operation.lower()
        if operation == "delete":
            return subject, b"", {KV_OPERATION: "DEL"}
        if operation != "upsert":
            raise _failed(f"operation type {op.operation} not supported", status=400)
        value: Any = request.get("value")
        payload = value if isinstance(value, bytes) else json.dumps(value, separators=(",", ":")).encode()
        headers: dict[str, str] = {}
        ttl = (request.get("metadata") or {}).get("ttlInSeconds")
        if ttl is not None:
            try:
                seconds = int(ttl)
            except (TypeError, ValueError):
                raise _failed(f"metadata ttlInSeconds must be an integer, got {ttl!r}", status=400) from None
            if seconds > 0:
                headers[MSG_TTL] = str(seconds)
        return subject, payload, headers


def _failed(why: str, status: int = 500) -> NatriumError:
    return NatriumError(Codes.ACTOR_STATE_TRANSACTION_SAVE, f"error saving actor state: {why}", status=status)
