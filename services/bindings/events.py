"""One input binding's events on one JetStream stream (`BINDINGS_<root>_<name>`).

- Sources write into `<root>.bindings.<name>.events`; the driver acks its source only after the
  stream acknowledged the event, so from there on JetStream holds it.
- Each app reads through its own durable consumer (one per app id, like a pub/sub consumer
  group) and acks only after the app accepted the event; a refusal is redelivered with back-off,
  without a delivery limit: an input event is never given up. It leaves the stream once every
  consumer acked it (`forget_delivered`), not after an age, unless `maxAge` is set.
- A cron binding keeps one message schedule on `<root>.bindings.<name>.schedule`; the server fires
  it into the events subject, once per tick whatever the number of service replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import uuid

from nats.aio.client import Client
from nats.js import api
from nats.js.errors import NotFoundError

from adapters.bindings.base import Driver, InputEvent
from adapters.bindings.cron import CronBinding
from kernel.components import Component
from kernel.durations import parse_duration
from kernel.errors import Codes, NatriumError
from kernel.jetstream import MSG_TTL, JetStreamRejected, ensure_stream, publish, storage_of
from kernel.subjects import Subjects, encode_token
from schemas.bindings import EVENT_METADATA_HEADER, SubscribeBindingReply
from services.bindings.lease import ReaderLease

__all__ = ["BindingEvents", "supervise"]

log = logging.getLogger("natrium.bindings")

_DELIVER = {"all": api.DeliverPolicy.ALL, "new": api.DeliverPolicy.NEW}


class BindingEvents:
    """The stream of one input binding; `open()` creates it (and the schedule of a cron binding)."""

    def __init__(self, nc: Client, subjects: Subjects, component: Component, driver: Driver) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.component = component
        self.driver = driver
        self.subjects = subjects
        self.name = component.meta("streamName") or subjects.stream("bindings", component.name)
        token = encode_token(component.name)
        self.subject = f"{subjects.root}.bindings.{token}.events"
        self.schedule_subject = f"{subjects.root}.bindings.{token}.schedule"
        self.lease_subject = f"{subjects.root}.bindings.{token}.lease"
        meta = component.meta
        is_cron = isinstance(driver, CronBinding)
        try:
            # Ticks nobody took within an hour are worth nothing. A source's events were taken off
            # their queue when stored: they stay until every app acked them (`forget_delivered`),
            # however long an app refuses them, unless maxAge says otherwise.
            self.max_age = parse_duration(meta("maxAge") or ("1h" if is_cron else "0"))
            self.forget_every = parse_duration(meta("purgeInterval") or "30s")
            self.ack_wait = parse_duration(meta("ackWait") or "60s")
            self.backoff = [parse_duration(p) for p in (meta("backOff") or "1s,2s,5s,10s,30s").split(",")]
            # Sources replicas cannot share are read under a lease this long (see lease.py).
            self.reader_lease_ttl = parse_duration(meta("readerLeaseTTL") or "10s")
        except ValueError as exc:
            raise self._invalid(str(exc)) from None
        self.deliver_policy = (meta("deliverPolicy") or ("new" if is_cron else "all")).lower()
        if self.deliver_policy not in _DELIVER:
            raise self._invalid("deliverPolicy must be all or new")

    def _invalid(self, why: str) -> NatriumError:
        return NatriumError(
            Codes.COMPONENT_INVALID, f"component {self.component.name!r} ({self.component.source}): {why}"
        )

    def stream_config(self) -> api.StreamConfig:
        return api.StreamConfig(
            name=self.name,
            description=f"natrium input binding {self.component.name}",
            subjects=[self.subject, self.schedule_subject, self.lease_subject],
            retention=api.RetentionPolicy.LIMITS,
            max_age=self.max_age,
            num_replicas=self.component.meta_int("replicas", 1),
            storage=storage_of(self.component),
            allow_msg_ttl=True,
            allow_msg_schedules=isinstance(self.driver, CronBinding),
        )

    async def open(self) -> None:
        await ensure_stream(self.js, self.stream_config())
        if isinstance(self.driver, CronBinding):
            await self._schedule(self.driver)
        log.info("input binding ready", extra={"binding": self.component.name, "stream": self.name})

    async def _schedule(self, cron: CronBinding) -> None:
        """Put the schedule in place unless it already is: rewriting it would restart an `@every` period."""
        headers = cron.schedule_headers(self.subject)
        try:
            current = await self.js.get_last_msg(self.name, self.schedule_subject)
            if current.headers and all(current.headers.get(k) == v for k, v in headers.items()):
                return
        except NotFoundError:
            pass
        # `never`: the stream's maxAge must not remove the schedule itself, only its firings.
        body = json.dumps({"schedule": cron.schedule_text}).encode()
        headers.update({MSG_TTL: "never", EVENT_METADATA_HEADER: json.dumps({"schedule": cron.schedule_text})})
        try:
            await publish(self.nc, self.schedule_subject, body, headers)
        except JetStreamRejected as exc:
            raise self._invalid(f"schedule {cron.schedule_text!r} refused by NATS: {exc.description}") from None
        log.info("cron scheduled", extra={"binding": self.component.name, "schedule": cron.schedule_text})

    async def emit(self, event: InputEvent) -> None:
        """Store one event; returns once JetStream acknowledged it."""
        headers = {EVENT_METADATA_HEADER: json.dumps(event.metadata, separators=(",", ":"))}
        if event.id:
            headers["Nats-Msg-Id"] = f"{self.component.name}:{event.id}"
        await publish(self.nc, self.subject, event.data, headers)

    def consumer_name(self, app_id: str) -> str:
        return encode_token(app_id)

    async def subscribe(self, app_id: str) -> SubscribeBindingReply:
        """Create (or keep) the app's durable consumer and tell the app channel how to read it."""
        durable = self.consumer_name(app_id)
        config = api.ConsumerConfig(
            durable_name=durable,
            description=f"natrium app {app_id} on input binding {self.component.name}",
            filter_subject=self.subject,
            ack_policy=api.AckPolicy.EXPLICIT,
            deliver_policy=_DELIVER[self.deliver_policy],
            ack_wait=self.ack_wait,
            max_deliver=-1,
            max_ack_pending=self.component.meta_int("maxAckPending", 1000),
        )
        await self.js.add_consumer(self.name, config)
        return SubscribeBindingReply(
            stream=self.name, consumer=durable, subject=self.subject, backoff=self.backoff, ack_wait=self.ack_wait
        )

    async def forget_delivered(self) -> int:
        """Remove the events every app's consumer has acknowledged; returns the sequence kept from.

        What an interest-retention stream does, limited to the events subject: the lease and the
        cron schedule on the same stream are no one's interest and must stay."""
        consumers = await self.js.consumers_info(self.name)
        if not consumers:
            return 0
        keep_from = min(c.ack_floor.stream_seq or 0 for c in consumers if c.ack_floor is not None) + 1
        if keep_from > 1:
            await self.js.purge_stream(self.name, seq=keep_from, subject=self.subject)
        return keep_from

    async def has_consumers(self) -> bool:
        try:
            info = await self.js.stream_info(self.name)
        except NotFoundError:
            return False
        return bool(info.state.consumer_count)


