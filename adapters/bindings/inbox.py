"""An app's side of an input binding: its durable consumer, read and acked one event at a time.

Used by the app channel (events POSTed to an HTTP app) and by the SDK (an async handler). The
handler accepts an event by returning anything but False; False or an exception means "not
now": the event is redelivered after the binding's back-off, for as long as it takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from kernel.client import BusClient
from kernel.heartbeat import working_on
from kernel.subjects import Subjects
from schemas.bindings import EVENT_METADATA_HEADER, SubscribeBindingReply, SubscribeBindingRequest

__all__ = ["BindingEvent", "BindingHandler", "InputSubscription"]

log = logging.getLogger("natrium.bindings.inbox")

_SCHEDULER = "Nats-Scheduler"


@dataclass(frozen=True)
class BindingEvent:
    """One input event: the source's bytes and metadata."""

    binding: str
    data: bytes
    metadata: dict[str, str]
    delivery: int
    """1 on the first delivery, 2 on the first redelivery, ..."""
    sequence: int

    def json(self) -> object:
        return json.loads(self.data) if self.data else None


BindingHandler = Callable[[BindingEvent], Awaitable[object]]


@dataclass
class InputSubscription:
    """Reads one input binding as `app_id`; `start()` then `stop()`."""

    nc: Client
    binding: str
    app_id: str
    handler: BindingHandler
    subjects: Subjects = field(default_factory=Subjects)
    concurrency: int = 16
    handler_timeout: float = 60.0
    gate: asyncio.Event | None = None
    """When given, events are pulled only while it is set (the app's health, `natrium run`)."""

    def __post_init__(self) -> None:
        self.plan: SubscribeBindingReply | None = None
        self._runner: asyncio.Task[None] | None = None
        self.delivered = 0

    async def start(self) -> InputSubscription:
        subject = self.subjects.block("bindings", self.binding, "subscribe")
        self.plan = await BusClient(self.nc).request(
            subject, SubscribeBindingRequest(app_id=self.app_id), SubscribeBindingReply
        )
        self._pull = await self.nc.jetstream().pull_subscribe_bind(durable=self.plan.consumer, stream=self.plan.stream)
        self._runner = asyncio.create_task(self._run())
        log.info("reading input binding", extra={"binding": self.binding, "app_id": self.app_id})
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        with contextlib.suppress(Exception):
            await self._pull.unsubscribe()

    async def _run(self) -> None:
        while True:
            if self.gate is not None:
                await self.gate.wait()
            try:
                msgs = await self._pull.fetch(batch=self.concurrency, timeout=1.0)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a reconnect or a server restart: back off, try again
                log.warning("fetch failed: %s", exc, extra={"binding": self.binding})
                await asyncio.sleep(0.5)
                continue
            # Unacked work is finished before stopping: a cancel mid-batch leaves it to redelivery.
            await asyncio.gather(*(self._handle(msg) for msg in msgs))

    async def _handle(self, msg: Msg) -> None:
        assert self.plan is not None
        event = _event(self.binding, msg)
        try:
            async with working_on([msg], self.plan.ack_wait), asyncio.timeout(self.handler_timeout):
                accepted = await self.handler(event) is not False
        except Exception as exc:
            log.warning("input event not accepted: %s", exc or type(exc).__name__, extra={"binding": self.binding})
            accepted = False
        try:
            if accepted:
                self.delivered += 1
                await msg.ack()
            else:
                backoff = self.plan.backoff[min(event.delivery, len(self.plan.backoff)) - 1]
                await msg.nak(delay=backoff)
        except Exception as exc:  # lost ack: the server redelivers after ackWait, at least once
            log.warning("could not acknowledge input event: %s", exc, extra={"binding": self.binding})


def _event(binding: str, msg: Msg) -> BindingEvent:
    headers = msg.headers or {}
    try:
        metadata = {str(k): str(v) for k, v in json.loads(headers.get(EVENT_METADATA_HEADER) or "{}").items()}
    except (ValueError, AttributeError):
        metadata = {}
    meta = msg.metadata
    if _SCHEDULER in headers and meta.timestamp is not None:
        # A cron firing: when it fired, as Dapr's cron binding reports it.
        fired = meta.timestamp.astimezone(dt.UTC)
        metadata["readTimeUTC"] = fired.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return BindingEvent(binding, msg.data or b"", metadata, meta.num_delivered, meta.sequence.stream)
