"""The workflow backend of one component: owns histories, metadata and the work streams.

Workers never write history themselves: they hand back a step's actions (`commit`) or an
activity's result (`complete_activity`), and the engine appends the matching events. Everything
that follows from an event (work items, timers, child instances, status) is the relay's job
(relay.py), driven by the history stream itself, so a crash between two writes loses nothing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client
from nats.js import api
from nats.js.errors import NotFoundError

from kernel.components import Component
from kernel.durations import parse_duration
from kernel.errors import Codes, NatriumError
from kernel.jetstream import ensure_stream, storage_of
from kernel.subjects import Subjects
from schemas.workflow import (
    ActionType,
    CompleteActivityRequest,
    CompleteOrchestrationRequest,
    EventType,
    InstanceState,
    OrchestratorAction,
    RuntimeStatus,
    WorkflowLayout,
    check_instance_id,
    format_time,
    new_event,
)
from services.workflow.history import MAX_BATCH, Conflict, HistoryStore
from services.workflow.metadata import MetadataStore, apply_event

__all__ = ["WorkflowEngine", "EngineSettings"]

log = logging.getLogger("natrium.workflow")

_ATTEMPTS = 10
_RELAY_ACK_WAIT = 5.0
_KNOWN_CONSUMERS = 4096


@dataclass(frozen=True)
class EngineSettings:
    """Tunables read from the component's metadata."""

    work_ack_wait: float = 30.0
    """`workItemAckWait`: how long a worker may hold a work item without a heartbeat before
    another worker gets it (a dead worker's items move on after this)."""
    memory_timer_window: float = 5.0
    """`inMemoryTimerWindow`: timers due sooner than this also fire from the relay's memory, on
    time; message schedules have one-second resolution. 0 leaves every timer to the schedules."""

    @classmethod
    def of(cls, component: Component) -> EngineSettings:
        return cls(
            work_ack_wait=_duration(component, "workItemAckWait", cls.work_ack_wait),
            memory_timer_window=_duration(component, "inMemoryTimerWindow", cls.memory_timer_window),
        )


def _duration(component: Component, key: str, default: float) -> float:
    raw = component.meta(key)
    if not raw:
        return default
    try:
        return parse_duration(raw)
    except ValueError:
        raise NatriumError(
            Codes.COMPONENT_INVALID, f"component {component.name!r}: {key} {raw!r} is not a duration"
        ) from None


