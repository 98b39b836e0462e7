"""One Dapr lock store on one JetStream KV bucket (`lock-<name>`), every rule enforced by the server.

- A lock is one message on the resource's key: value = the owner, `Nats-TTL` = the lease, so the
  server ends an abandoned lease by itself. Its revision (stream sequence) names this one holding.
- Acquire = create: publish with `Nats-Expected-Last-Subject-Sequence: 0`. Of any number of
  contenders on any number of replicas, the server lets exactly one in. A KV delete marker is
  taken over with the same check on its revision; a lease is over only once the server removed
  it at its TTL (no process's clock decides it).
- Unlock = the owner deletes exactly that revision (`STREAM.MSG.DELETE` by sequence): if the lease
  ran out and someone else holds the key now, the delete finds nothing and touches nothing.
  Deleting the message instead of writing a KV delete marker leaves the key empty, so the next
  acquire is one round trip and released locks leave nothing behind in the bucket.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from nats.aio.client import Client
from nats.js import api

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
    last_by_subject,
    publish,
    transport_errors_as,
)
from kernel.keyprefix import MAX_KEY_BYTES, SEPARATOR, key_prefix
from kernel.subjects import encode_token
from schemas.lock import UnlockStatus

__all__ = ["KvLockStore", "LockKeys", "MAX_KEY_BYTES"]

log = logging.getLogger("natrium.lock")

# Each retry follows a change made by another contender; a few are plenty.
_ATTEMPTS = 8


@dataclass(frozen=True)
class LockKeys:
    """Dapr's lock `keyPrefix`: `appid` (default), `name`, `none`, or a literal prefix.

    daprd keys a lock `lock||<app-id>||<resource>`; the bucket holds only locks, so natrium drops
    the constant `lock||` and keeps the rest, so two apps locking one resource id do not collide.
    """

    strategy: str
    store_name: str

    def __post_init__(self) -> None:
        if SEPARATOR in self.strategy:
            raise ValueError(f"keyPrefix {self.strategy!r} can't contain '{SEPARATOR}'")

    def kv_key(self, app_id: str | None, resource_id: str) -> str:
        """The KV key; ValueError for a resource id daprd refuses, too long ones are 400."""
        if SEPARATOR in resource_id:
            raise ValueError(f"input key/keyPrefix '{resource_id}' can't contain '{SEPARATOR}'")
        full = key_prefix(self.strategy, self.store_name, app_id) + resource_id
        if len(full.encode("utf-8")) > MAX_KEY_BYTES:
            raise malformed(f"resourceId is over {MAX_KEY_BYTES} bytes")
        return encode_token(full)


@dataclass(frozen=True)
class Holding:
    """What the key holds now: a lease (`owner` set) or a KV delete marker (`owner` None)."""

    sequence: int
    owner: str | None

    def is_free(self) -> bool:
        # Only the server's clock ends a lease: it removes the message at its TTL. Judging expiry
        # by this process's clock would let a replica whose clock runs ahead take a lock that is
        # still held. The cost is the moment between the TTL and the removal (under a second).
        return self.owner is None


class KvLockStore:
    """The lock operations of one store; `open()` creates or updates its bucket."""

    def __init__(self, nc: Client, component: Component) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.component = component
        self.bucket = component_bucket(component, "lock")
        self.stream = f"KV_{self.bucket}"
        self.prefix = f"$KV.{self.bucket}."
        self.replicas = component.meta_int("replicas", 1)
        try:
            self.keys = LockKeys(component.meta("keyPrefix", "appid") or "appid", component.name)
        except ValueError as exc:
            raise NatriumError(Codes.COMPONENT_INVALID, f"component {component.name!r}: {exc}") from None

    # -- bucket ---------------------------------------------------------------------------------

    def stream_config(self) -> api.StreamConfig:
        c = self.component
        return kv_stream_config(
            self.bucket,
            f"natrium lock store {c.name}",
            c,
            allow_msg_ttl=True,
            # Unlock deletes the lease message by its sequence.
            deny_delete=False,
        )

    async def open(self) -> None:
        await ensure_stream(self.js, self.stream_config())
        log.info("lock store ready", extra={"store": self.component.name, "bucket": self.bucket})

    # -- operations -----------------------------------------------------------------------------

    @transport_errors_as(Codes.TRY_LOCK)
    async def try_lock(self, app_id: str | None, resource_id: str, owner: str, expiry_in_seconds: int) -> bool:
        """True if `owner` now holds the lock; False if anyone (`owner` included) holds it."""
        kv_key = self._key(app_id, resource_id, Codes.TRY_LOCK, "failed to try acquiring lock")
        subject = self.prefix + kv_key
        headers = {EXPECTED_LAST_SUBJECT_SEQUENCE: "0", MSG_TTL: str(expiry_in_seconds)}
        payload = owner.encode("utf-8")
        for _ in range(_ATTEMPTS):
            try:
                await publish(self.nc, subject, payload, headers)
                return True
            except JetStreamRejected as exc:
                if exc.err_code not in WRONG_LAST_SEQUENCE:
                    raise NatriumError(
                        Codes.TRY_LOCK, f"failed to try acquiring lock: {exc.description}", retryable=exc.code == 503
                    ) from None
            holding = await self._read(kv_key, Codes.TRY_LOCK)
            if holding is not None and not holding.is_free():
                return False
            # Gone, expired or a delete marker: claim exactly what is there now.
            headers[EXPECTED_LAST_SUBJECT_SEQUENCE] = str(holding.sequence if holding else 0)
        # The key changed under every attempt: other contenders are taking it.
        return False

    @transport_errors_as(Codes.UNLOCK)
    async def unlock(self, app_id: str | None, resource_id: str, owner: str) -> UnlockStatus:
        kv_key = self._key(app_id, resource_id, Codes.UNLOCK, "failed to release lock")
        failed: tuple[int, str] | None = None
        for _ in range(_ATTEMPTS):
            holding = await self._read(kv_key, Codes.UNLOCK)
            if holding is None or holding.is_free():
                return UnlockStatus.LOCK_DOES_NOT_EXIST
            if holding.owner != owner:
                return UnlockStatus.LOCK_BELONGS_TO_OTHERS
            if failed is not None and failed[0] == holding.sequence:
                # Still there and still ours: the delete failed for a reason of its own.
                raise NatriumError(Codes.UNLOCK, f"failed to release lock: {failed[1]}", retryable=True)
            error = await self._delete(holding.sequence)
            if error is None:
                return UnlockStatus.SUCCESS
            # The lease ran out (and maybe changed hands) since the read: look again.
            failed = (holding.sequence, error)
        raise NatriumError(Codes.UNLOCK, "failed to release lock: the lock kept changing", retryable=True)

    # -- NATS -----------------------------------------------------------------------------------

    def _key(self, app_id: str | None, resource_id: str, code: str, what: str) -> str:
        try:
            return self.keys.kv_key(app_id, resource_id)
        except ValueError as exc:
            # daprd reports an illegal resource id as the operation's failure (500).
            raise NatriumError(code, f"{what}: {exc}") from None

    async def _read(self, kv_key: str, code: str) -> Holding | None:
        """The key's latest message; None when it has none."""
        try:
            # On replicas a direct get may be served by a lagging follower; a lock must see the
            # latest write, so it asks the leader.
            stored = await last_by_subject(self.nc, self.stream, self.prefix + kv_key, leader=self.replicas > 1)
        except JetStreamRejected as exc:
            raise NatriumError(code, f"reading the lock failed: {exc.code} {exc.description}") from None
        if stored is None:
            return None
        if stored.headers.get(KV_OPERATION) in ("DEL", "PURGE"):
            return Holding(stored.seq, None)
        return Holding(stored.seq, stored.data.decode("utf-8", errors="replace"))

    async def _delete(self, sequence: int) -> str | None:
        """Delete one message by sequence; None on success, else the server's reason."""
        request = json.dumps({"seq": sequence, "no_erase": True}).encode()
        reply = await self.nc.request(f"$JS.API.STREAM.MSG.DELETE.{self.stream}", request, timeout=5)
        body = json.loads(reply.data or b"{}")
        if body.get("success"):
            return None
        return str((body.get("error") or {}).get("description", "delete refused"))
