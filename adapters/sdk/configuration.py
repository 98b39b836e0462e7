"""Configuration from the Python SDK: reads and writes over the bus, subscriptions as a KV watch.

A subscription asks the configuration service what to watch (the KV subjects and the stream
sequence to start from), then runs an ordered consumer on the store's stream itself: every
change made after `subscribe_configuration` returned reaches the callback once, in the order
the store applied it, deletes included, one call at a time.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import api
from nats.js.client import JetStreamContext

from kernel.client import BusClient
from kernel.subjects import Subjects, decode_token
from schemas.configuration import (
    ConfigurationItem,
    DeleteReply,
    DeleteRequest,
    GetReply,
    GetRequest,
    SetItem,
    SetReply,
    SetRequest,
    SubscribeReply,
    SubscribeRequest,
    UnsubscribeReply,
    UnsubscribeRequest,
    item_from_stored,
)

__all__ = [
    "ConfigurationSubscription",
    "ConfigurationUpdate",
    "UpdateCallback",
    "delete_configuration",
    "get_configuration",
    "set_configuration",
    "unsubscribe_record",
]

log = logging.getLogger("natrium.sdk.configuration")
_DELETED = ("DEL", "PURGE")


@dataclass(frozen=True)
class ConfigurationUpdate:
    """One change of one key, as the store applied it."""

    id: str
    """The subscription it was delivered to."""
    store: str
    key: str
    item: ConfigurationItem | None
    """The new item; None when the key was deleted."""
    version: str
    """The store revision of this change (of the delete marker for a delete)."""

    @property
    def deleted(self) -> bool:
        return self.item is None


UpdateCallback = Callable[[ConfigurationUpdate], Awaitable[None] | None]


async def get_configuration(
    bus: BusClient, subjects: Subjects, store: str, keys: list[str], metadata: dict[str, str] | None = None
) -> dict[str, ConfigurationItem]:
    request = GetRequest(keys=keys, metadata=metadata or {})
    reply = await bus.request(subjects.block("configuration", store, "get"), request, GetReply)
    return reply.items


async def set_configuration(
    bus: BusClient, subjects: Subjects, store: str, values: dict[str, str], metadata: dict[str, str] | None = None
) -> dict[str, str]:
    items = {key: SetItem(value=value, metadata=metadata or {}) for key, value in values.items()}
    reply = await bus.request(subjects.block("configuration", store, "set"), SetRequest(items=items), SetReply)
    return reply.versions


async def delete_configuration(bus: BusClient, subjects: Subjects, store: str, keys: list[str]) -> list[str]:
    reply = await bus.request(subjects.block("configuration", store, "delete"), DeleteRequest(keys=keys), DeleteReply)
    return reply.deleted


async def unsubscribe_record(bus: BusClient, subjects: Subjects, store: str, subscription_id: str) -> None:
    """Remove an app subscription record (one made over HTTP); raises if there is none."""
    subject = subjects.block("configuration", store, "unsubscribe")
    await bus.request(subject, UnsubscribeRequest(id=subscription_id), UnsubscribeReply)


class ConfigurationSubscription:
    """Watches some keys (or all) of one store for `callback`; `start()` then `stop()`."""

    def __init__(self, nc: Client, subjects: Subjects, store: str, keys: list[str], callback: UpdateCallback) -> None:
        self.nc = nc
        self.subjects = subjects
        self.store = store
        self.keys = list(keys)
        self.callback = callback
        self.plan: SubscribeReply | None = None
        self.delivered = 0
        self._sub: JetStreamContext.PushSubscription | None = None

    @property
    def id(self) -> str:
        if self.plan is None:
            raise RuntimeError("subscription not started")
        return self.plan.id

    async def start(self, plan: SubscribeReply | None = None) -> ConfigurationSubscription:
        """Subscribe through the configuration service, or follow `plan` as given: the app channel
        follows a recorded subscription from its own start sequence that way."""
        if plan is None:
            subject = self.subjects.block("configuration", self.store, "subscribe")
            request = SubscribeRequest(keys=self.keys)
            plan = await BusClient(self.nc).request(subject, request, SubscribeReply)
        self.plan = plan
        config = api.ConsumerConfig(
            description=f"natrium configuration subscription {plan.id}",
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=plan.start_sequence,
            filter_subjects=plan.subjects if len(plan.subjects) > 1 else None,
        )
        # An ordered consumer: no acks, one message at a time, and when a delivery goes missing
        # (reconnect, server restart) nats-py recreates it from the last stream sequence seen.
        js = self.nc.jetstream()
        self._sub = await js.subscribe(
            plan.subjects[0], stream=plan.stream, cb=self._on_message, ordered_consumer=True, config=config
        )
        log.info("configuration subscribed", extra={"store": self.store, "subscription": plan.id})
        return self

    async def stop(self) -> None:
        """Stop delivering; a callback in progress is cancelled."""
        sub, self._sub = self._sub, None
        if sub is None:
            return
        try:
            await sub.unsubscribe()
        except Exception as exc:  # the connection may be gone already; nothing is left to stop then
            log.debug("unsubscribe: %s", exc)

    async def _on_message(self, msg: Msg) -> None:
        assert self.plan is not None
        headers = msg.headers or {}
        key = decode_token(msg.subject[len(self.plan.key_prefix) :])
        revision = msg.metadata.sequence.stream
        deleted = headers.get("KV-Operation") in _DELETED or "Nats-Marker-Reason" in headers
        item = None if deleted else item_from_stored(msg.data, revision)
        update = ConfigurationUpdate(self.plan.id, self.store, key, item, str(revision))
        self.delivered += 1
        try:
            result = self.callback(update)
            if inspect.isawaitable(result):
                await result
        except Exception:  # one failing callback must not end the subscription
            log.exception("configuration callback failed", extra={"subscription": self.plan.id, "key": key})
