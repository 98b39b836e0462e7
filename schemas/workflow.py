"""The workflow block's bus contract: history events, worker actions, management requests, layout.

Shaped after the Durable Task model (the `TaskHubSidecarService` protocol Dapr's workflow SDKs
speak), so a later gRPC front door can serve the same backend:

- a history is a list of events (`executionStarted`, `taskScheduled`, `taskCompleted`, ...), one
  JetStream message each, on one subject per instance. An orchestration work item on the bus is a
  wake-up naming the instance (`{"instanceId"}`): a bus-native worker reads the history straight
  from the stream, from its cached position on, instead of being sent all of it each step. The
  gRPC front door (adapters/grpc/taskhub_work.py) reads the same history and splits it into the
  past events (up to the last `orchestratorCompleted`) and new events Durable Task SDKs expect;
- a worker replays its orchestrator against the history and answers with actions
  (`scheduleTask`, `createTimer`, `createSubOrchestration`, `sendEvent`,
  `completeOrchestration`, `terminateOrchestration`); the backend turns them into events.

Events travel as plain JSON objects (`{"type", "eventId", "timestamp", ...fields}`) rather than
pydantic models: a replay reads hundreds of them per step, and validating each would cost more
than the step itself. Their fields are listed in `EVENT_FIELDS`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from nats.js import api
from pydantic import BaseModel, ConfigDict, Field, field_validator

from kernel.subjects import Subjects, encode_token

__all__ = [
    "ACTION_TYPES",
    "EVENT_FIELDS",
    "ActionType",
    "CompleteActivityRequest",
    "CompleteOrchestrationReply",
    "CompleteOrchestrationRequest",
    "EventType",
    "FailureDetails",
    "HistoryReply",
    "InstanceRequest",
    "InstanceState",
    "ListReply",
    "ListRequest",
    "OrchestratorAction",
    "RaiseEventRequest",
    "RuntimeStatus",
    "StartReply",
    "StartRequest",
    "TerminateRequest",
    "WorkflowLayout",
    "ORCHESTRATIONS",
    "ACTIVITIES",
    "check_instance_id",
    "compact_step",
    "expand_event",
    "MAX_INSTANCE_ID",
    "NEW_EVENT_TYPES",
    "format_time",
    "new_event",
    "parse_time",
    "split_history",
    "start_due_at",
    "utc_now",
]

MAX_INSTANCE_ID = 64
_INSTANCE_ID = re.compile(r"^[A-Za-z0-9_-]+$")


class RuntimeStatus(StrEnum):
    """Dapr's `runtimeStatus` values (Durable Task's `OrchestrationStatus` without the prefix)."""

    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    CONTINUED_AS_NEW = "CONTINUED_AS_NEW"
    FAILED = "FAILED"
    CANCELED = "CANCELED"
    TERMINATED = "TERMINATED"
    PENDING = "PENDING"
    SUSPENDED = "SUSPENDED"

    @property
    def is_terminal(self) -> bool:
        return self in (RuntimeStatus.COMPLETED, RuntimeStatus.FAILED, RuntimeStatus.TERMINATED, RuntimeStatus.CANCELED)


class EventType(StrEnum):
    """History event kinds, named as the `HistoryEvent` oneof of orchestrator_service.proto."""

    EXECUTION_STARTED = "executionStarted"
    EXECUTION_COMPLETED = "executionCompleted"
    EXECUTION_TERMINATED = "executionTerminated"
    TASK_SCHEDULED = "taskScheduled"
    TASK_COMPLETED = "taskCompleted"
    TASK_FAILED = "taskFailed"
    SUB_ORCHESTRATION_CREATED = "subOrchestrationInstanceCreated"
    SUB_ORCHESTRATION_COMPLETED = "subOrchestrationInstanceCompleted"
    SUB_ORCHESTRATION_FAILED = "subOrchestrationInstanceFailed"
    TIMER_CREATED = "timerCreated"
    TIMER_FIRED = "timerFired"
    ORCHESTRATOR_STARTED = "orchestratorStarted"
    ORCHESTRATOR_COMPLETED = "orchestratorCompleted"
    EVENT_SENT = "eventSent"
    EVENT_RAISED = "eventRaised"
    EXECUTION_SUSPENDED = "executionSuspended"
    EXECUTION_RESUMED = "executionResumed"
    TERMINATE_SENT = "terminateSent"
    """natrium's own: a terminate sent to another instance (a child), so the relay delivers it."""


