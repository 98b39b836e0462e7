"""Durable Task protobuf <-> natrium's workflow bus contract (schemas/workflow.py), both ways.

The only place that knows both spellings: history events go out to gRPC workers as
`HistoryEvent`s, their `WorkflowAction`s come back as natrium's actions, instance records go out
as `WorkflowState`. The stubs are the ones the `dapr` wheel ships under a private path.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from google.protobuf import timestamp_pb2, wrappers_pb2

from kernel.errors import Codes, NatriumError
from schemas.workflow import ActionType, EventType, InstanceState, RuntimeStatus, format_time, parse_time

try:  # a private path of the `dapr` wheel (1.19+): fail with a clear word if it moves
    from dapr.ext.workflow._durabletask.internal import orchestrator_service_pb2_grpc as pb_grpc
    from dapr.ext.workflow._durabletask.internal import protos as pb
except ImportError as exc:  # pragma: no cover - depends on the installed dapr
    raise ImportError(
        "natrium serves the Durable Task protocol with the stubs the `dapr` package (>= 1.19) ships under "
        f"dapr.ext.workflow._durabletask.internal, and could not import them ({exc}); install `dapr>=1.19` "
        "(never the separate dapr-ext-workflow package, which overwrites them)"
    ) from exc

__all__ = [
    "Unsupported",
    "action_of",
    "failure_of",
    "history_event",
    "history_events",
    "replay_events",
    "pb",
    "pb_grpc",
    "status_of",
    "string_value",
    "text_of",
    "time_text",
    "timestamp",
    "workflow_state",
]

# The latest instant a Timestamp holds: Durable Task's "never", the fireAt of the timer the SDK
# keeps for a wait without timeout. It must come back to the worker bit for bit.
_NEVER = timestamp_pb2.Timestamp(seconds=253402300799, nanos=999_999_999)
_NEVER_TEXT = "9999-12-31T23:59:59.999999Z"

_STATUS: dict[RuntimeStatus, Any] = {
    status: pb.OrchestrationStatus.Value(f"ORCHESTRATION_STATUS_{status.value}") for status in RuntimeStatus
}
_STATUS_BACK = {number: status for status, number in _STATUS.items()}


class Unsupported(Exception):
    """A worker action natrium's backend has no equivalent for."""


# -- scalars ---------------------------------------------------------------------------------------


def string_value(text: str | None) -> wrappers_pb2.StringValue | None:
    return None if text is None else wrappers_pb2.StringValue(value=text)


def text_of(message: Any, field: str) -> str | None:
    """A `StringValue` field as text, None when unset."""
    return getattr(message, field).value if message.HasField(field) else None


def timestamp(text: str | None) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    if text:
        if text.startswith(_NEVER_TEXT[:-1]):
            return timestamp_pb2.Timestamp(seconds=_NEVER.seconds, nanos=_NEVER.nanos)
        stamp.FromDatetime(parse_time(text))
    return stamp


def time_text(stamp: timestamp_pb2.Timestamp) -> str:
    if stamp.seconds >= _NEVER.seconds:
        return _NEVER_TEXT
    return format_time(stamp.ToDatetime(tzinfo=dt.UTC))


def status_of(number: int) -> RuntimeStatus:
    status = _STATUS_BACK.get(number)
    if status is None:
        raise Unsupported(f"workflow status {number} ({pb.OrchestrationStatus.Name(number)})")
    return status


def failure_details(details: dict[str, Any] | None) -> Any:
    if not details:
        return None
    return pb.TaskFailureDetails(
        errorType=str(details.get("errorType", "")),
        errorMessage=str(details.get("errorMessage", "")),
        stackTrace=string_value(details.get("stackTrace")),
        isNonRetriable=bool(details.get("isNonRetriable", False)),
    )


def failure_of(details: Any) -> dict[str, Any]:
    """A `TaskFailureDetails` as natrium's failureDetails object."""
    out: dict[str, Any] = {"errorType": details.errorType, "errorMessage": details.errorMessage}
    stack = text_of(details, "stackTrace")
    if stack:
        out["stackTrace"] = stack
    if details.isNonRetriable:
        out["isNonRetriable"] = True
    return out


# -- history events --------------------------------------------------------------------------------


def _instance(instance_id: Any, execution_id: Any) -> Any:
    return pb.WorkflowInstance(instanceId=str(instance_id or ""), executionId=string_value(execution_id))


