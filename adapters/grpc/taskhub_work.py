"""Durable Task work items for gRPC workers, taken from the workflow component's work queue.

Work items are routed by workflow and activity name, one durable consumer per name. The
protocol does not tell which names a gRPC worker registered, so each open `GetWorkItems` stream
pulls from every name's consumer (found by listing the work stream's consumers and by their
creation advisories): gRPC workers of a component take all of its work, as Dapr sends an
app-id's work to any of its replicas, while bus-native `WorkflowRuntime` workers pull only the
names they registered. A stream turns a work item into a
`WorkItem` (an orchestration's history split into past and new events, or an activity call),
waits for the worker's completion, and only then acks the JetStream message; a stream that ends
gives its items back at once, so a restarted worker picks them up without waiting out the ack wait.

The completion token carries what the bus completion needs (instance, execution, the history
sequence the step replayed), so a completion is applied even when it arrives on another stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from typing import Any

from nats.aio.msg import Msg

from adapters.gateway.context import Gateway
from adapters.grpc.taskhub_codec import pb, replay_events, string_value, timestamp
from adapters.sdk.workflow.histories import HistoryCache
from kernel.errors import Codes, NatriumError
from kernel.pull import PullConsumer
from schemas.workflow import (
    ORCHESTRATIONS,
    EventType,
    RuntimeStatus,
    WorkflowLayout,
    format_time,
    split_history,
    start_due_at,
    utc_now,
)

__all__ = ["StreamClosed", "TaskHub", "Token", "WorkerStream"]

log = logging.getLogger("natrium.grpc.taskhub")

_STEP_ATTEMPTS = 8
_DEFAULT_ACK_WAIT = 30.0
_REDISCOVER = 2.0
_PAGE = 256


class StreamClosed(Exception):
    """The worker's stream ended before it completed the item."""


