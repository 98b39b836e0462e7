"""The worker: registers workflows and activities, takes their work items, hands back results.

Any number of workers (processes or machines) share one component's work: orchestration
wake-ups and activity work items are on a work-queue stream, routed by workflow or activity
name (a worker pulls only the names it registered), each taken by one worker and acked only
once its outcome is stored by the backend. A worker that dies leaves its items unacked, and
another worker gets them after the component's `workItemAckWait`.

    runtime = WorkflowRuntime(nc)

    @runtime.workflow(name="order")
    def order(ctx, order):
        total = yield ctx.call_activity(price, input=order)
        return total

    @runtime.activity
    def price(ctx, order): ...

    await runtime.start()
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.errors import NotFoundError

from adapters.sdk.workflow.context import WorkflowActivityContext, decode, encode, name_of
from adapters.sdk.workflow.executor import OrchestrationExecutor
from adapters.sdk.workflow.histories import HistoryCache
from kernel.client import BusClient
from kernel.errors import NatriumError
from kernel.jetstream import publish
from kernel.pull import PullConsumer
from kernel.subjects import Subjects
from schemas.workflow import (
    ACTIVITIES,
    ORCHESTRATIONS,
    CompleteOrchestrationReply,
    CompleteOrchestrationRequest,
    EventType,
    RuntimeStatus,
    WorkflowLayout,
    format_time,
    new_event,
    split_history,
    start_due_at,
    utc_now,
)

__all__ = ["WorkflowRuntime"]

log = logging.getLogger("natrium.workflow.worker")

F = TypeVar("F", bound=Callable[..., Any])
_STEP_ATTEMPTS = 8
_CACHED_HISTORIES = 2048


class WorkflowRuntime:
    """A workflow worker for one workflow component (Dapr's default, `dapr`, unless told)."""

    def __init__(
        self,
        nc: Client,
        *,
        component: str = "dapr",
        subjects: Subjects | None = None,
        max_concurrent_orchestrations: int = 64,
        max_concurrent_activities: int = 64,
        request_timeout: float = 10.0,
    ) -> None:
        self.nc = nc
        self.component = component
        self.subjects = subjects or Subjects.from_env()
        self.layout = WorkflowLayout(self.subjects, component)
        self.bus = BusClient(nc, timeout=request_timeout)
        self.max_concurrent_orchestrations = max_concurrent_orchestrations
        self.max_concurrent_activities = max_concurrent_activities
        self._workflows: dict[str, Callable[..., Any]] = {}
        self._activities: dict[str, Callable[..., Any]] = {}
        self._consumers: list[PullConsumer] = []
        self._cache = HistoryCache(nc, self.layout, _CACHED_HISTORIES)
        self._locks: dict[str, asyncio.Lock] = {}
        self._ack_wait = 30.0

    # -- registration (Dapr's names) --------------------------------------------------------------

    def register_workflow(self, fn: Callable[..., Any], *, name: str | None = None) -> None:
        if name:
            fn._natrium_workflow_name = name  # type: ignore[attr-defined]
        self._workflows[name_of(fn)] = fn

    def register_activity(self, fn: Callable[..., Any], *, name: str | None = None) -> None:
        if name:
            fn._natrium_workflow_name = name  # type: ignore[attr-defined]
        self._activities[name_of(fn)] = fn

    def workflow(self, fn: F | None = None, *, name: str | None = None) -> Any:
        """Decorator: `@runtime.workflow` or `@runtime.workflow(name="x")`."""

        def register(f: F) -> F:
            self.register_workflow(f, name=name)
            return f

        return register(fn) if fn is not None else register

    def activity(self, fn: F | None = None, *, name: str | None = None) -> Any:
        """Decorator: `@runtime.activity` or `@runtime.activity(name="x")`."""

        def register(f: F) -> F:
            self.register_activity(f, name=name)
            return f

        return register(fn) if fn is not None else register

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self, timeout: float = 30.0) -> None:
        """Start taking work; waits up to `timeout` for the workflow service to set the streams up.

        Each registered workflow and activity is pulled from its own durable consumer (shared by
        every worker that registered the name), so this worker receives only what it can run.
        """
        js = self.nc.jetstream()
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            try:
                info = await js.stream_info(self.layout.work_stream)
                break
            except NotFoundError:
                if asyncio.get_running_loop().time() > deadline:
                    raise NatriumError(
                        "ERR_WORKFLOW_BACKEND_NOT_READY",
                        f"workflow component {self.component!r} has no work stream: is the workflow service running?",
                    ) from None
                await asyncio.sleep(0.2)
        metadata = info.config.metadata or {}
        self._ack_wait = float(metadata.get(WorkflowLayout.ACK_WAIT_METADATA) or 30.0)
        plan = (
            (ORCHESTRATIONS, self._workflows, self._on_orchestration, self.max_concurrent_orchestrations),
            (ACTIVITIES, self._activities, self._on_activity, self.max_concurrent_activities),
        )
        for kind, registered, handler, limit in plan:
            for name in registered:
                config = self.layout.work_consumer_config(kind, name, self._ack_wait)
                await js.add_consumer(self.layout.work_stream, config)
                durable = str(config.durable_name)
                self._consumers.append(
                    PullConsumer(self.nc, self.layout.work_stream, durable, handler, max_inflight=limit)
                )
        for consumer in self._consumers:
            await consumer.start()

    async def shutdown(self) -> None:
        for consumer in self._consumers:
            await consumer.stop()
        self._consumers.clear()

    # -- orchestrations ---------------------------------------------------------------------------

    async def _on_orchestration(self, msg: Msg) -> None:
        instance_id = str(json.loads(msg.data)["instanceId"])
        # One step per instance at a time in this worker: the wake-ups that queue up behind it
        # usually find their events handled already, and are acked after one incremental read.
        lock = self._locks.setdefault(instance_id, asyncio.Lock())
        try:
            async with lock:
                outcome = await self._step(instance_id)
        finally:
            if not lock.locked() and not getattr(lock, "_waiters", None):
                self._locks.pop(instance_id, None)
        if outcome == "ack":
            await msg.ack()
        else:
            await msg.nak(delay=0.5)

    async def _step(self, instance_id: str) -> str:
        """Replay and commit one step: "ack" once the wake-up is dealt with, else "retry"."""
        for _ in range(_STEP_ATTEMPTS):
            events = await self._history(instance_id)
            if not events or events[0]["type"] != EventType.EXECUTION_STARTED:
                return "ack"  # purged, or not an instance
            if any(
                e["type"] == EventType.EXECUTION_COMPLETED
                and e.get("orchestrationStatus") != RuntimeStatus.CONTINUED_AS_NEW
                for e in events
            ):
                # Finished. Its history stays cached: the wake-ups still queued for it then cost
                # one empty incremental read each, not a full one.
                return "ack"
            if start_due_at(events) is not None:
                return "ack"  # started for later: the relay wakes the workers when it is due
            past, new = split_history(events)
            if not new:
                return "ack"  # another wake-up's step took these events already
            name = str(events[0].get("name", ""))
            orchestrator = self._workflows.get(name)
            if orchestrator is None:
                # Routed by a stale name (an instance id reused for another workflow): pass the
                # wake-up on to that workflow's workers, who wait for it if none runs yet.
                log.info("forwarding a wake-up of workflow %r", name, extra={"instance": instance_id})
                wake = json.dumps({"instanceId": instance_id}).encode()
                await publish(self.nc, self.layout.orchestration(name), wake, None)
                return "ack"
            started_at = format_time(utc_now())
            new = [new_event(EventType.ORCHESTRATOR_STARTED, timestamp=started_at), *new]
            result = OrchestrationExecutor(orchestrator, instance_id).execute(past, new)
            request = CompleteOrchestrationRequest.model_validate(
                {
                    "instanceId": instance_id,
                    "executionId": str(events[0].get("executionId", "")),
                    "expectedSeq": events[-1]["seq"],
                    "startedAt": started_at,
                    "actions": result.actions,
                    "customStatus": result.custom_status,
                }
            )
            reply = await self.bus.request(self._subject("complete_orchestration"), request, CompleteOrchestrationReply)
            if reply.committed:
                return "ack"
            # History moved on (a new event, or another worker's step): read it again.
        return "retry"

    async def _history(self, instance_id: str) -> list[dict[str, Any]]:
        """The instance's history, read incrementally on top of what this worker saw before."""
        return await self._cache.read(instance_id)

    # -- activities -------------------------------------------------------------------------------

    async def _on_activity(self, msg: Msg) -> None:
        item = json.loads(msg.data)
        name = str(item["name"])
        activity = self._activities.get(name)
        if activity is None:
            log.warning("no activity %r registered here (its consumer name collided?)", name)
            await msg.nak(delay=2.0)
            return
        ctx = WorkflowActivityContext(str(item["instanceId"]), int(item["taskId"]), name)
        heartbeat = asyncio.create_task(self._heartbeat(msg))
        try:
            body: dict[str, Any] = {
                "instanceId": item["instanceId"],
                "executionId": item.get("executionId", ""),
                "taskId": item["taskId"],
            }
            try:
                body["result"] = encode(await _call(activity, ctx, decode(item.get("input"))))
            except Exception as exc:
                body["failureDetails"] = {
                    "errorType": type(exc).__name__,
                    "errorMessage": str(exc),
                    "stackTrace": "".join(traceback.format_exception(exc)),
                }
            await self._complete_activity(body)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
        await msg.ack()

    async def _complete_activity(self, body: dict[str, Any]) -> None:
        # The result is the expensive part: keep trying through a backend restart before giving
        # the item back (which would run the activity again).
        delay = 0.1
        for attempt in range(8):
            try:
                await self.bus.request(self._subject("complete_activity"), body)
                return
            except NatriumError as exc:
                if not exc.retryable or attempt == 7:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _heartbeat(self, msg: Msg) -> None:
        while True:
            await asyncio.sleep(max(0.2, self._ack_wait / 3))
            with contextlib.suppress(Exception):
                await msg.in_progress()

    def _subject(self, operation: str) -> str:
        return self.subjects.block("workflow", self.component, operation)


async def _call(activity: Callable[..., Any], ctx: WorkflowActivityContext, input: Any) -> Any:
    if inspect.iscoroutinefunction(activity):
        return await activity(ctx, input)
    # A blocking activity must not stall the worker's other work items.
    result = await asyncio.to_thread(activity, ctx, input)
    if inspect.isawaitable(result):
        return await result
    return result
