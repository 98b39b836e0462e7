"""The configuration block on the bus: `<root>.configuration.<store>.{get,set,delete,subscribe,unsubscribe}`."""

from __future__ import annotations

import datetime as dt
from typing import Any

from nats.nuid import NUID

from kernel.components import Component
from kernel.errors import Codes, NatriumError
from kernel.service import ComponentService, Endpoint, RequestContext
from schemas.configuration import (
    DeleteReply,
    DeleteRequest,
    GetReply,
    GetRequest,
    SetReply,
    SetRequest,
    SubscribeReply,
    SubscribeRequest,
    SubscriptionRecord,
    UnsubscribeReply,
    UnsubscribeRequest,
)
from services.configuration.store import KvConfigStore
from services.configuration.subscriptions import SubscriptionBook

__all__ = ["ConfigurationService", "DEFAULT_STORE", "SUPPORTED_TYPES"]

DEFAULT_STORE = Component(name="configstore", type="configuration.nats-kv")
# `configuration.jetstream` names the same thing the way Dapr names its NATS components.
SUPPORTED_TYPES = ("configuration.nats-kv", "configuration.jetstream")


class ConfigurationService(ComponentService[KvConfigStore]):
    """Serves every configuration store component of the loaded set."""

    block = "configuration"
    default_component = DEFAULT_STORE
    supported_types = SUPPORTED_TYPES

    def __post_init__(self) -> None:
        super().__post_init__()
        self.book = SubscriptionBook(self.nc, self.subjects)
        self._ids = NUID()

    def endpoints(self) -> list[Endpoint[Any]]:
        return [
            Endpoint("get", GetRequest, self.get),
            Endpoint("set", SetRequest, self.set),
            Endpoint("delete", DeleteRequest, self.delete),
            Endpoint("subscribe", SubscribeRequest, self.subscribe),
            Endpoint("unsubscribe", UnsubscribeRequest, self.unsubscribe),
        ]

    async def open_component(self, component: Component) -> KvConfigStore:
        store = KvConfigStore(self.nc, component)
        await store.open()
        return store

    def not_found(self, name: str) -> NatriumError:
        return NatriumError(Codes.CONFIGURATION_STORE_NOT_FOUND, f"configuration store {name} not found", status=400)

    async def setup(self) -> None:
        await super().setup()
        # The records outlive any one store's replicas setting: keep them as safe as the safest store.
        self.book.replicas = max((s.replicas for s in self.stores.values()), default=1)
        await self.book.open()

    async def get(self, request: GetRequest, ctx: RequestContext) -> GetReply:
        return GetReply(items=await self.store(ctx).get(request.keys))

    async def set(self, request: SetRequest, ctx: RequestContext) -> SetReply:
        return SetReply(versions=await self.store(ctx).set(request.items))

    async def delete(self, request: DeleteRequest, ctx: RequestContext) -> DeleteReply:
        return DeleteReply(deleted=await self.store(ctx).delete(request.keys))

    async def subscribe(self, request: SubscribeRequest, ctx: RequestContext) -> SubscribeReply:
        store = self.store(ctx)
        if request.delivery == "app" and not request.app_id:
            # daprd's answer when there is no app to call back.
            raise NatriumError(
                Codes.APP_CHANNEL_NIL, "app channel is not initialized. cannot subscribe to configuration updates"
            )
        start = await store.next_sequence(request.keys)
        subscription_id = self._ids.next().decode()
        if request.delivery == "app":
            assert request.app_id is not None
            record = SubscriptionRecord(
                id=subscription_id,
                store=store.name,
                keys=list(dict.fromkeys(request.keys)),
                app_id=request.app_id,
                channel_id=request.channel_id,
                start_sequence=start,
                created=dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z"),
                bucket=store.bucket,
                stream=store.stream,
                subjects=store.watch_subjects(request.keys),
                key_prefix=store.prefix,
            )
            await self.book.add(record)
        return SubscribeReply(
            id=subscription_id,
            bucket=store.bucket,
            stream=store.stream,
            subjects=store.watch_subjects(request.keys),
            key_prefix=store.prefix,
            start_sequence=start,
        )

    async def unsubscribe(self, request: UnsubscribeRequest, ctx: RequestContext) -> UnsubscribeReply:
        store = self.store(ctx)
        await self.book.remove(store.name, request.id)
        return UnsubscribeReply(ok=True)
