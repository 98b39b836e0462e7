"""The SDK client: state and pub/sub calls as bus requests, subscriptions through the delivery engine."""

from __future__ import annotations

from typing import Any

from nats.aio.client import Client as Nats

from adapters.actors.client import ActorClient
from adapters.bindings.inbox import BindingHandler, InputSubscription
from adapters.delivery import Handler, Subscription
from adapters.invocation import InvokeRequest, InvokeResponse, invoke, to_body
from adapters.sdk import configuration as config
from adapters.sdk.actors import A, ActorProxy
from kernel.client import BusClient
from kernel.connection import ConnectionSettings, close_gracefully, connect
from kernel.subjects import Subjects
from schemas.bindings import InvokeBindingReply, InvokeBindingRequest
from schemas.configuration import ConfigurationItem
from schemas.pubsub import BulkEntry, BulkPublishReply, BulkPublishRequest, PublishReply, PublishRequest
from schemas.state import DeleteRequest, GetReply, GetRequest, SaveItem, SaveReply, SaveRequest, StateOptions

__all__ = ["Client"]


class Client:
    """One app's handle on the runtime; `app_id` prefixes its state keys and names its consumer groups."""

    def __init__(self, nc: Nats, app_id: str | None = None, subjects: Subjects | None = None) -> None:
        self.nc = nc
        self.app_id = app_id
        self.subjects = subjects or Subjects.from_env()
        self.bus = BusClient(nc)
        self._subscriptions: list[Subscription] = []
        self._config_subscriptions: dict[str, config.ConfigurationSubscription] = {}
        self._actors: ActorClient | None = None
        self._binding_inputs: list[InputSubscription] = []

    @classmethod
    async def connect(cls, url: str | None = None, app_id: str | None = None) -> Client:
        """Connect with `NATS_URL` and friends from the environment unless `url` is given."""
        return cls(await connect(ConnectionSettings.from_env(url, name=f"natrium-sdk-{app_id or 'client'}")), app_id)

    # -- actors -----------------------------------------------------------------------------------

    @property
    def actors(self) -> ActorClient:
        """The actor caller of this connection (state, reminders, timers, raw invokes)."""
        if self._actors is None:
            self._actors = ActorClient(self.nc, self.subjects)
        return self._actors

    def actor(self, actor: str | type[A], actor_id: str) -> ActorProxy[A]:
        """A proxy to one actor: `await client.actor(Counter, "c1").incr(2)`."""
        return ActorProxy(self.actors, actor, actor_id)

    async def close(self) -> None:
        if self._actors is not None:
            await self._actors.close()
        for subscription in self._subscriptions:
            await subscription.stop()
        for binding_input in self._binding_inputs:
            await binding_input.stop()
        for watch in list(self._config_subscriptions.values()):
            await watch.stop()
        await close_gracefully(self.nc)

    # -- state ------------------------------------------------------------------------------------

    async def get_state(self, store: str, key: str) -> GetReply:
        subject = self.subjects.block("state", store, "get")
        return await self.bus.request(subject, GetRequest(key=key, app_id=self.app_id), GetReply)

    async def save_state(
        self,
        store: str,
        key: str,
        value: Any,
        *,
        etag: str | None = None,
        first_write: bool = False,
        ttl_seconds: int | None = None,
    ) -> str:
        """Save one value; returns its new ETag."""
        item = SaveItem(
            key=key,
            value=value,
            etag=etag,
            metadata={"ttlInSeconds": str(ttl_seconds)} if ttl_seconds else {},
            options=StateOptions(concurrency="first-write") if first_write else None,
        )
        subject = self.subjects.block("state", store, "save")
        reply = await self.bus.request(subject, SaveRequest(items=[item], app_id=self.app_id), SaveReply)
        return reply.etags[0]

    async def delete_state(self, store: str, key: str, *, etag: str | None = None) -> None:
        subject = self.subjects.block("state", store, "delete")
        await self.bus.request(subject, DeleteRequest(key=key, etag=etag, app_id=self.app_id))

    # -- invocation -------------------------------------------------------------------------------

    async def invoke(
        self,
        app_id: str,
        method: str,
        data: Any = None,
        *,
        verb: str = "POST",
        query: str = "",
        headers: dict[str, str] | None = None,
        timeout: float = 60.0,
    ) -> InvokeResponse:
        """Call `method` of `app_id` straight over the bus; bytes go as they are, other data as JSON."""
        body, content_type = to_body(data)
        call_headers = {"Content-Type": content_type, **(headers or {})} if content_type else dict(headers or {})
        request = InvokeRequest(app_id, "/" + method.lstrip("/"), verb, query, call_headers, body, self.app_id)
        return await invoke(self.nc, self.subjects, request, timeout=timeout)

    # -- pub/sub ----------------------------------------------------------------------------------

    async def publish(
        self,
        pubsub: str,
        topic: str,
        data: Any,
        *,
        content_type: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> PublishReply:
        """Publish `data` (bytes as they are, anything else as JSON) wrapped in a CloudEvent."""
        request = PublishRequest(
            topic=topic, data=data, content_type=content_type, metadata=metadata or {}, app_id=self.app_id
        )
        return await self.bus.request(self.subjects.block("pubsub", pubsub, "publish"), request, PublishReply)

    async def publish_bulk(self, pubsub: str, topic: str, events: dict[str, Any]) -> BulkPublishReply:
        """Publish many events (entry id -> data); the reply lists the ones that failed."""
        entries = [BulkEntry(entry_id=entry_id, event=data) for entry_id, data in events.items()]
        request = BulkPublishRequest(topic=topic, entries=entries, app_id=self.app_id)
        subject = self.subjects.block("pubsub", pubsub, "bulkpublish")
        return await self.bus.request(subject, request, BulkPublishReply)

    async def subscribe(
        self,
        pubsub: str,
        topic: str,
        handler: Handler,
        *,
        group: str | None = None,
        dead_letter_topic: str | None = None,
        concurrency: int = 32,
        handler_timeout: float = 60.0,
    ) -> Subscription:
        """Deliver the topic to `handler` as consumer group `group` (default: this app id)."""
        group = group or self.app_id
        if not group:
            raise ValueError("subscribing needs a consumer group: pass group= or connect with an app_id")
        subscription = Subscription(
            self.nc, pubsub, topic, group, handler, self.subjects, dead_letter_topic, concurrency, handler_timeout
        )
        await subscription.start()
        self._subscriptions.append(subscription)
        return subscription

    # -- bindings ---------------------------------------------------------------------------------

    async def invoke_binding(
        self,
        name: str,
        operation: str,
        data: Any = None,
        metadata: dict[str, str] | None = None,
        *,
        timeout: float = 60.0,
    ) -> InvokeBindingReply:
        """Run `operation` on output binding `name`; bytes and text go as they are, anything else as JSON.

        The reply's `data` is the target's bytes (None when it answered nothing) and `metadata` its metadata.
        """
        body, _ = to_body(data)
        request = InvokeBindingRequest(operation=operation, data=body, metadata=metadata or {}, app_id=self.app_id)
        subject = self.subjects.block("bindings", name, "invoke")
        return await self.bus.request(subject, request, InvokeBindingReply, timeout=timeout)

    async def subscribe_binding(
        self, name: str, handler: BindingHandler, *, group: str | None = None, concurrency: int = 16
    ) -> InputSubscription:
        """Deliver input binding `name` to `handler(event)` as consumer group `group` (default: this app id).

        The event is acked when the handler returns (anything but False); False or an exception redelivers it.
        """
        group = group or self.app_id
        if not group:
            raise ValueError("reading an input binding needs a group: pass group= or connect with an app_id")
        subscription = await InputSubscription(
            self.nc, name, group, handler, self.subjects, concurrency=concurrency
        ).start()
        self._binding_inputs.append(subscription)
        return subscription

    # -- configuration ----------------------------------------------------------------------------

    async def get_configuration(self, store: str, keys: list[str] | None = None) -> dict[str, ConfigurationItem]:
        """The items of `keys` that exist; every item of the store when `keys` is empty."""
        return await config.get_configuration(self.bus, self.subjects, store, list(keys or []))

    async def set_configuration(
        self, store: str, values: dict[str, str], metadata: dict[str, str] | None = None
    ) -> dict[str, str]:
        """Write key -> value (in order, not atomically); returns each key's new version."""
        return await config.set_configuration(self.bus, self.subjects, store, values, metadata)

    async def delete_configuration(self, store: str, keys: list[str]) -> list[str]:
        """Delete keys; returns the ones that existed."""
        return await config.delete_configuration(self.bus, self.subjects, store, keys)

    async def subscribe_configuration(
        self, store: str, keys: list[str] | None, callback: config.UpdateCallback
    ) -> config.ConfigurationSubscription:
        """Call `callback(update)` for every change of `keys` (all keys when empty), in order."""
        subscription = await config.ConfigurationSubscription(
            self.nc, self.subjects, store, list(keys or []), callback
        ).start()
        self._config_subscriptions[subscription.id] = subscription
        return subscription

    async def unsubscribe_configuration(self, store: str, subscription_id: str) -> None:
        """Stop one of this client's subscriptions, or remove an app subscription record by its id."""
        subscription = self._config_subscriptions.get(subscription_id)
        if subscription is not None and subscription.store == store:
            del self._config_subscriptions[subscription_id]
            await subscription.stop()
            return
        await config.unsubscribe_record(self.bus, self.subjects, store, subscription_id)
