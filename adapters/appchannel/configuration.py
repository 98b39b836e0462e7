"""Configuration updates for an HTTP app: the callbacks daprd sends after `GET .../subscribe`.

The configuration service records every HTTP subscription (app id, store, keys, watch plan and
start sequence) in the KV bucket `configsubs-<root>`. The app channel watches that bucket; for
each record of its own app id it follows the store with the SDK's watcher from the record's start
sequence, and POSTs every change to `/configuration/{store}/{key}` with
`{"id", "items": {key: {"value", "version", "metadata"}}}`, one change at a time per subscription.
A delete arrives as an empty item, as daprd's Redis store sends it. Only a 200 answer counts;
anything else is retried with a short, capped back-off and given up, loudly, after a bounded
number of tries. Removing the record (unsubscribe) stops the subscription.

A record carrying a channel id (made through a `natrium run` gateway) belongs to that one run:
only the app channel with that id delivers it, and it removes its records when it stops, as
daprd forgets subscriptions held in its memory. Records without one go to every channel of the
app id.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass, field

import aiohttp
import nats.errors
from nats.aio.client import Client
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue
from pydantic import ValidationError

from adapters.appchannel.http_app import HttpApp
from adapters.resiliency import RetryPolicy
from adapters.sdk.configuration import ConfigurationSubscription, ConfigurationUpdate, UpdateCallback
from kernel.jetstream import JetStreamRejected, publish
from kernel.subjects import Subjects
from schemas.configuration import (
    RECORD_DELETE_TTL,
    ConfigurationItem,
    SubscriptionRecord,
    app_subscriptions_bucket,
)

__all__ = ["ConfigurationDelivery", "DeliveryPolicy", "callback_body"]

log = logging.getLogger("natrium.appchannel.configuration")


@dataclass(frozen=True)
class DeliveryPolicy:
    """How hard the channel tries to get one update into the app."""

    retry: RetryPolicy = field(
        default_factory=lambda: RetryPolicy(
            policy="exponential", initial_interval=0.1, multiplier=2.0, max_interval=2.0, max_retries=10
        )
    )
    """Between tries of one update: 0.1 s doubling to 2 s, 10 retries (about 13 s) before giving up."""
    timeout: float = 30.0
    """Seconds the app has to answer one POST."""
    wait_for_bucket: float = 10.0
    """Longest pause between looks for the records bucket (it appears when the service first starts)."""


def callback_body(update: ConfigurationUpdate) -> bytes:
    """daprd's body: the subscription id and an items MAP with the one key that changed."""
    item = update.item if update.item is not None else ConfigurationItem()
    body = {"id": update.id, "items": {update.key: item.model_dump()}}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


