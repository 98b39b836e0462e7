"""The relay: everything that follows from a history event, driven by the history stream itself.

A durable consumer reads every appended event and does what it implies, then acks: new events
wake the workers of the instance's workflow, `taskScheduled` becomes an activity work item, `timerCreated` a
message schedule, `subOrchestrationInstanceCreated` a child instance, `executionCompleted` a
metadata update and a report to the parent. Every one of these writes is deduplicated
(`Nats-Msg-Id`) or idempotent, so a relay that dies mid-way is simply redelivered: the history
is the outbox, and no step can commit without its consequences following.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.msg import Msg

from kernel.errors import Codes, NatriumError
from kernel.jetstream import publish
from kernel.pull import PullConsumer
from kernel.subjects import decode_token
from schemas.workflow import (
    ACTIVITIES,
    NEW_EVENT_TYPES,
    ORCHESTRATIONS,
    EventType,
    InstanceState,
    RuntimeStatus,
    WorkflowLayout,
    new_event,
    parse_time,
    utc_now,
)
from services.workflow.engine import WorkflowEngine
from services.workflow.history import MSG_ID, decode_events

__all__ = ["Relay"]

log = logging.getLogger("natrium.workflow.relay")

# Timers this far out never fire; the Dapr SDK's indefinite waits create them at 9999-12-31.
_NEVER_YEAR = 9999
_KNOWN_NAMES = 65_536

_METADATA_EVENTS = frozenset(
    {
        EventType.EXECUTION_STARTED,
        EventType.ORCHESTRATOR_COMPLETED,
        EventType.EXECUTION_COMPLETED,
        EventType.EXECUTION_SUSPENDED,
        EventType.EXECUTION_RESUMED,
    }
)


class Relay:
    """Consumes the history and fired timers of one workflow component."""

    def __init__(self, engine: WorkflowEngine, *, max_inflight: int = 256) -> None:
        self.engine = engine
        self.max_inflight = max_inflight
        # Short timers also fire from memory, on time; the schedule stays the durable copy and
        # the two are deduplicated by their Nats-Msg-Id.
        self.fast_timer_window = engine.settings.memory_timer_window
        self._locks: dict[str, asyncio.Lock] = {}
        self._timers: set[asyncio.Task[None]] = set()
        self._consumers: list[PullConsumer] = []
        # instance id -> workflow name, for the wake-ups' subjects (routed per workflow name).
        self._names: dict[str, str] = {}

    async def start(self) -> None:
        layout = self.engine.layout
        nc = self.engine.nc
        self._consumers = [
            PullConsumer(
                nc,
                layout.history_stream,
                WorkflowLayout.RELAY_CONSUMER,
                self._on_history,
                max_inflight=self.max_inflight,
            ),
            PullConsumer(nc, layout.timer_stream, WorkflowLayout.TIMER_CONSUMER, self._on_timer, max_inflight=64),
        ]
        for consumer in self._consumers:
            await consumer.start()

    async def stop(self) -> None:
        for consumer in self._consumers:
            await consumer.stop()
        for task in list(self._timers):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- history ----------------------------------------------------------------------------------

    async def _on_history(self, msg: Msg) -> None:
        instance_id = decode_token(msg.subject.rsplit(".", 1)[1])
        event: dict[str, Any] = {}
        try:
            for event in decode_events(msg.data, msg.metadata.sequence.stream):
                await self._dispatch(instance_id, event)
        except Exception as exc:
            log.warning(
                "relay failed, will retry: %s", exc, extra={"instance": instance_id, "event": event.get("type")}
            )
            await msg.nak(delay=1.0)
            return
        await msg.ack()

    async def _dispatch(self, instance_id: str, event: dict[str, Any]) -> None:
        engine = self.engine
        kind = event["type"]
        if kind in _METADATA_EVENTS:
            # Metadata changes of one instance are applied in history order.
            async with self._lock(instance_id):
                state, _ = await engine.apply(instance_id, event)
                if kind == EventType.EXECUTION_COMPLETED and state is not None:
                    await self.report_to_parent(state, event)
        elif kind == EventType.TASK_SCHEDULED:
            await self.dispatch_activity(instance_id, event)
        elif kind == EventType.TIMER_CREATED:
            await self.schedule_timer(instance_id, event)
            self._fire_soon(instance_id, event)
        elif kind == EventType.SUB_ORCHESTRATION_CREATED:
            await engine.start_child(instance_id, event)
        elif kind == EventType.EVENT_SENT:
            await _ignore_gone(engine.raise_event(str(event["instanceId"]), str(event["name"]), event.get("input")))
        elif kind == EventType.TERMINATE_SENT:
            target = str(event["instanceId"])
            await _ignore_gone(engine.terminate(target, event.get("input"), bool(event.get("recurse", True))))
        if kind == EventType.EXECUTION_STARTED and event.get("name"):
            self._remember(instance_id, str(event["name"]))
        if kind == EventType.EXECUTION_STARTED and event.get("scheduledStartTimestamp"):
            await self.schedule_start(instance_id, event)
        elif kind in NEW_EVENT_TYPES:
            await self.wake(instance_id, int(event["seq"]))

    # -- consequences ---------------------------------------------------------------------------

    async def report_to_parent(self, state: InstanceState, event: dict[str, Any]) -> None:
        if not state.parent_instance_id or state.parent_task_id is None:
            return
        status = event.get("orchestrationStatus")
        parent_execution = state.parent_execution_id
        if status == RuntimeStatus.COMPLETED.value:
            report = new_event(
                EventType.SUB_ORCHESTRATION_COMPLETED,
                taskScheduledId=state.parent_task_id,
                result=event.get("result"),
                executionId=parent_execution,
            )
        else:
            details = event.get("failureDetails") or {
                "errorType": status or "Terminated",
                "errorMessage": f"child workflow {state.instance_id} ended {status}",
            }
            report = new_event(
                EventType.SUB_ORCHESTRATION_FAILED,
                taskScheduledId=state.parent_task_id,
                failureDetails=details,
                executionId=parent_execution,
            )
        msg_id = f"{state.parent_instance_id}/{parent_execution}/sub/{state.parent_task_id}"
        await self.engine.history.append(state.parent_instance_id, report, msg_id)

    async def schedule_timer(self, instance_id: str, event: dict[str, Any]) -> None:
        """A durable timer: a message schedule that fires a copy at `fireAt`."""
        execution_id = str(event.get("executionId", ""))
        timer_id = int(event["eventId"])
        fire_at = parse_time(str(event["fireAt"]))
        if fire_at.year >= _NEVER_YEAR:
            return  # Durable Task's "never" (a wait without timeout keeps such a timer): nothing to fire
        body = {"instanceId": instance_id, "executionId": execution_id, "timerId": timer_id, "fireAt": event["fireAt"]}
        subject = self.engine.layout.timer_schedule(instance_id, execution_id, timer_id)
        await self._schedule(subject, fire_at, body, f"t/{instance_id}/{execution_id}/{timer_id}")

    async def schedule_start(self, instance_id: str, event: dict[str, Any]) -> None:
        """A start for later: the workers are woken at `scheduledStartTimestamp`, durably, and in
        memory too when it is near; they ignore earlier wake-ups (`start_due_at`)."""
        seq = int(event["seq"])
        due = parse_time(str(event["scheduledStartTimestamp"]))
        delay = (due - utc_now()).total_seconds()
        if delay <= 0:
            await self.wake(instance_id, seq)
            return
        execution_id = str(event.get("executionId", ""))
        body = {"instanceId": instance_id, "startSeq": seq}
        subject = self.engine.layout.start_schedule(instance_id, execution_id)
        await self._schedule(subject, due, body, f"s/{instance_id}/{execution_id}")
        # A hair late rather than early: a wake-up before the start is ignored.
        self._in_memory(delay + 0.01, lambda: self.wake(instance_id, seq))

    async def _schedule(self, subject: str, due: dt.datetime, body: dict[str, Any], msg_id: str) -> None:
        """A message schedule that sends `body` to the instance's timer subject at `due`."""
        instance_id = str(body["instanceId"])
        # Schedules take whole seconds: round up, never fire early.
        at = due.replace(microsecond=0)
        if at < due:
            at += dt.timedelta(seconds=1)
        headers = {
            "Nats-Schedule": f"@at {at.strftime('%Y-%m-%dT%H:%M:%SZ')}",
            "Nats-Schedule-Target": self.engine.layout.timer_fired(instance_id),
            MSG_ID: msg_id,
        }
        await publish(self.engine.nc, subject, _json(body), headers)

    async def fire_timer(self, body: dict[str, Any]) -> None:
        instance_id = str(body["instanceId"])
        execution_id = str(body.get("executionId", ""))
        timer_id = int(body["timerId"])
        fired = new_event(EventType.TIMER_FIRED, timerId=timer_id, fireAt=body.get("fireAt"), executionId=execution_id)
        await self.engine.history.append(instance_id, fired, f"{instance_id}/{execution_id}/timer/{timer_id}")

    async def wake(self, instance_id: str, seq: int) -> None:
        """Tell the workers of the instance's workflow that it has a new event (deduplicated per event)."""
        name = await self._workflow_name(instance_id)
        if name is None:
            return  # purged meanwhile: nothing left to run
        await self.engine.ensure_work_consumer(ORCHESTRATIONS, name)
        headers = {MSG_ID: f"w/{seq}"}
        await publish(
            self.engine.nc, self.engine.layout.orchestration(name), _json({"instanceId": instance_id}), headers
        )

    async def _workflow_name(self, instance_id: str) -> str | None:
        name = self._names.get(instance_id)
        if name is not None:
            return name
        state = await self.engine.metadata.get(instance_id)
        if state is not None and state.name:
            name = state.name
        else:
            events = await self.engine.history.read(instance_id)
            name = str(events[0].get("name") or "") if events else ""
        if not name:
            return None
        self._remember(instance_id, name)
        return name

    def _remember(self, instance_id: str, name: str) -> None:
        # A stale entry (an id reused for another workflow, seen by another relay replica) only
        # misroutes a wake-up, and the worker that gets it forwards it (adapters/sdk/workflow).
        if len(self._names) >= _KNOWN_NAMES and instance_id not in self._names:
            self._names.pop(next(iter(self._names)))
        self._names[instance_id] = name

    async def dispatch_activity(self, instance_id: str, event: dict[str, Any]) -> None:
        execution_id = str(event.get("executionId", ""))
        task_id = int(event["eventId"])
        body = {
            "instanceId": instance_id,
            "executionId": execution_id,
            "taskId": task_id,
            "name": event["name"],
            "input": event.get("input"),
        }
        await self.engine.ensure_work_consumer(ACTIVITIES, str(event["name"]))
        headers = {MSG_ID: f"a/{instance_id}/{execution_id}/{task_id}"}
        await publish(self.engine.nc, self.engine.layout.activity(str(event["name"])), _json(body), headers)

    def _lock(self, instance_id: str) -> _InstanceLock:
        return _InstanceLock(self._locks, instance_id)

    # -- timers -----------------------------------------------------------------------------------

    def _fire_soon(self, instance_id: str, event: dict[str, Any]) -> None:
        delay = (parse_time(str(event["fireAt"])) - utc_now()).total_seconds()
        body = {
            "instanceId": instance_id,
            "executionId": event.get("executionId", ""),
            "timerId": event["eventId"],
            "fireAt": event["fireAt"],
        }
        self._in_memory(delay, lambda: self.fire_timer(body))

    def _in_memory(self, delay: float, action: Callable[[], Awaitable[None]]) -> None:
        """Do `action` after `delay` in this process when that is sooner than the fast window:
        schedules fire on whole seconds. The durable schedule does it anyway; both are deduplicated."""
        if delay >= self.fast_timer_window:
            return

        async def fire() -> None:
            await asyncio.sleep(max(0.0, delay))
            try:
                await action()
            except Exception as exc:  # the durable schedule fires it anyway
                log.debug("in-memory timer failed: %s", exc)

        task = asyncio.create_task(fire())
        self._timers.add(task)
        task.add_done_callback(self._timers.discard)

    async def _on_timer(self, msg: Msg) -> None:
        try:
            body = json.loads(msg.data)
            if "startSeq" in body:
                await self.wake(str(body["instanceId"]), int(body["startSeq"]))
            else:
                await self.fire_timer(body)
        except Exception as exc:
            log.warning("timer not delivered, will retry: %s", exc)
            await msg.nak(delay=1.0)
            return
        await msg.ack()


class _InstanceLock:
    """A per-instance asyncio lock, dropped from the table when nobody holds or waits for it."""

    def __init__(self, table: dict[str, asyncio.Lock], key: str) -> None:
        self.table = table
        self.key = key

    async def __aenter__(self) -> None:
        lock = self.table.setdefault(self.key, asyncio.Lock())
        await lock.acquire()

    async def __aexit__(self, *exc: object) -> None:
        lock = self.table[self.key]
        lock.release()
        if not lock.locked() and not getattr(lock, "_waiters", None):
            self.table.pop(self.key, None)


async def _ignore_gone(call: Any) -> None:
    try:
        await call
    except NatriumError as exc:
        if exc.code != Codes.INSTANCE_ID_NOT_FOUND:
            raise


def _json(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()