def history_event(event: dict[str, Any]) -> Any | None:
    """One natrium history event as a `HistoryEvent`; None for natrium's own kinds (`terminateSent`)."""
    kind = event["type"]
    out = pb.HistoryEvent(eventId=int(event.get("eventId", -1)), timestamp=timestamp(event.get("timestamp")))
    text = string_value
    if kind == EventType.EXECUTION_STARTED:
        parent = event.get("parentInstance")
        out.executionStarted.CopyFrom(
            pb.ExecutionStartedEvent(
                name=str(event.get("name", "")),
                input=text(event.get("input")),
                workflowInstance=_instance(event.get("instanceId"), event.get("executionId")),
                parentInstance=pb.ParentInstanceInfo(
                    taskScheduledId=int(parent.get("taskScheduledId", -1)),
                    workflowInstance=_instance(parent.get("instanceId"), parent.get("executionId")),
                )
                if parent
                else None,
                scheduledStartTimestamp=timestamp(event["scheduledStartTimestamp"])
                if event.get("scheduledStartTimestamp")
                else None,
            )
        )
    elif kind == EventType.EXECUTION_COMPLETED:
        status = RuntimeStatus(event.get("orchestrationStatus", RuntimeStatus.COMPLETED.value))
        out.executionCompleted.CopyFrom(
            pb.ExecutionCompletedEvent(
                workflowStatus=_STATUS[status],
                result=text(event.get("result")),
                failureDetails=failure_details(event.get("failureDetails")),
            )
        )
    elif kind == EventType.EXECUTION_TERMINATED:
        out.executionTerminated.CopyFrom(
            pb.ExecutionTerminatedEvent(input=text(event.get("input")), recurse=bool(event.get("recurse")))
        )
    elif kind == EventType.TASK_SCHEDULED:
        out.taskScheduled.CopyFrom(
            pb.TaskScheduledEvent(name=str(event.get("name", "")), input=text(event.get("input")))
        )
    elif kind == EventType.TASK_COMPLETED:
        out.taskCompleted.CopyFrom(
            pb.TaskCompletedEvent(taskScheduledId=int(event["taskScheduledId"]), result=text(event.get("result")))
        )
    elif kind == EventType.TASK_FAILED:
        out.taskFailed.CopyFrom(
            pb.TaskFailedEvent(
                taskScheduledId=int(event["taskScheduledId"]),
                failureDetails=failure_details(event.get("failureDetails")),
            )
        )
    elif kind == EventType.SUB_ORCHESTRATION_CREATED:
        out.childWorkflowInstanceCreated.CopyFrom(
            pb.ChildWorkflowInstanceCreatedEvent(
                instanceId=str(event.get("instanceId", "")),
                name=str(event.get("name", "")),
                input=text(event.get("input")),
            )
        )
    elif kind == EventType.SUB_ORCHESTRATION_COMPLETED:
        out.childWorkflowInstanceCompleted.CopyFrom(
            pb.ChildWorkflowInstanceCompletedEvent(
                taskScheduledId=int(event["taskScheduledId"]), result=text(event.get("result"))
            )
        )
    elif kind == EventType.SUB_ORCHESTRATION_FAILED:
        out.childWorkflowInstanceFailed.CopyFrom(
            pb.ChildWorkflowInstanceFailedEvent(
                taskScheduledId=int(event["taskScheduledId"]),
                failureDetails=failure_details(event.get("failureDetails")),
            )
        )
    elif kind == EventType.TIMER_CREATED:
        out.timerCreated.CopyFrom(pb.TimerCreatedEvent(fireAt=timestamp(event.get("fireAt"))))
    elif kind == EventType.TIMER_FIRED:
        out.timerFired.CopyFrom(
            pb.TimerFiredEvent(fireAt=timestamp(event.get("fireAt")), timerId=int(event["timerId"]))
        )
    elif kind == EventType.ORCHESTRATOR_STARTED:
        out.workflowStarted.CopyFrom(pb.WorkflowStartedEvent())
    elif kind == EventType.ORCHESTRATOR_COMPLETED:
        out.workflowCompleted.CopyFrom(pb.WorkflowCompletedEvent())
    elif kind == EventType.EVENT_SENT:
        out.eventSent.CopyFrom(
            pb.EventSentEvent(
                instanceId=str(event.get("instanceId", "")),
                name=str(event.get("name", "")),
                input=text(event.get("input")),
            )
        )
    elif kind == EventType.EVENT_RAISED:
        out.eventRaised.CopyFrom(pb.EventRaisedEvent(name=str(event.get("name", "")), input=text(event.get("input"))))
    elif kind == EventType.EXECUTION_SUSPENDED:
        out.executionSuspended.CopyFrom(pb.ExecutionSuspendedEvent(input=text(event.get("input"))))
    elif kind == EventType.EXECUTION_RESUMED:
        out.executionResumed.CopyFrom(pb.ExecutionResumedEvent(input=text(event.get("input"))))
    else:
        return None
    return out


def history_events(events: list[dict[str, Any]]) -> list[Any]:
    return [e for e in (history_event(event) for event in events) if e is not None]


# What the SDK's replay has no case for (it fails the instance on an event it does not know).
_NOT_REPLAYED = frozenset(
    {EventType.ORCHESTRATOR_COMPLETED, EventType.EVENT_SENT, EventType.TERMINATE_SENT, EventType.EXECUTION_COMPLETED}
)