# Fields each event kind carries besides type, eventId (the task id for action events, else -1)
# and timestamp (RFC 3339).
EVENT_FIELDS: dict[EventType, tuple[str, ...]] = {
    EventType.EXECUTION_STARTED: (
        "name",
        "input",
        "instanceId",
        "executionId",
        "parentInstance",
        "scheduledStartTimestamp",
    ),
    EventType.EXECUTION_COMPLETED: ("orchestrationStatus", "result", "failureDetails"),
    EventType.EXECUTION_TERMINATED: ("input", "recurse"),
    EventType.TASK_SCHEDULED: ("name", "input"),
    EventType.TASK_COMPLETED: ("taskScheduledId", "result"),
    EventType.TASK_FAILED: ("taskScheduledId", "failureDetails"),
    EventType.SUB_ORCHESTRATION_CREATED: ("instanceId", "name", "input"),
    EventType.SUB_ORCHESTRATION_COMPLETED: ("taskScheduledId", "result"),
    EventType.SUB_ORCHESTRATION_FAILED: ("taskScheduledId", "failureDetails"),
    EventType.TIMER_CREATED: ("fireAt",),
    EventType.TIMER_FIRED: ("timerId", "fireAt"),
    EventType.ORCHESTRATOR_STARTED: (),
    EventType.ORCHESTRATOR_COMPLETED: ("customStatus",),
    EventType.EVENT_SENT: ("instanceId", "name", "input"),
    EventType.EVENT_RAISED: ("name", "input"),
    EventType.EXECUTION_SUSPENDED: ("input",),
    EventType.EXECUTION_RESUMED: ("input",),
    EventType.TERMINATE_SENT: ("instanceId", "input", "recurse"),
}


class ActionType(StrEnum):
    """What a worker asks for, named as the `OrchestratorAction` oneof."""

    SCHEDULE_TASK = "scheduleTask"
    CREATE_TIMER = "createTimer"
    CREATE_SUB_ORCHESTRATION = "createSubOrchestration"
    SEND_EVENT = "sendEvent"
    COMPLETE_ORCHESTRATION = "completeOrchestration"
    TERMINATE_ORCHESTRATION = "terminateOrchestration"


ACTION_TYPES = tuple(ActionType)


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class FailureDetails(_Model):
    """Durable Task's `TaskFailureDetails`."""

    error_type: str = Field(default="", alias="errorType")
    error_message: str = Field(default="", alias="errorMessage")
    stack_trace: str | None = Field(default=None, alias="stackTrace")
    is_non_retriable: bool = Field(default=False, alias="isNonRetriable")


class OrchestratorAction(_Model):
    """One action of an orchestrator step; the fields used depend on `type`."""

    id: int
    type: ActionType
    name: str | None = None
    input: str | None = None
    instance_id: str | None = Field(default=None, alias="instanceId")
    fire_at: str | None = Field(default=None, alias="fireAt")
    orchestration_status: RuntimeStatus | None = Field(default=None, alias="orchestrationStatus")
    result: str | None = None
    failure_details: FailureDetails | None = Field(default=None, alias="failureDetails")
    carryover_events: list[dict[str, Any]] = Field(default_factory=list, alias="carryoverEvents")
    """Continue-as-new: external events not yet consumed, kept for the next execution."""
    recurse: bool = False


# -- management ------------------------------------------------------------------------------------


class StartRequest(_Model):
    name: str = ""
    instance_id: str | None = Field(default=None, alias="instanceId")
    input: str | None = None
    """The input as JSON text (Durable Task's `StringValue`); the HTTP start passes the raw body."""
    start_at: dt.datetime | None = Field(default=None, alias="startAt")
    """When the first step may run (Durable Task's `scheduledStartTimestamp`); until then PENDING."""

    @field_validator("start_at")
    @classmethod
    def _aware(cls, value: dt.datetime | None) -> dt.datetime | None:
        return value if value is None or value.tzinfo else value.replace(tzinfo=dt.UTC)


