"""The state block on the bus: `<root>.state.<store>.{get,bulkget,save,delete,transaction}`."""

from __future__ import annotations

import os
from typing import Any

from kernel.components import Component
from kernel.errors import Codes, NatriumError
from kernel.service import ComponentService, Endpoint, RequestContext
from schemas.state import (
    BulkGetReply,
    BulkGetRequest,
    DeleteRequest,
    GetReply,
    GetRequest,
    SaveReply,
    SaveRequest,
    TransactionRequest,
)
from services.state.store import KvStateStore

__all__ = ["StateService", "DEFAULT_STORE", "SUPPORTED_TYPES"]

DEFAULT_STORE = Component(name="statestore", type="state.nats-kv")
# `state.jetstream` is the type Dapr's own NATS KV store uses; natrium serves it natively.
SUPPORTED_TYPES = ("state.nats-kv", "state.jetstream")
CAPABILITIES = ["ETAG", "TRANSACTIONAL", "TTL", "ACTOR"]


class StateService(ComponentService[KvStateStore]):
    """Serves every state store component of the loaded set."""

    block = "state"
    default_component = DEFAULT_STORE
    supported_types = SUPPORTED_TYPES

    def endpoints(self) -> list[Endpoint[Any]]:
        return [
            Endpoint("get", GetRequest, self.get),
            Endpoint("bulkget", BulkGetRequest, self.bulk_get),
            Endpoint("save", SaveRequest, self.save),
            Endpoint("delete", DeleteRequest, self.delete),
            Endpoint("transaction", TransactionRequest, self.transaction),
        ]

    async def open_component(self, component: Component) -> KvStateStore:
        store = KvStateStore(self.nc, component, os.environ.get("NAMESPACE"))
        await store.open()
        return store

    def not_found(self, name: str) -> NatriumError:
        return NatriumError(Codes.STATE_STORE_NOT_FOUND, f"state store {name} is not found", status=400)

    def capabilities_of(self, backend: KvStateStore) -> list[str]:
        return CAPABILITIES

    async def get(self, request: GetRequest, ctx: RequestContext) -> GetReply:
        return await self.store(ctx).get(request.app_id, request.key, request.consistency)

    async def bulk_get(self, request: BulkGetRequest, ctx: RequestContext) -> BulkGetReply:
        items = await self.store(ctx).bulk_get(request.app_id, request.keys, request.parallelism)
        return BulkGetReply(items=items)

    async def save(self, request: SaveRequest, ctx: RequestContext) -> SaveReply:
        etags = await self.store(ctx).save(request.app_id, request.items, request.metadata)
        return SaveReply(etags=etags)

    async def delete(self, request: DeleteRequest, ctx: RequestContext) -> None:
        await self.store(ctx).delete(request.app_id, request)

    async def transaction(self, request: TransactionRequest, ctx: RequestContext) -> None:
        await self.store(ctx).transact(request.app_id, request.operations, request.metadata)