def replay_events(events: list[dict[str, Any]], suspended: bool = False) -> tuple[list[Any], bool]:
    """The events a worker replays, as `HistoryEvent`s, and whether the instance ends up suspended.

    Step boundaries and natrium's own bookkeeping stay out, and so does a resume that follows
    no suspend (the backend records one; the SDK only expects it after a suspend).
    """
    out: list[Any] = []
    for event in events:
        kind = event["type"]
        if kind in _NOT_REPLAYED:
            continue
        if kind == EventType.EXECUTION_SUSPENDED:
            if suspended:
                continue
            suspended = True
        elif kind == EventType.EXECUTION_RESUMED:
            if not suspended:
                continue
            suspended = False
        converted = history_event(event)
        if converted is not None:
            out.append(converted)
    return out, suspended


# -- worker actions --------------------------------------------------------------------------------


def action_of(action: Any) -> dict[str, Any]:
    """A `WorkflowAction` as natrium's action object (schemas.workflow.OrchestratorAction)."""
    kind = action.WhichOneof("workflowActionType")
    out: dict[str, Any] = {"id": action.id}
    if kind == "scheduleTask":
        task = action.scheduleTask
        out.update(type=ActionType.SCHEDULE_TASK, name=task.name, input=text_of(task, "input"))
    elif kind == "createChildWorkflow":
        child = action.createChildWorkflow
        out.update(
            type=ActionType.CREATE_SUB_ORCHESTRATION,
            name=child.name,
            instanceId=child.instanceId,
            input=text_of(child, "input"),
        )
    elif kind == "createTimer":
        out.update(type=ActionType.CREATE_TIMER, fireAt=time_text(action.createTimer.fireAt))
    elif kind == "sendEvent":
        send = action.sendEvent
        out.update(
            type=ActionType.SEND_EVENT, instanceId=send.instance.instanceId, name=send.name, input=text_of(send, "data")
        )
    elif kind == "completeWorkflow":
        done = action.completeWorkflow
        out.update(
            type=ActionType.COMPLETE_ORCHESTRATION,
            orchestrationStatus=status_of(done.workflowStatus),
            result=text_of(done, "result"),
        )
        if done.HasField("failureDetails"):
            out["failureDetails"] = failure_of(done.failureDetails)
        carried = [
            {"name": e.eventRaised.name, "input": text_of(e.eventRaised, "input")}
            for e in done.carryoverEvents
            if e.HasField("eventRaised")
        ]
        if carried:
            out["carryoverEvents"] = carried
    elif kind == "terminateWorkflow":
        end = action.terminateWorkflow
        out.update(
            type=ActionType.TERMINATE_ORCHESTRATION,
            instanceId=end.instanceId,
            result=text_of(end, "reason"),
            recurse=end.recurse,
        )
    else:
        raise Unsupported(f"workflow action {kind!r}")
    return out


def unsupported_failure(action_id: int, problem: Unsupported) -> dict[str, Any]:
    """The action that fails an instance whose worker asked for something natrium cannot do."""
    return {
        "id": action_id,
        "type": ActionType.COMPLETE_ORCHESTRATION,
        "orchestrationStatus": RuntimeStatus.FAILED,
        "failureDetails": {
            "errorType": Codes.API_UNIMPLEMENTED,
            "errorMessage": f"natrium does not support {problem}",
            "isNonRetriable": True,
        },
    }


# -- instance records ------------------------------------------------------------------------------


def workflow_state(state: InstanceState, payloads: bool) -> Any:
    """An instance record as Durable Task's `WorkflowState`; `payloads` adds input, output, status."""
    out = pb.WorkflowState(
        instanceId=state.instance_id,
        name=state.name,
        workflowStatus=_STATUS[state.runtime_status],
        createdTimestamp=timestamp(state.created_at),
        lastUpdatedTimestamp=timestamp(state.last_updated_at),
        executionId=string_value(state.execution_id or None),
        parentInstanceId=string_value(state.parent_instance_id),
    )
    if state.runtime_status.is_terminal:
        out.completedTimestamp.CopyFrom(timestamp(state.last_updated_at))
    if payloads:
        for field, value in (("input", state.input), ("output", state.output), ("customStatus", state.custom_status)):
            if value is not None:
                getattr(out, field).CopyFrom(wrappers_pb2.StringValue(value=value))
    if state.failure_details is not None:
        out.failureDetails.CopyFrom(failure_details(state.failure_details.model_dump(by_alias=True, exclude_none=True)))
    return out


def not_found(instance_id: str) -> NatriumError:
    return NatriumError(Codes.INSTANCE_ID_NOT_FOUND, f"unable to find workflow with ID '{instance_id}'", status=404)
