"""The delivery engine: one consumer group's events to one handler, at least once.

Used by the Python SDK and, later, by the app channel that delivers to HTTP apps, so Dapr's
SUCCESS / RETRY / DROP rules live in one place:

- SUCCESS (or a handler returning None) acks;
- RETRY, an exception or a handler that overruns its timeout redeliver after the component's
  back-off; at `maxDeliver` deliveries the event goes to the dead-letter topic;
- DROP goes to the dead-letter topic at once;
- without a dead-letter topic a given-up event is logged with its id and trace id, counted in
  `natrium_pubsub_dropped` by reason, then terminated: nothing disappears silently. A dead-letter
  publish that fails is retried later.

With a `bulk` handler the subscription delivers batches instead (Dapr's bulk subscribe): up to
`max_messages` events, gathered for at most `max_await` seconds after the first one, go to the
handler at once; it answers one status per event and each event is settled by its own status.

The consumer group's lag (`natrium_pubsub_consumer_lag`) comes free with every fetch: each
delivered message says how many are still pending behind it. An empty fetch asks the server,
at most every LAG_REFRESH seconds, so the gauge is right for an idle subscriber too.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import partial
from typing import Any

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.client import JetStreamContext
from opentelemetry import trace
from opentelemetry.util.types import AttributeValue

from kernel.client import BusClient
from kernel.cloudevents import CLOUDEVENTS_JSON, RAW_PAYLOAD_HEADER, data_of
from kernel.heartbeat import working_on
from kernel.jetstream import publish
from kernel.metrics import METRICS
from kernel.subjects import Subjects
from kernel.tracing import extract, span
from schemas.pubsub import SubscribeReply, SubscribeRequest

__all__ = ["BulkHandler", "Drop", "Event", "Handler", "Retry", "Status", "Subscription"]

log = logging.getLogger("natrium.delivery")
LAG_REFRESH = 5.0
"""Seconds between consumer-info requests for the lag gauge while fetches come back empty."""


class Status(StrEnum):
    """A handler's answer, as Dapr apps give it."""

    SUCCESS = "SUCCESS"
    RETRY = "RETRY"
    DROP = "DROP"


class Retry(Exception):
    """Raise in a handler to have the event redelivered later."""


class Drop(Exception):
    """Raise in a handler to send the event to the dead-letter topic (or drop it, logged)."""


@dataclass(frozen=True)
class Event:
    """One delivered event: the CloudEvent envelope and its decoded payload."""

    id: str
    topic: str
    pubsub: str
    envelope: dict[str, Any]
    data: Any
    raw: bytes
    delivery: int
    """1 on the first delivery, 2 on the first redelivery, ..."""

    @property
    def content_type(self) -> str:
        return str(self.envelope.get("datacontenttype", "text/plain"))


Handler = Callable[[Event], Awaitable[Status | str | None]]
BulkHandler = Callable[[list[Event]], Awaitable[list[Status]]]
"""Handles a batch: one status per event, in the batch's order."""