@dataclass(frozen=True)
class Token:
    """A work item's completion token: which stream and item, and what the bus completion needs."""

    s: str
    """stream key"""
    n: int
    """item number on that stream"""
    i: str
    """instance id"""
    e: str
    """execution id"""
    q: int = 0
    """orchestration: the history sequence the step replayed"""
    t: str = ""
    """orchestration: the step's start time (its `current_utc_datetime`)"""
    k: int = -1
    """activity: the task id"""

    def encode(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def decode(cls, text: str) -> Token:
        try:
            return cls(**json.loads(text))
        except (ValueError, TypeError):
            raise NatriumError(Codes.BAD_REQUEST, "completionToken is not one natrium issued", status=400) from None


class TaskHub:
    """What every gRPC worker stream of one server shares: the bus, the layout, histories, streams."""

    def __init__(self, gateway: Gateway, component: str = "dapr") -> None:
        self.gateway = gateway
        self.component = component
        self.layout = WorkflowLayout(gateway.subjects, component)
        self.histories = HistoryCache(gateway.nc, self.layout)
        self.streams: dict[str, WorkerStream] = {}
        self._numbers = itertools.count(1)
        self._locks: dict[str, asyncio.Lock] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def subject(self, operation: str) -> str:
        return self.gateway.subjects.block("workflow", self.component, operation)

    def next_number(self) -> int:
        return next(self._numbers)

    async def open_stream(self) -> WorkerStream:
        stream = WorkerStream(self, f"{id(self):x}.{self.next_number()}")
        await stream.start()
        self.streams[stream.key] = stream
        return stream

    def release(self, stream: WorkerStream) -> None:
        """Close a stream in the background (its RPC is being cancelled)."""
        self.streams.pop(stream.key, None)
        task = asyncio.create_task(stream.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def resolve(self, token: Token, outcome: Any) -> None:
        stream = self.streams.get(token.s)
        if stream is not None:
            stream.resolve(token.n, outcome)

    @contextlib.asynccontextmanager
    async def lock(self, instance_id: str) -> AsyncIterator[None]:
        """One step per instance at a time in this process: wake-ups queued behind it find it done."""
        lock = self._locks.setdefault(instance_id, asyncio.Lock())
        try:
            async with lock:
                yield
        finally:
            if not lock.locked() and not getattr(lock, "_waiters", None):
                self._locks.pop(instance_id, None)


class WorkerStream:
    """The work items of one `GetWorkItems` call: pulled here, handed to the worker via `items`."""

    def __init__(self, hub: TaskHub, key: str, max_inflight: int = 64) -> None:
        self.hub = hub
        self.key = key
        self.items: asyncio.Queue[Any] = asyncio.Queue()
        self.closed = False
        self._heartbeat = _DEFAULT_ACK_WAIT / 3
        self._waiters: dict[int, asyncio.Future[Any]] = {}
        self._max_inflight = max_inflight
        self._consumers: dict[str, PullConsumer] = {}
        self._advisories: Any = None
        self._watcher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        nc, stream = self.hub.gateway.nc, self.hub.layout.work_stream
        try:
            info = await nc.jetstream().stream_info(stream)
            ack_wait = float((info.config.metadata or {}).get(WorkflowLayout.ACK_WAIT_METADATA) or _DEFAULT_ACK_WAIT)
        except Exception:  # the workflow service is not up yet: discovery retries until it is
            ack_wait = _DEFAULT_ACK_WAIT
        self._heartbeat = max(0.2, ack_wait / 3)
        # The protocol does not say what the worker registered: it takes every name's work. A
        # name's consumer appears when its first item is routed (or a worker registers it).
        self._advisories = await nc.subscribe(f"$JS.EVENT.ADVISORY.CONSUMER.CREATED.{stream}.*", cb=self._on_created)
        await self._discover()
        self._watcher = asyncio.create_task(self._rediscover())

    async def close(self) -> None:
        self.closed = True
        for future in self._waiters.values():
            if not future.done():
                future.set_exception(StreamClosed())
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        if self._advisories is not None:
            with contextlib.suppress(Exception):
                await self._advisories.unsubscribe()
        consumers = list(self._consumers.values())
        await asyncio.gather(*(c.stop(drain_timeout=2.0, release=True) for c in consumers))

    async def _on_created(self, msg: Msg) -> None:
        await self._consume(msg.subject.rsplit(".", 1)[1])

    async def _rediscover(self) -> None:
        # Advisories are fire-and-forget: a periodic listing catches what one missed.
        while True:
            await asyncio.sleep(_REDISCOVER)
            with contextlib.suppress(Exception):
                await self._discover()

    async def _discover(self) -> None:
        js = self.hub.gateway.nc.jetstream()
        offset = 0
        while True:
            try:
                page = await js.consumers_info(self.hub.layout.work_stream, offset)
            except Exception:
                return  # no stream yet
            for info in page:
                await self._consume(str(info.name))
            if len(page) < _PAGE:
                return
            offset += len(page)

    async def _consume(self, name: str) -> None:
        kind = WorkflowLayout.work_kind(name)
        if kind is None or name in self._consumers or self.closed:
            return
        handler = self._on_orchestration if kind == ORCHESTRATIONS else self._on_activity
        consumer = PullConsumer(
            self.hub.gateway.nc, self.hub.layout.work_stream, name, handler, max_inflight=self._max_inflight
        )
        self._consumers[name] = consumer
        await consumer.start()

    def resolve(self, number: int, outcome: Any) -> None:
        future = self._waiters.get(number)
        if future is not None and not future.done():
            future.set_result(outcome)

    async def _send(self, item: Any, number: int, msg: Msg) -> Any:
        """Hand `item` to the worker; its completion's outcome, keeping the message ours meanwhile."""
        if self.closed:
            raise StreamClosed()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters[number] = future
        try:
            self.items.put_nowait(item)
            while True:
                try:
                    return await asyncio.wait_for(asyncio.shield(future), self._heartbeat)
                except TimeoutError:
                    with contextlib.suppress(Exception):
                        await msg.in_progress()
        finally:
            self._waiters.pop(number, None)

    # -- orchestrations ---------------------------------------------------------------------------

    async def _on_orchestration(self, msg: Msg) -> None:
        instance_id = str(json.loads(msg.data)["instanceId"])
        try:
            async with self.hub.lock(instance_id):
                done = await self._step(instance_id, msg)
        except StreamClosed:
            await _nak(msg, 0)
            return
        except Exception as exc:
            log.warning("orchestration work item failed, will retry: %s", exc, extra={"instance": instance_id})
            await _nak(msg, 0.5)
            return
        if done:
            await msg.ack()
        else:
            await _nak(msg, 0.5)

    async def _step(self, instance_id: str, msg: Msg) -> bool:
        """One step by the worker: True once the wake-up is dealt with."""
        for _ in range(_STEP_ATTEMPTS):
            events = await self.hub.histories.read(instance_id)
            if not events or events[0]["type"] != EventType.EXECUTION_STARTED or _finished(events):
                return True
            if start_due_at(events) is not None:
                return True  # started for later: the relay wakes the workers when it is due
            past, new = split_history(events)
            if not new:
                return True  # another wake-up's step took these events already
            execution_id = str(events[0].get("executionId", ""))
            started_at = format_time(utc_now())
            number = self.hub.next_number()
            token = Token(self.key, number, instance_id, execution_id, q=int(events[-1]["seq"]), t=started_at)
            started = pb.HistoryEvent(
                eventId=-1, timestamp=timestamp(started_at), workflowStarted=pb.WorkflowStartedEvent()
            )
            past_events, suspended = replay_events(past)
            new_events, _ = replay_events(new, suspended)
            request = pb.WorkflowRequest(
                instanceId=instance_id,
                executionId=string_value(execution_id),
                pastEvents=past_events,
                newEvents=[started, *new_events],
            )
            item = pb.WorkItem(workflowRequest=request, completionToken=token.encode())
            if await self._send(item, number, msg):
                return True
            # History moved on meanwhile (a new event, or another worker's step): replay again.
        return False

    # -- activities -------------------------------------------------------------------------------

    async def _on_activity(self, msg: Msg) -> None:
        work = json.loads(msg.data)
        execution_id = str(work.get("executionId", ""))
        number = self.hub.next_number()
        token = Token(self.key, number, str(work["instanceId"]), execution_id, k=int(work["taskId"]))
        request = pb.ActivityRequest(
            name=str(work["name"]),
            input=string_value(work.get("input")),
            workflowInstance=pb.WorkflowInstance(instanceId=token.i, executionId=string_value(execution_id)),
            taskId=token.k,
        )
        try:
            await self._send(pb.WorkItem(activityRequest=request, completionToken=token.encode()), number, msg)
        except StreamClosed:
            await _nak(msg, 0)
            return
        await msg.ack()


def _finished(events: list[dict[str, Any]]) -> bool:
    return any(
        e["type"] == EventType.EXECUTION_COMPLETED and e.get("orchestrationStatus") != RuntimeStatus.CONTINUED_AS_NEW
        for e in events
    )


async def _nak(msg: Msg, delay: float) -> None:
    with contextlib.suppress(Exception):
        await (msg.nak(delay=delay) if delay else msg.nak())