class WorkflowEngine:
    """Management operations and worker completions for one workflow component."""

    def __init__(self, nc: Client, subjects: Subjects, component: Component) -> None:
        self.nc = nc
        self.component = component
        self.layout = WorkflowLayout(subjects, component.name)
        self.history = HistoryStore(nc, self.layout, component)
        self.metadata = MetadataStore(nc, self.layout, component)
        self.settings = EngineSettings.of(component)
        self._work_consumers: set[tuple[str, str]] = set()

    # -- setup ------------------------------------------------------------------------------------

    async def open(self) -> None:
        js = self.nc.jetstream()
        replicas = self.component.meta_int("replicas", 1)
        storage = storage_of(self.component)
        await ensure_stream(js, self.history.stream_config())
        await ensure_stream(
            js,
            api.StreamConfig(
                name=self.layout.work_stream,
                description=f"natrium workflow work items of {self.component.name}",
                subjects=[self.layout.wildcards["orchestrations"], self.layout.wildcards["activities"]],
                retention=api.RetentionPolicy.WORK_QUEUE,
                num_replicas=replicas,
                storage=storage,
                metadata={WorkflowLayout.ACK_WAIT_METADATA: str(self.settings.work_ack_wait)},
            ),
        )
        for legacy in WorkflowLayout.LEGACY_WORK_CONSUMERS:
            # One consumer for every name overlaps the per-name ones a work queue must keep apart.
            with contextlib.suppress(NotFoundError):
                await js.delete_consumer(self.layout.work_stream, legacy)
        await ensure_stream(
            js,
            api.StreamConfig(
                name=self.layout.timer_stream,
                description=f"natrium workflow timers of {self.component.name}",
                subjects=[self.layout.wildcards["timers"]],
                retention=api.RetentionPolicy.WORK_QUEUE,
                allow_msg_schedules=True,
                deny_delete=False,
                num_replicas=replicas,
                storage=storage,
            ),
        )
        await self.metadata.open()
        work = self.settings.work_ack_wait
        # The relay's own handling takes milliseconds: a replica that dies holding events hands
        # them to another one soon.
        relay = min(work, _RELAY_ACK_WAIT)
        consumers = [
            (self.layout.timer_stream, WorkflowLayout.TIMER_CONSUMER, self.layout.wildcards["timers_fired"], relay),
            (self.layout.history_stream, WorkflowLayout.RELAY_CONSUMER, None, relay),
        ]
        for stream, name, subject, ack_wait in consumers:
            await js.add_consumer(stream, _consumer_config(name, subject, ack_wait))

    async def ensure_work_consumer(self, kind: str, name: str) -> None:
        """The durable consumer of one workflow's or activity's work items (created once per name).

        Workers of that name pull from it; until one starts, its items wait in the stream.
        """
        if (kind, name) in self._work_consumers:
            return
        config = self.layout.work_consumer_config(kind, name, self.settings.work_ack_wait)
        await self.nc.jetstream().add_consumer(self.layout.work_stream, config)
        if len(self._work_consumers) >= _KNOWN_CONSUMERS:
            self._work_consumers.clear()
        self._work_consumers.add((kind, name))

    # -- management -------------------------------------------------------------------------------

    async def start(
        self,
        name: str,
        instance_id: str | None,
        input: str | None,
        parent: dict[str, Any] | None = None,
        start_at: dt.datetime | None = None,
    ) -> str:
        if not name:
            raise NatriumError(Codes.WORKFLOW_NAME_MISSING, "workflow name is not configured", status=400)
        instance_id = instance_id or uuid.uuid4().hex
        if parent is None:
            # Dapr's rule is for ids users choose; a child's id is its parent's choice (Dapr's
            # workflow SDKs name children "<parent>:<task>"), and any name encodes to a subject.
            _check_id(instance_id)
        expected = await self.history.last_seq(instance_id)
        # No history, no instance: only a reused id needs its record checked.
        existing = await self.metadata.get(instance_id) if expected else None
        if existing is not None and not existing.runtime_status.is_terminal:
            raise NatriumError(
                Codes.START_WORKFLOW, f"an active workflow with ID '{instance_id}' already exists", status=500
            )
        started = new_event(
            EventType.EXECUTION_STARTED,
            name=name,
            input=input,
            instanceId=instance_id,
            executionId=uuid.uuid4().hex,
            parentInstance=parent,
            scheduledStartTimestamp=format_time(start_at) if start_at else None,
        )
        try:
            # A reused id rolls the old history up: the new run starts from an empty slate.
            seq = await self.history.create(instance_id, started, expected=expected, rollup=expected > 0)
        except Conflict:
            raise NatriumError(
                Codes.START_WORKFLOW, f"workflow '{instance_id}' was started concurrently", status=500
            ) from None
        started["seq"] = seq
        await self.apply(instance_id, started, fresh=existing is None and not expected)
        return instance_id

    async def get(self, instance_id: str) -> InstanceState:
        state = await self.metadata.get(instance_id)
        if state is None:
            raise _not_found(instance_id)
        return state

    async def raise_event(self, instance_id: str, event_name: str, input: str | None) -> None:
        if not event_name:
            raise NatriumError(Codes.MALFORMED_REQUEST, "event name is required", status=400)
        state = await self.get(instance_id)
        if state.runtime_status.is_terminal:
            return  # nobody will ever wait for it
        await self.history.append(instance_id, new_event(EventType.EVENT_RAISED, name=event_name, input=input))

    async def pause(self, instance_id: str) -> None:
        state = await self.get(instance_id)
        if state.runtime_status.is_terminal:
            raise NatriumError(
                Codes.PAUSE_WORKFLOW, f"workflow '{instance_id}' is {state.runtime_status.value}", status=500
            )
        await self.history.append(instance_id, new_event(EventType.EXECUTION_SUSPENDED))

    async def resume(self, instance_id: str) -> None:
        state = await self.get(instance_id)
        if state.runtime_status.is_terminal:
            raise NatriumError(
                Codes.RESUME_WORKFLOW, f"workflow '{instance_id}' is {state.runtime_status.value}", status=500
            )
        await self.history.append(instance_id, new_event(EventType.EXECUTION_RESUMED))

    async def terminate(self, instance_id: str, output: str | None, recursive: bool = True) -> None:
        """Finish the instance as TERMINATED right here (no worker needed); children follow if `recursive`.

        Running activities are not cancelled; their results land in a closed history.
        """
        await self.get(instance_id)
        for _ in range(_ATTEMPTS):
            events = await self.history.read(instance_id)
            if not events or _is_finished(events):
                return
            execution_id = str(events[0].get("executionId", ""))
            step: list[dict[str, Any]] = [new_event(EventType.ORCHESTRATOR_STARTED)]
            if recursive:
                step += [
                    new_event(EventType.TERMINATE_SENT, instanceId=child, input=output, recurse=True)
                    for child in _running_children(events)
                ]
            step.append(
                new_event(
                    EventType.EXECUTION_COMPLETED,
                    orchestrationStatus=RuntimeStatus.TERMINATED.value,
                    result=output,
                    executionId=execution_id,
                )
            )
            step.append(new_event(EventType.ORCHESTRATOR_COMPLETED))
            try:
                await self.history.commit(instance_id, step, expected=events[-1]["seq"])
                return
            except Conflict:
                continue
        raise NatriumError(Codes.TERMINATE_WORKFLOW, f"workflow '{instance_id}' kept changing", status=500)

    async def purge(self, instance_id: str, recursive: bool = True) -> None:
        state = await self.get(instance_id)
        if not state.runtime_status.is_terminal:
            raise NatriumError(
                Codes.PURGE_WORKFLOW,
                f"workflow '{instance_id}' is {state.runtime_status.value}: only COMPLETED, FAILED or TERMINATED "
                "instances can be purged",
                status=500,
            )
        if recursive:
            for child in _children(await self.history.read(instance_id)):
                try:
                    await self.purge(child, recursive=True)
                except NatriumError as exc:
                    if exc.code != Codes.INSTANCE_ID_NOT_FOUND:
                        raise
        await self.history.purge(instance_id)
        await _purge_subject(self.nc, self.layout.timer_stream, self.layout.timer_schedules_of(instance_id))
        await self.metadata.delete(instance_id)

    async def list(self, status: RuntimeStatus | None, limit: int) -> list[InstanceState]:
        return await self.metadata.list(status, limit)

    # -- workers ----------------------------------------------------------------------------------

    async def commit(self, request: CompleteOrchestrationRequest) -> bool:
        """Append one orchestrator step; False when history moved on (the worker replays again)."""
        instance_id = request.instance_id
        step: list[dict[str, Any]] = [new_event(EventType.ORCHESTRATOR_STARTED, timestamp=request.started_at)]
        for action in request.actions:
            if action.type is ActionType.COMPLETE_ORCHESTRATION and (
                action.orchestration_status is RuntimeStatus.CONTINUED_AS_NEW
            ):
                return await self._continue_as_new(request, action)
            event = _event_of(action, request.execution_id)
            if action.type is ActionType.COMPLETE_ORCHESTRATION and request.custom_status is not None:
                # The final record must show the last custom status as soon as it says "completed".
                event["customStatus"] = request.custom_status
            step.append(event)
        step.append(new_event(EventType.ORCHESTRATOR_COMPLETED, customStatus=request.custom_status))
        if len(step) > MAX_BATCH:
            # One step lands as one atomic batch: past the server's limit, fail the instance
            # with a reason rather than retry a step that can never commit.
            step = [
                step[0],
                new_event(
                    EventType.EXECUTION_COMPLETED,
                    orchestrationStatus=RuntimeStatus.FAILED.value,
                    failureDetails={
                        "errorType": "WorkflowStepTooLarge",
                        "errorMessage": f"one step started {len(step) - 2} tasks; at most {MAX_BATCH - 2} fit "
                        "in one step: fan out in smaller groups",
                    },
                    executionId=request.execution_id,
                ),
                step[-1],
            ]
        try:
            await self.history.commit(instance_id, step, expected=request.expected_seq)
        except Conflict:
            return False
        return True

    async def _continue_as_new(self, request: CompleteOrchestrationRequest, action: OrchestratorAction) -> bool:
        events = await self.history.read(request.instance_id)
        if not events:
            return False
        first = events[0]
        started = new_event(
            EventType.EXECUTION_STARTED,
            name=first.get("name"),
            input=action.result,
            instanceId=request.instance_id,
            executionId=uuid.uuid4().hex,
            parentInstance=first.get("parentInstance"),
        )
        carried = [
            new_event(EventType.EVENT_RAISED, name=e.get("name"), input=e.get("input")) for e in action.carryover_events
        ]
        try:
            # The rollup drops the finished execution's events: history stays bounded.
            await self.history.commit(
                request.instance_id, [started, *carried], expected=request.expected_seq, rollup=True
            )
        except Conflict:
            return False
        return True

    async def complete_activity(self, request: CompleteActivityRequest) -> None:
        if request.failure_details is not None:
            event = new_event(
                EventType.TASK_FAILED,
                taskScheduledId=request.task_id,
                failureDetails=request.failure_details.model_dump(by_alias=True, exclude_none=True),
                executionId=request.execution_id,
            )
        else:
            event = new_event(
                EventType.TASK_COMPLETED,
                taskScheduledId=request.task_id,
                result=request.result,
                executionId=request.execution_id,
            )
        msg_id = f"{request.instance_id}/{request.execution_id}/task/{request.task_id}"
        await self.history.append(request.instance_id, event, msg_id)

    # -- what the relay calls ---------------------------------------------------------------------

    async def apply(
        self, instance_id: str, event: dict[str, Any], *, fresh: bool = False
    ) -> tuple[InstanceState | None, bool]:
        """Reflect one history event in the metadata record: (record after it, whether it changed)."""
        changed = False

        def change(current: InstanceState | None) -> InstanceState | None:
            nonlocal changed
            updated = apply_event(current, instance_id, event)
            changed = updated is not None
            return updated

        state = await self.metadata.change(instance_id, change, fresh=fresh)
        if changed and state is not None:
            # Waiters (wait_for_workflow_completion) listen here instead of polling the bucket.
            body = state.model_dump_json(by_alias=True, exclude_none=True).encode()
            await self.nc.publish(self.layout.status(instance_id), body)
        return state, changed

    async def start_child(self, parent_id: str, event: dict[str, Any]) -> None:
        """Create the child instance a parent's step asked for (idempotent: the relay may redeliver)."""
        child_id = str(event["instanceId"])
        task_id = int(event["eventId"])
        parent = {"instanceId": parent_id, "executionId": event.get("executionId"), "taskScheduledId": task_id}
        existing = await self.history.read(child_id)
        if existing and existing[0].get("parentInstance") == parent:
            return  # started already, by an earlier delivery
        try:
            await self.start(str(event.get("name") or ""), child_id, event.get("input"), parent=parent)
        except NatriumError as exc:
            failed = new_event(
                EventType.SUB_ORCHESTRATION_FAILED,
                taskScheduledId=task_id,
                failureDetails={"errorType": exc.code, "errorMessage": exc.message},
                executionId=event.get("executionId"),
            )
            await self.history.append(parent_id, failed, f"{parent_id}/{event.get('executionId')}/sub/{task_id}")