@dataclass
class Subscription:
    """Consumes one (pubsub, topic) as the consumer group `app_id`; `start()` then `stop()`."""

    nc: Client
    pubsub: str
    topic: str
    app_id: str
    handler: Handler
    subjects: Subjects = field(default_factory=Subjects)
    dead_letter_topic: str | None = None
    concurrency: int = 32
    """Events handled at once by this subscriber."""
    handler_timeout: float = 60.0
    """A handler that takes longer counts as RETRY."""
    bulk: BulkHandler | None = None
    """When set, events go to this handler in batches (and `handler` is not called)."""
    max_messages: int = 100
    """Bulk: the most events in one batch."""
    max_await: float = 1.0
    """Bulk: how long a batch may wait for more events after its first one, in seconds."""
    gate: asyncio.Event | None = None
    """When given, events are pulled only while it is set (the app's health, `natrium run`)."""

    def __post_init__(self) -> None:
        self._slots = asyncio.Semaphore(self.concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.plan: SubscribeReply | None = None
        self.delivered = 0
        self._metrics = METRICS.for_subscription(self.pubsub, self.topic, self.app_id)
        self._lag_asked = -LAG_REFRESH

    async def start(self) -> Subscription:
        """Join the group (creating its durable consumer through the pubsub service) and start pulling."""
        request = SubscribeRequest(topic=self.topic, app_id=self.app_id, dead_letter_topic=self.dead_letter_topic)
        subject = self.subjects.block("pubsub", self.pubsub, "subscribe")
        self.plan = await BusClient(self.nc).request(subject, request, SubscribeReply)
        js: JetStreamContext = self.nc.jetstream()
        self._pull = await js.pull_subscribe_bind(durable=self.plan.consumer, stream=self.plan.stream)
        self._runner = asyncio.create_task(self._run() if self.bulk is None else self._run_bulk())
        log.info("subscribed", extra={"pubsub": self.pubsub, "topic": self.topic, "group": self.app_id})
        return self

    async def stop(self, drain_timeout: float = 10.0) -> None:
        """Stop pulling, let handlers in flight finish (their events are acked or redelivered)."""
        self._stopping.set()
        if self._runner:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=drain_timeout)
        with contextlib.suppress(Exception):
            await self._pull.unsubscribe()

    async def _run(self) -> None:
        while not self._stopping.is_set():
            if self.gate is not None:
                await self.gate.wait()
            await self._slots.acquire()  # pull only what we can handle now
            free = 1
            while free < 64 and not self._slots.locked():
                await self._slots.acquire()
                free += 1
            try:
                msgs = await self._pull.fetch(batch=free, timeout=1.0)
            except (TimeoutError, nats.errors.TimeoutError):
                msgs = []
            except Exception as exc:  # a reconnect or a server restart: back off, try again
                log.warning("fetch failed: %s", exc, extra={"pubsub": self.pubsub, "topic": self.topic})
                msgs = []
                await asyncio.sleep(0.5)
            for _ in range(free - len(msgs)):
                self._slots.release()
            if msgs:
                self._metrics.lag.set(msgs[-1].metadata.num_pending)
            else:
                await self._idle_lag()
            for msg in msgs:
                task = asyncio.create_task(self._handle_safely(msg))
                self._tasks.add(task)
                task.add_done_callback(self._done)

    async def _run_bulk(self) -> None:
        """One slot per batch in flight: a batch is gathered, then handled while the next gathers."""
        while not self._stopping.is_set():
            if self.gate is not None:
                await self.gate.wait()
            await self._slots.acquire()
            msgs = await self._gather()
            if not msgs:
                self._slots.release()
                await self._idle_lag()
                continue
            self._metrics.lag.set(msgs[-1].metadata.num_pending)
            task = asyncio.create_task(self._handle_batch_safely(msgs))
            self._tasks.add(task)
            task.add_done_callback(self._done)

    async def _gather(self) -> list[Msg]:
        """Up to `max_messages` events: what the first fetch brings, topped up until `max_await` ends."""
        try:
            msgs = await self._pull.fetch(batch=self.max_messages, timeout=1.0)
        except (TimeoutError, nats.errors.TimeoutError):
            return []
        except Exception as exc:  # a reconnect or a server restart: back off, try again
            log.warning("fetch failed: %s", exc, extra={"pubsub": self.pubsub, "topic": self.topic})
            await asyncio.sleep(0.5)
            return []
        deadline = time.monotonic() + self.max_await
        while len(msgs) < self.max_messages and not self._stopping.is_set():
            left = deadline - time.monotonic()
            if left < 0.01:
                break
            try:
                msgs += await self._pull.fetch(batch=self.max_messages - len(msgs), timeout=left)
            except Exception:  # nothing more in time (or a hiccup): deliver what we have
                break
        return msgs

    async def _idle_lag(self) -> None:
        """The lag from the server when no fetch brings it: what an idle group still has pending
        (0 unless the group is stuck at maxAckPending)."""
        if time.monotonic() - self._lag_asked < LAG_REFRESH:
            return
        self._lag_asked = time.monotonic()
        try:
            info = await self._pull.consumer_info()
        except Exception as exc:  # the next empty fetch tries again
            log.debug("consumer info failed: %s", exc, extra={"pubsub": self.pubsub, "topic": self.topic})
            return
        self._metrics.lag.set(info.num_pending or 0)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()

    async def _handle_safely(self, msg: Msg) -> None:
        try:
            await self._handle(msg)
        except Exception:  # left unacked: the server redelivers it after ackWait
            log.exception("delivery failed", extra={"pubsub": self.pubsub, "topic": self.topic})

    async def _handle(self, msg: Msg) -> None:
        event = await self._decoded(msg)
        if event is None:
            return
        # A child of the publisher's span: the event carries its context across the stream.
        parent = extract(_trace_carrier(msg, event))
        attributes = partial(self._attributes, msg, event)
        with span(f"deliver {self.topic}", parent, trace.SpanKind.CONSUMER, attributes) as active:
            if not await self._deliverable(msg, event):
                return
            assert self.plan is not None
            async with working_on([msg], self.plan.ack_wait):
                status, why = await self._call(event)
            if active.is_recording():
                active.set_attribute("natrium.delivery_status", status.value)
                if status is not Status.SUCCESS:
                    active.set_status(trace.Status(trace.StatusCode.ERROR, status.value))
            await self._settle(msg, event, status, why)

    async def _handle_batch_safely(self, msgs: list[Msg]) -> None:
        try:
            await self._handle_batch(msgs)
        except Exception:  # left unacked: the server redelivers them after ackWait
            log.exception("bulk delivery failed", extra={"pubsub": self.pubsub, "topic": self.topic})

    async def _handle_batch(self, msgs: list[Msg]) -> None:
        """Each event settled by its own status; those given up before delivery never reach the handler."""
        assert self.bulk is not None
        ready: list[tuple[Msg, Event]] = []
        for msg in msgs:
            event = await self._decoded(msg)
            if event is not None and await self._deliverable(msg, event):
                ready.append((msg, event))
        if not ready:
            return
        events = [event for _, event in ready]
        # One span for the batch, a child of its first event's publisher.
        parent = extract(_trace_carrier(ready[0][0], events[0]))
        attributes = partial(self._attributes, ready[0][0], events[0])
        with span(f"deliver-bulk {self.topic}", parent, trace.SpanKind.CONSUMER, attributes) as active:
            assert self.plan is not None
            async with working_on([msg for msg, _ in ready], self.plan.ack_wait):
                statuses = await self._call_bulk(events)
            if active.is_recording():
                active.set_attribute("messaging.batch.message_count", len(events))
        for (msg, event), status in zip(ready, statuses, strict=True):
            why = "dropped by the subscriber (bulk)" if status is Status.DROP else ""
            await self._settle(msg, event, status, why)

    async def _call_bulk(self, events: list[Event]) -> list[Status]:
        """The bulk handler's statuses; a failure, a timeout or a short answer retries what it leaves out."""
        assert self.bulk is not None
        try:
            async with asyncio.timeout(self.handler_timeout):
                statuses = list(await self.bulk(events))
        except TimeoutError:
            log.warning("bulk handler timed out", extra={"topic": self.topic, "events": len(events)})
            return [Status.RETRY] * len(events)
        except Exception:
            log.exception("bulk handler failed", extra={"topic": self.topic, "events": len(events)})
            return [Status.RETRY] * len(events)
        statuses += [Status.RETRY] * (len(events) - len(statuses))
        return statuses[: len(events)]

    async def _decoded(self, msg: Msg) -> Event | None:
        """The event, or None when it cannot be read (then it is given up)."""
        delivery = msg.metadata.num_delivered
        if delivery > 1:
            self._metrics.redelivered.inc()
        try:
            return _decode(msg, self.pubsub, self.topic, delivery)
        except ValueError as exc:
            await self._give_up(msg, None, "undecodable", f"undecodable event: {exc}")
            return None

    async def _deliverable(self, msg: Msg, event: Event) -> bool:
        """False (and the event given up) when it expired or ran out of deliveries."""
        assert self.plan is not None
        if _expired(event):
            await self._give_up(msg, event, "expired", "expired before delivery (ttlInSeconds)")
            return False
        if event.delivery > self.plan.max_deliver:
            why = f"not acknowledged after {event.delivery - 1} deliveries"
            await self._give_up(msg, event, "max_deliveries", why)
            return False
        return True

    async def _settle(self, msg: Msg, event: Event, status: Status, why: str) -> None:
        """Ack, dead-letter or redeliver after back-off, as the handler's status says."""
        assert self.plan is not None
        delivery = event.delivery
        self.delivered += 1
        self._metrics.delivered[status].inc()
        if status is Status.SUCCESS:
            await _quietly(msg.ack())
        elif status is Status.DROP:
            await self._give_up(msg, event, "drop", why or "dropped by the subscriber")
        elif delivery >= self.plan.max_deliver:
            why = f"still RETRY after {delivery} deliveries (maxDeliver)"
            await self._give_up(msg, event, "max_deliveries", why)
        else:
            backoff = self.plan.backoff[min(delivery, len(self.plan.backoff)) - 1]
            await _quietly(msg.nak(delay=backoff))

    def _attributes(self, msg: Msg, event: Event) -> dict[str, AttributeValue]:
        return {
            "messaging.system": "nats",
            "messaging.destination.name": msg.subject,
            "messaging.operation": "process",
            "messaging.message.id": event.id,
            "messaging.consumer.group.name": self.app_id,
            "natrium.block": "pubsub",
            "natrium.component": self.pubsub,
            "natrium.topic": self.topic,
            "natrium.app_id": self.app_id,
            "natrium.delivery": event.delivery,
        }

    async def _call(self, event: Event) -> tuple[Status, str]:
        """The handler's status, and for DROP the reason it gave."""
        try:
            # asyncio.timeout, not wait_for: wait_for makes a task per event on Python 3.11.
            async with asyncio.timeout(self.handler_timeout):
                answer = await self.handler(event)
        except Drop as exc:
            return Status.DROP, str(exc)
        except Retry:
            return Status.RETRY, ""
        except TimeoutError:
            log.warning("handler timed out", extra={"event_id": event.id, "topic": self.topic})
            return Status.RETRY, ""
        except Exception:
            log.exception("handler failed", extra={"event_id": event.id, "topic": self.topic})
            return Status.RETRY, ""
        if answer is None:
            return Status.SUCCESS, ""
        try:
            return Status(answer), ""
        except ValueError:  # Dapr: any other value means RETRY
            log.warning("unknown handler status %r: RETRY", answer, extra={"event_id": event.id})
            return Status.RETRY, ""

    async def _give_up(self, msg: Msg, event: Event | None, kind: str, reason: str) -> None:
        """Dead-letter the event, or log, count and terminate it; a failed dead-letter publish retries later.

        `kind` is one of kernel.metrics.DROP_REASONS, `reason` the sentence for the log and the dead letter.
        """
        assert self.plan is not None
        event_id = event.id if event else f"seq {msg.metadata.sequence.stream}"
        if self.plan.dead_letter_subject is None:
            log.error(
                "event given up, no dead-letter topic: %s",
                reason,
                extra={"event_id": event_id, "pubsub": self.pubsub, "topic": self.topic, "group": self.app_id},
            )
            self._metrics.dropped[kind].inc()
            await _quietly(msg.term())
            return
        body, headers = _dead_letter(msg, event, reason, self.dead_letter_topic or "")
        try:
            await publish(self.nc, self.plan.dead_letter_subject, body, headers)
        except Exception as exc:
            log.warning("dead-letter publish failed, will retry: %s", exc, extra={"event_id": event_id})
            await _quietly(msg.nak(delay=self.plan.backoff[0]))
            return
        log.info("event dead-lettered: %s", reason, extra={"event_id": event_id, "topic": self.topic})
        self._metrics.deadlettered.inc()
        await _quietly(msg.ack())