class StartReply(_Model):
    instance_id: str = Field(alias="instanceId")


class InstanceRequest(_Model):
    instance_id: str = Field(default="", alias="instanceId")
    recursive: bool = True
    """Purge: children too."""


class TerminateRequest(InstanceRequest):
    output: str | None = None


class RaiseEventRequest(_Model):
    instance_id: str = Field(default="", alias="instanceId")
    event_name: str = Field(default="", alias="eventName")
    input: str | None = None


class InstanceState(_Model):
    """An instance's metadata record, as the KV bucket keeps it and `get` answers it."""

    instance_id: str = Field(alias="instanceId")
    name: str
    runtime_status: RuntimeStatus = Field(alias="runtimeStatus")
    created_at: str = Field(alias="createdAt")
    last_updated_at: str = Field(alias="lastUpdatedAt")
    execution_id: str = Field(default="", alias="executionId")
    input: str | None = None
    output: str | None = None
    custom_status: str | None = Field(default=None, alias="customStatus")
    failure_details: FailureDetails | None = Field(default=None, alias="failureDetails")
    parent_instance_id: str | None = Field(default=None, alias="parentInstanceId")
    parent_task_id: int | None = Field(default=None, alias="parentTaskId")
    parent_execution_id: str | None = Field(default=None, alias="parentExecutionId")
    history_seq: int = Field(default=0, alias="historySeq")
    """The history sequence of the last event this record reflects (older ones never overwrite it)."""


class ListRequest(_Model):
    status: RuntimeStatus | None = None
    limit: int = Field(default=100, ge=1, le=10_000)


class ListReply(_Model):
    instances: list[InstanceState] = Field(default_factory=list)


class HistoryReply(_Model):
    events: list[dict[str, Any]] = Field(default_factory=list)


# -- workers ---------------------------------------------------------------------------------------


class CompleteOrchestrationRequest(_Model):
    """Durable Task's `OrchestratorResponse`, plus the optimistic-concurrency token of the step."""

    instance_id: str = Field(alias="instanceId")
    execution_id: str = Field(alias="executionId")
    expected_seq: int = Field(alias="expectedSeq", ge=0)
    """Last history sequence the worker replayed; the step commits only if history is still there."""
    started_at: str = Field(alias="startedAt")
    """The step's `orchestratorStarted` timestamp: the `current_utc_datetime` its code saw."""
    actions: list[OrchestratorAction] = Field(default_factory=list)
    custom_status: str | None = Field(default=None, alias="customStatus")


class CompleteOrchestrationReply(_Model):
    committed: bool
    """False when history moved on meanwhile: read it again and replay."""


class CompleteActivityRequest(_Model):
    """Durable Task's `ActivityResponse`."""

    instance_id: str = Field(alias="instanceId")
    execution_id: str = Field(alias="executionId")
    task_id: int = Field(alias="taskId")
    result: str | None = None
    failure_details: FailureDetails | None = Field(default=None, alias="failureDetails")


def check_instance_id(instance_id: str) -> str | None:
    """Dapr's rule for instance ids; the reason it is refused, or None."""
    if len(instance_id) > MAX_INSTANCE_ID:
        return "too long"
    if not _INSTANCE_ID.match(instance_id):
        return "invalid"
    return None


ORCHESTRATIONS = "o"
ACTIVITIES = "a"
_MAX_CONSUMER_TOKEN = 120