def _consumer_config(name: str, subject: str | None, ack_wait: float) -> api.ConsumerConfig:
    return api.ConsumerConfig(
        durable_name=name,
        ack_policy=api.AckPolicy.EXPLICIT,
        ack_wait=ack_wait,
        max_ack_pending=20_000,
        max_waiting=4096,
        filter_subject=subject,
        deliver_policy=api.DeliverPolicy.ALL,
    )


def _event_of(action: OrchestratorAction, execution_id: str) -> dict[str, Any]:
    kind = action.type
    if kind is ActionType.SCHEDULE_TASK:
        return new_event(
            EventType.TASK_SCHEDULED, action.id, name=action.name, input=action.input, executionId=execution_id
        )
    if kind is ActionType.CREATE_TIMER:
        return new_event(EventType.TIMER_CREATED, action.id, fireAt=action.fire_at, executionId=execution_id)
    if kind is ActionType.CREATE_SUB_ORCHESTRATION:
        return new_event(
            EventType.SUB_ORCHESTRATION_CREATED,
            action.id,
            instanceId=action.instance_id,
            name=action.name,
            input=action.input,
            executionId=execution_id,
        )
    if kind is ActionType.SEND_EVENT:
        return new_event(
            EventType.EVENT_SENT, action.id, instanceId=action.instance_id, name=action.name, input=action.input
        )
    if kind is ActionType.TERMINATE_ORCHESTRATION:
        return new_event(
            EventType.TERMINATE_SENT,
            action.id,
            instanceId=action.instance_id,
            input=action.result,
            recurse=action.recurse,
        )
    details = action.failure_details.model_dump(by_alias=True, exclude_none=True) if action.failure_details else None
    return new_event(
        EventType.EXECUTION_COMPLETED,
        action.id,
        orchestrationStatus=(action.orchestration_status or RuntimeStatus.COMPLETED).value,
        result=action.result,
        failureDetails=details,
        executionId=execution_id,
    )