def _decode(msg: Msg, pubsub: str, topic: str, delivery: int) -> Event:
    headers = msg.headers or {}
    if headers.get(RAW_PAYLOAD_HEADER) == "true":
        event_id = headers.get("Nats-Msg-Id", f"{msg.metadata.sequence.stream}")
        envelope = {
            "id": event_id,
            "specversion": "1.0",
            "type": "com.dapr.event.sent",
            "source": "natrium",
            "topic": topic,
            "pubsubname": pubsub,
            "datacontenttype": "application/octet-stream",
            "data_base64": base64.b64encode(msg.data).decode(),
        }
        return Event(event_id, topic, pubsub, envelope, msg.data, msg.data, delivery)
    try:
        envelope = json.loads(msg.data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(envelope, dict) or "id" not in envelope:
        raise ValueError("not a CloudEvent object")
    return Event(str(envelope["id"]), topic, pubsub, envelope, data_of(envelope), msg.data, delivery)


def _trace_carrier(msg: Msg, event: Event) -> Mapping[str, str]:
    """The publisher's trace context: the CloudEvent's, else (raw payloads) the stream message's headers."""
    envelope = event.envelope
    if isinstance(envelope.get("traceparent"), str):
        return {k: envelope[k] for k in ("traceparent", "tracestate") if isinstance(envelope.get(k), str)}
    return msg.headers or {}


def _expired(event: Event) -> bool:
    expiration = event.envelope.get("expiration")
    if not isinstance(expiration, str):
        return False
    try:
        moment = dt.datetime.fromisoformat(expiration.replace("Z", "+00:00"))
    except ValueError:
        return False
    return moment < dt.datetime.now(dt.UTC)


def _dead_letter(msg: Msg, event: Event | None, reason: str, topic: str) -> tuple[bytes, dict[str, str]]:
    """The original envelope, with the reason and where it came from, for the dead-letter topic."""
    seq = msg.metadata.sequence.stream
    # One id per original message: a retried dead-letter publish is stored once.
    headers = {"Nats-Msg-Id": f"deadletter-{msg.metadata.stream}-{seq}", "Content-Type": CLOUDEVENTS_JSON}
    if event is None:
        envelope: dict[str, Any] = {
            "id": f"{msg.metadata.stream}-{seq}",
            "specversion": "1.0",
            "type": "com.dapr.event.sent",
            "source": "natrium",
            "datacontenttype": "application/octet-stream",
            "data_base64": base64.b64encode(msg.data).decode(),
        }
    else:
        envelope = dict(event.envelope)
    envelope.update({"deadletterreason": reason, "deadletteroriginaltopic": envelope.get("topic", ""), "topic": topic})
    return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode(), headers


async def _quietly(ack: Awaitable[None]) -> None:
    """Ack/nak/term are fire-and-forget: if one is lost the server redelivers, which is at-least-once."""
    try:
        await ack
    except Exception as exc:
        log.warning("could not acknowledge: %s", exc)