@dataclass(frozen=True)
class WorkflowLayout:
    """Where one workflow component keeps things on JetStream; the service and workers share it.

    - history stream: one subject per instance, `<root>.wf.<c>.h.<instance>`;
    - work stream (work-queue): orchestration wake-ups `<root>.wf.<c>.orch.<workflow name>` and
      activity work items `<root>.wf.<c>.act.<activity name>`, each name with its own durable
      consumer (`work_consumer`), so a worker pulls only the names it registered;
    - timer stream (message schedules): `<root>.wf.<c>.timer.s.<instance>.<execution>.<id>`
      fires a copy to `<root>.wf.<c>.timer.f.<instance>`;
    - instance metadata: KV bucket; status changes are announced on `<root>.wf.<c>.status.<instance>`.
    """

    subjects: Subjects
    component: str

    @property
    def _base(self) -> str:
        return f"{self.subjects.root}.wf.{encode_token(self.component)}"

    @property
    def history_stream(self) -> str:
        return self.subjects.stream("wfhistory", self.component)

    @property
    def work_stream(self) -> str:
        return self.subjects.stream("wfwork", self.component)

    @property
    def timer_stream(self) -> str:
        return self.subjects.stream("wftimer", self.component)

    @property
    def metadata_bucket(self) -> str:
        return self.subjects.stream("wfmeta", self.component)

    def history(self, instance_id: str) -> str:
        return f"{self._base}.h.{encode_token(instance_id)}"

    @property
    def history_wildcard(self) -> str:
        return f"{self._base}.h.*"

    def orchestration(self, workflow: str) -> str:
        """Wake-ups of the instances of one workflow (the body names the instance)."""
        return f"{self._base}.orch.{encode_token(workflow)}"

    def activity(self, name: str) -> str:
        return f"{self._base}.act.{encode_token(name)}"

    def timer_schedule(self, instance_id: str, execution_id: str, timer_id: int) -> str:
        return f"{self._base}.timer.s.{encode_token(instance_id)}.{encode_token(execution_id)}.{timer_id}"

    def start_schedule(self, instance_id: str, execution_id: str) -> str:
        """The schedule of a start for later, among the instance's timers so a purge takes it."""
        return f"{self._base}.timer.s.{encode_token(instance_id)}.{encode_token(execution_id)}.start"

    def timer_schedules_of(self, instance_id: str) -> str:
        return f"{self._base}.timer.s.{encode_token(instance_id)}.>"

    def timer_fired(self, instance_id: str) -> str:
        return f"{self._base}.timer.f.{encode_token(instance_id)}"

    def status(self, instance_id: str) -> str:
        return f"{self._base}.status.{encode_token(instance_id)}"

    @property
    def wildcards(self) -> dict[str, str]:
        return {
            "orchestrations": f"{self._base}.orch.>",
            "activities": f"{self._base}.act.>",
            "timers_fired": f"{self._base}.timer.f.>",
            "timers": f"{self._base}.timer.>",
        }

    def work_subject(self, kind: str, name: str) -> str:
        """`kind` is ORCHESTRATIONS or ACTIVITIES."""
        return self.orchestration(name) if kind == ORCHESTRATIONS else self.activity(name)

    @staticmethod
    def work_consumer(kind: str, name: str) -> str:
        """The durable consumer of one workflow's (or activity's) work items, shared by every
        worker that registered it; the backend creates it (work-queue filters must not overlap)."""
        token = encode_token(name)
        if len(token) > _MAX_CONSUMER_TOKEN:
            token = "h" + hashlib.sha256(name.encode()).hexdigest()[:40]
        return f"{kind}-{token}"

    def work_consumer_config(self, kind: str, name: str, ack_wait: float) -> api.ConsumerConfig:
        """The one configuration of a work consumer: the backend and workers both create it
        (the same config is a no-op), so a worker need not wait for the first item to be routed."""
        return api.ConsumerConfig(
            durable_name=self.work_consumer(kind, name),
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=ack_wait,
            max_ack_pending=20_000,
            max_waiting=4096,
            filter_subject=self.work_subject(kind, name),
            deliver_policy=api.DeliverPolicy.ALL,
        )

    @staticmethod
    def work_kind(consumer: str) -> str | None:
        """ORCHESTRATIONS or ACTIVITIES for a work consumer's name, None for any other consumer."""
        kind = consumer.split("-", 1)[0]
        return kind if kind in (ORCHESTRATIONS, ACTIVITIES) and "-" in consumer else None

    # Work stream metadata: the component's `workItemAckWait` in seconds (workers heartbeat by it).
    ACK_WAIT_METADATA = "natrium.workItemAckWait"
    # Consumers of the one-queue-for-all-names layout, removed when a backend opens.
    LEGACY_WORK_CONSUMERS = ("orchestrations", "activities")
    # Durable consumers the backend creates and workers bind to.
    RELAY_CONSUMER = "relay"
    TIMER_CONSUMER = "timers"