async def supervise(name: str, driver: Driver, events: BindingEvents, stop: asyncio.Event) -> None:
    """Run the driver's reader until `stop`, starting it again after any failure (with back-off).

    A source replicas cannot share is read by one replica at a time, under a lease.
    """
    lease = None
    if not driver.competing:
        holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        lease = ReaderLease(events.nc, events.name, events.lease_subject, holder, events.reader_lease_ttl)
    janitor = asyncio.create_task(_forget_delivered(name, events, stop))
    try:
        await _read(name, driver, events, lease, stop)
    finally:
        janitor.cancel()


async def _forget_delivered(name: str, events: BindingEvents, stop: asyncio.Event) -> None:
    """Every `purgeInterval`, drop the events all apps acked (a failed round is tried next time)."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), events.forget_every)
        try:
            await events.forget_delivered()
        except Exception as exc:
            log.warning("input binding %s: could not drop delivered events: %s", name, exc)


async def _read(
    name: str, driver: Driver, events: BindingEvents, lease: ReaderLease | None, stop: asyncio.Event
) -> None:
    pause = 0.5
    while not stop.is_set():
        try:
            if lease is None:
                await driver.read(events.emit)
                log.warning("input binding %s: the source ended its stream; reading again", name)
            else:
                await lease.run(lambda: driver.read(events.emit), stop)
            pause = 0.5
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("input binding %s: reader failed, starting again in %.1fs: %s", name, pause, exc)
        try:
            await asyncio.wait_for(stop.wait(), pause)
        except TimeoutError:
            pass
        pause = min(pause * 2, 10.0)
