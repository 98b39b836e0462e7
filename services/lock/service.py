"""The lock block on the bus: `<root>.lock.<store>.{lock,unlock}`."""

from __future__ import annotations

from typing import Any

from kernel.components import Component
from kernel.errors import Codes, NatriumError, malformed
from kernel.service import ComponentService, Endpoint, RequestContext
from schemas.lock import LockReply, LockRequest, UnlockReply, UnlockRequest
from services.lock.store import KvLockStore

__all__ = ["LockService", "DEFAULT_STORE", "SUPPORTED_TYPES"]

DEFAULT_STORE = Component(name="lockstore", type="lock.nats-kv")
# `lock.jetstream` by analogy with Dapr's NATS state type; both are served natively.
SUPPORTED_TYPES = ("lock.nats-kv", "lock.jetstream")


class LockService(ComponentService[KvLockStore]):
    """Serves every lock store component of the loaded set."""

    block = "lock"
    default_component = DEFAULT_STORE
    supported_types = SUPPORTED_TYPES

    def endpoints(self) -> list[Endpoint[Any]]:
        return [
            Endpoint("lock", LockRequest, self.lock),
            Endpoint("unlock", UnlockRequest, self.unlock),
        ]

    async def open_component(self, component: Component) -> KvLockStore:
        store = KvLockStore(self.nc, component)
        await store.open()
        return store

    def not_found(self, name: str) -> NatriumError:
        return NatriumError(Codes.LOCK_STORE_NOT_FOUND, f"lock store {name} not found", status=400)

    async def lock(self, request: LockRequest, ctx: RequestContext) -> LockReply:
        # daprd's checks, in daprd's order and words.
        if request.expiry_in_seconds <= 0:
            raise malformed(f"ExpiryInSeconds is not positive in lock store {ctx.component}")
        _check_target(request, ctx.component)
        acquired = await self.store(ctx).try_lock(
            request.app_id, request.resource_id, request.lock_owner, request.expiry_in_seconds
        )
        return LockReply(success=acquired)

    async def unlock(self, request: UnlockRequest, ctx: RequestContext) -> UnlockReply:
        _check_target(request, ctx.component)
        status = await self.store(ctx).unlock(request.app_id, request.resource_id, request.lock_owner)
        return UnlockReply(status=int(status))


def _check_target(request: LockRequest | UnlockRequest, store: str) -> None:
    if not request.resource_id:
        raise malformed(f"ResourceId is empty in lock store {store}")
    if not request.lock_owner:
        raise malformed(f"LockOwner is empty in lock store {store}")