# -- events ----------------------------------------------------------------------------------------

NEW_EVENT_TYPES = frozenset(
    {
        EventType.EXECUTION_STARTED,
        EventType.EXECUTION_TERMINATED,
        EventType.TASK_COMPLETED,
        EventType.TASK_FAILED,
        EventType.SUB_ORCHESTRATION_COMPLETED,
        EventType.SUB_ORCHESTRATION_FAILED,
        EventType.TIMER_FIRED,
        EventType.EVENT_RAISED,
        EventType.EXECUTION_SUSPENDED,
        EventType.EXECUTION_RESUMED,
    }
)
"""Events that reach an instance from outside its orchestrator: each one calls for a step."""


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def format_time(moment: dt.datetime) -> str:
    """RFC 3339 in UTC with microseconds and a `Z`, as Dapr prints `createdAt`."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def new_event(kind: EventType, event_id: int = -1, timestamp: str | None = None, **fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = {"type": kind.value, "eventId": event_id, "timestamp": timestamp or format_time(utc_now())}
    event.update({k: v for k, v in fields.items() if v is not None})
    return event


STEP_STARTED = "stepStartedAt"
STEP_COMPLETED = "stepCompleted"


def compact_step(step: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A step of at most one action as one message: its `orchestratorStarted` and
    `orchestratorCompleted` ride along as fields of the event between them.

    Most steps start one task (a chain) or none (waiting); a single message is atomic by itself
    and saves the atomic batch, which the file store makes durable at once on commit (about
    1.3 ms here, 20x a plain write). Larger steps stay one event per message, in an atomic batch.
    """
    if len(step) < 2 or step[0]["type"] != EventType.ORCHESTRATOR_STARTED:
        return step
    if step[-1]["type"] != EventType.ORCHESTRATOR_COMPLETED:
        return step
    if len(step) == 2:
        started, completed = step
        return [{**completed, STEP_STARTED: started["timestamp"]}]
    if len(step) == 3:
        started, event, completed = step
        marker = {k: v for k, v in completed.items() if k not in ("type", "eventId")}
        return [{**event, STEP_STARTED: started["timestamp"], STEP_COMPLETED: marker}]
    return step


def expand_event(event: dict[str, Any]) -> list[dict[str, Any]]:
    """The history events one stored message holds (see `compact_step`), each with its `seq`."""
    started_at = event.pop(STEP_STARTED, None)
    if started_at is None:
        return [event]
    seq = event.get("seq")
    started = {"type": EventType.ORCHESTRATOR_STARTED.value, "eventId": -1, "timestamp": started_at, "seq": seq}
    completed = event.pop(STEP_COMPLETED, None)
    if completed is None:  # the message is the step's orchestratorCompleted itself
        return [started, event]
    marker = {"type": EventType.ORCHESTRATOR_COMPLETED.value, "eventId": -1, **completed, "seq": seq}
    return [started, event, marker]


def start_due_at(events: list[dict[str, Any]]) -> dt.datetime | None:
    """When an instance started for later may take its first step; None once it may step now.

    A terminate does not wait for the start: it ends the instance at once, as Dapr's does.
    """
    if not events or events[0]["type"] != EventType.EXECUTION_STARTED:
        return None
    scheduled = events[0].get("scheduledStartTimestamp")
    if not scheduled or any(e["type"] == EventType.EXECUTION_TERMINATED for e in events):
        return None
    due = parse_time(str(scheduled))
    return due if due > utc_now() else None


def split_history(events: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(past events, new events) of a work item, in the order a replay consumes them.

    Events from outside are appended as they arrive, before the step that handles them writes
    its `orchestratorStarted`; each step's `orchestratorStarted` is moved to the front of its
    segment so the replay sees the clock its code saw. Past = up to the last
    `orchestratorCompleted`; new = what came after.
    """
    past: list[dict[str, Any]] = []
    segment: list[dict[str, Any]] = []
    for event in events:
        kind = event["type"]
        if kind == EventType.ORCHESTRATOR_STARTED:
            segment.insert(0, event)
        else:
            segment.append(event)
        if kind == EventType.ORCHESTRATOR_COMPLETED:
            past.extend(segment)
            segment = []
    return past, segment
