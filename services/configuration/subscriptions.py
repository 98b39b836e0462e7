"""The records of `app` configuration subscriptions: one KV bucket per subject root.

An HTTP app subscribes through the gateway and gets callbacks from its app channel; the app
channel finds what to deliver here (key `<store>.<id>`, value a `SubscriptionRecord`), and every
service replica sees the same records. Unsubscribing writes a delete marker that expires after a
minute, so a live app channel sees the removal and the bucket does not grow forever.
"""

from __future__ import annotations

import logging

from nats.aio.client import Client
from nats.js import api
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from kernel.errors import Codes, NatriumError
from kernel.jetstream import JetStreamRejected, ensure_stream, publish
from kernel.subjects import Subjects, encode_token
from schemas.configuration import RECORD_DELETE_TTL, SubscriptionRecord, app_subscriptions_bucket
from services.configuration.store import failures_as, go_list

__all__ = ["SubscriptionBook", "subscriptions_bucket"]

log = logging.getLogger("natrium.configuration")
_MARKER_TTL = RECORD_DELETE_TTL


def subscriptions_bucket(subjects: Subjects) -> str:
    return app_subscriptions_bucket(subjects.root)


class SubscriptionBook:
    """Adds and removes `app` subscription records; `open()` creates the bucket."""

    def __init__(self, nc: Client, subjects: Subjects, replicas: int = 1) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.bucket = subscriptions_bucket(subjects)
        self.stream = f"KV_{self.bucket}"
        self.prefix = f"$KV.{self.bucket}."
        self.replicas = replicas
        self._kv: KeyValue | None = None

    async def open(self) -> None:
        config = api.StreamConfig(
            name=self.stream,
            description="natrium configuration subscriptions",
            subjects=[f"{self.prefix}>"],
            allow_direct=True,
            allow_msg_ttl=True,
            deny_delete=True,
            discard=api.DiscardPolicy.NEW,
            max_msgs_per_subject=1,
            num_replicas=self.replicas,
            storage=api.StorageType.FILE,
        )
        await ensure_stream(self.js, config)
        self._kv = await self.js.key_value(self.bucket)

    @property
    def kv(self) -> KeyValue:
        if self._kv is None:
            raise RuntimeError("subscription book not opened")
        return self._kv

    @staticmethod
    def key(store: str, subscription_id: str) -> str:
        return f"{encode_token(store)}.{encode_token(subscription_id)}"

    async def add(self, record: SubscriptionRecord) -> None:
        message = f"failed to subscribe {go_list(record.keys)} from Configuration store {record.store}"
        with failures_as(Codes.CONFIGURATION_SUBSCRIBE, message):
            body = record.model_dump_json(by_alias=True).encode()
            try:
                await publish(self.nc, self.prefix + self.key(record.store, record.id), body, None)
            except JetStreamRejected as exc:
                raise NatriumError(Codes.CONFIGURATION_SUBSCRIBE, f"{message}: {exc.description}") from None
        log.info("configuration subscription added", extra={"store": record.store, "subscription": record.id})

    async def remove(self, store: str, subscription_id: str) -> None:
        """Remove the record, or raise ERR_CONFIGURATION_UNSUBSCRIBE when there is none."""
        message = f"failed to unsubscribe to configuration request {subscription_id}"
        key = self.key(store, subscription_id)
        with failures_as(Codes.CONFIGURATION_UNSUBSCRIBE, message):
            try:
                await self.kv.get(key)
            except KeyNotFoundError:
                raise NatriumError(
                    Codes.CONFIGURATION_UNSUBSCRIBE, f"{message}: no subscription {subscription_id} in store {store}"
                ) from None
            try:
                await publish(self.nc, self.prefix + key, b"", {"KV-Operation": "DEL", "Nats-TTL": _MARKER_TTL})
            except JetStreamRejected as exc:
                raise NatriumError(Codes.CONFIGURATION_UNSUBSCRIBE, f"{message}: {exc.description}") from None
        log.info("configuration subscription removed", extra={"store": store, "subscription": subscription_id})