class ConfigurationDelivery:
    """Delivers the app's recorded configuration subscriptions; `start()` then `stop()`."""

    def __init__(
        self,
        nc: Client,
        subjects: Subjects,
        app_id: str,
        app: HttpApp,
        policy: DeliveryPolicy | None = None,
        channel_id: str | None = None,
    ) -> None:
        self.nc = nc
        self.app_id = app_id
        self.channel_id = channel_id
        """This run's id: records of another channel id are not ours; ours are removed at stop."""
        self.app = app
        self.policy = policy or DeliveryPolicy()
        self.bucket = app_subscriptions_bucket(subjects.root)
        self.subjects = subjects
        self.following: dict[str, tuple[SubscriptionRecord, asyncio.Task[None]]] = {}
        """KV key of each record being delivered -> the record and the task that follows it."""
        self._kv: KeyValue | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._watch_records())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        owned = [key for key, (record, _) in self.following.items() if self._owns(record)]
        for key in list(self.following):
            await self._unfollow(key)
        for key in owned:
            await self._remove(key)

    def _owns(self, record: SubscriptionRecord) -> bool:
        return self.channel_id is not None and record.channel_id == self.channel_id

    async def _remove(self, key: str) -> None:
        """Delete one of this run's records, with the expiring marker the service's unsubscribe writes."""
        headers = {"KV-Operation": "DEL", "Nats-TTL": RECORD_DELETE_TTL}
        try:
            await publish(self.nc, f"$KV.{self.bucket}.{key}", b"", headers)
        except (JetStreamRejected, nats.errors.Error, TimeoutError) as exc:
            log.warning("configuration subscription record %s of this run not removed: %r", key, exc)

    # -- the records ------------------------------------------------------------------------------

    async def _watch_records(self) -> None:
        """Follow the records bucket for ever: those there at start, then every put and delete."""
        pause = 0.5
        while True:
            try:
                self._kv = kv = await self.nc.jetstream().key_value(self.bucket)
                watcher = await kv.watchall()
            except (nats.errors.Error, TimeoutError) as exc:
                # No configuration service has run on this root yet (or NATS is away): look again later.
                log.debug("configuration subscriptions bucket %s not there yet: %r", self.bucket, exc)
                await asyncio.sleep(pause)
                pause = min(pause * 2, self.policy.wait_for_bucket)
                continue
            log.info("watching configuration subscriptions of %s in %s", self.app_id, self.bucket)
            pause = 0.5
            try:
                async for entry in watcher:
                    if entry is None:  # the marker after the records that existed at start
                        continue
                    if entry.operation in (KV_DEL, KV_PURGE):
                        await self._unfollow(entry.key)
                    else:
                        await self._follow(entry.key, entry.value or b"")
            except Exception:  # a bug here must not end delivery for good: log it, watch again
                log.exception("configuration subscriptions watch of %s failed; watching again", self.app_id)
                await asyncio.sleep(pause)
            finally:
                with contextlib.suppress(Exception):  # the connection may be closing already
                    await watcher.stop()

    async def _follow(self, key: str, value: bytes) -> None:
        try:
            record = SubscriptionRecord.model_validate_json(value)
        except ValidationError as exc:
            log.warning("ignoring configuration subscription record %s: %s", key, exc)
            return
        if record.app_id != self.app_id:
            return
        if record.channel_id is not None and record.channel_id != self.channel_id:
            return  # another run of this app id (a replica, or a run gone before) made it
        current = self.following.get(key)
        if current is not None:
            if current[0] == record:
                return
            await self._unfollow(key)
        task = asyncio.create_task(self._run_subscription(key, record))
        self.following[key] = (record, task)

    async def _unfollow(self, key: str) -> None:
        current = self.following.pop(key, None)
        if current is None:
            return
        record, task = current
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        log.info("configuration subscription %s of %s stopped", record.id, self.app_id)

    async def _run_subscription(self, key: str, record: SubscriptionRecord) -> None:
        """Owns the store watch of one record until cancelled (the record is gone or the channel stops)."""
        subscription = ConfigurationSubscription(
            self.nc, self.subjects, record.store, record.keys, self._deliverer(key, record)
        )
        pause = 0.5
        try:
            while True:
                try:
                    await subscription.start(record.plan())
                    break
                except Exception as exc:  # the store's stream gone, NATS away: loudly, and again
                    log.error(
                        "configuration subscription %s to %s cannot watch the store, trying again: %r",
                        record.id,
                        record.store,
                        exc,
                    )
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, 10.0)
            log.info(
                "configuration subscription %s of %s: delivering %s from sequence %d",
                record.id,
                self.app_id,
                record.store,
                record.start_sequence,
            )
            await asyncio.Event().wait()
        finally:
            await subscription.stop()

    # -- the callbacks ----------------------------------------------------------------------------

    def _deliverer(self, key: str, record: SubscriptionRecord) -> UpdateCallback:
        async def deliver(update: ConfigurationUpdate) -> None:
            # The record watch may lag an unsubscribe; the bucket itself does not: once
            # unsubscribe has answered, no later change reaches the app.
            if not await self._recorded(key):
                return
            await self._post(record, update)

        return deliver

    async def _recorded(self, key: str) -> bool:
        if key not in self.following or self._kv is None:
            return False
        try:
            await self._kv.get(key)
        except KeyNotFoundError:  # deleted: unsubscribed
            return False
        except (nats.errors.Error, TimeoutError) as exc:
            log.warning("cannot check configuration subscription %s, delivering anyway: %r", key, exc)
        return True

    async def _post(self, record: SubscriptionRecord, update: ConfigurationUpdate) -> None:
        """POST until the app answers 200; after the retries, log the update given up and go on."""
        body = callback_body(update)
        retry = self.policy.retry
        attempt = 0
        while True:
            try:
                status = await self.app.post_configuration(update.store, update.key, body, self.policy.timeout)
                problem = f"answered {status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                status, problem = 0, f"not reachable: {type(exc).__name__} {exc}".rstrip()
            if status == 200:
                return
            attempt += 1
            if not retry.allows(attempt):
                log.error(
                    "configuration update not delivered, given up after %d tries: app %s %s "
                    "(subscription %s, store %s, key %r, version %s)",
                    attempt,
                    self.app_id,
                    problem,
                    record.id,
                    update.store,
                    update.key,
                    update.version,
                )
                return
            delay = retry.delay(attempt)
            log.warning(
                "configuration update to app %s: %s (subscription %s, key %r, version %s); try %d in %.1fs",
                self.app_id,
                problem,
                record.id,
                update.key,
                update.version,
                attempt + 1,
                delay,
            )
            await asyncio.sleep(delay)