def _is_finished(events: list[dict[str, Any]]) -> bool:
    return any(
        e["type"] == EventType.EXECUTION_COMPLETED and e.get("orchestrationStatus") != RuntimeStatus.CONTINUED_AS_NEW
        for e in events
    )


def _children(events: list[dict[str, Any]]) -> list[str]:
    return [str(e["instanceId"]) for e in events if e["type"] == EventType.SUB_ORCHESTRATION_CREATED]


def _running_children(events: list[dict[str, Any]]) -> list[str]:
    done = {
        e.get("taskScheduledId")
        for e in events
        if e["type"] in (EventType.SUB_ORCHESTRATION_COMPLETED, EventType.SUB_ORCHESTRATION_FAILED)
    }
    return [
        str(e["instanceId"])
        for e in events
        if e["type"] == EventType.SUB_ORCHESTRATION_CREATED and e["eventId"] not in done
    ]


def _check_id(instance_id: str) -> None:
    problem = check_instance_id(instance_id)
    if problem == "too long":
        raise NatriumError(
            Codes.INSTANCE_ID_TOO_LONG, "workflow instance ID exceeds the max length of 64 characters", status=400
        )
    if problem:
        raise NatriumError(
            Codes.INSTANCE_ID_INVALID,
            f"workflow instance ID '{instance_id}' is invalid: only letters, digits, '-' and '_' are allowed",
            status=400,
        )


def _not_found(instance_id: str) -> NatriumError:
    return NatriumError(Codes.INSTANCE_ID_NOT_FOUND, f"unable to find workflow with ID '{instance_id}'", status=404)


async def _purge_subject(nc: Client, stream: str, subject: str) -> None:
    await nc.request(f"$JS.API.STREAM.PURGE.{stream}", json.dumps({"filter": subject}).encode(), timeout=5)
