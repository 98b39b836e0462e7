"""Replay: run an orchestrator against its history and collect the actions of the new step.

Past events replay the code's earlier steps (`is_replaying` true) and must match what it does
now, or the instance fails with a NonDeterminismError; new events then move it forward, and
what it starts without a matching history event becomes this step's actions.
"""

from __future__ import annotations

import inspect
import traceback
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, cast

from adapters.sdk.workflow.context import DaprWorkflowContext, RetryableTask, RetryTimer, decode, encode
from adapters.sdk.workflow.tasks import NonDeterminismError, Task, TaskFailedError
from schemas.workflow import ActionType, EventType, FailureDetails, RuntimeStatus, parse_time

__all__ = ["OrchestrationExecutor", "StepResult"]

Orchestrator = Callable[[DaprWorkflowContext, Any], Any]

# History event kind -> the action kind that must have produced it.
_ACTION_OF = {
    EventType.TASK_SCHEDULED: ActionType.SCHEDULE_TASK,
    EventType.TIMER_CREATED: ActionType.CREATE_TIMER,
    EventType.SUB_ORCHESTRATION_CREATED: ActionType.CREATE_SUB_ORCHESTRATION,
    EventType.EVENT_SENT: ActionType.SEND_EVENT,
    EventType.TERMINATE_SENT: ActionType.TERMINATE_ORCHESTRATION,
}
_RESULTS = (EventType.TASK_COMPLETED, EventType.SUB_ORCHESTRATION_COMPLETED)
_FAILURES = (EventType.TASK_FAILED, EventType.SUB_ORCHESTRATION_FAILED)


@dataclass
class StepResult:
    """What one step decided: actions for the backend, and the custom status."""

    actions: list[dict[str, Any]] = field(default_factory=list)
    custom_status: str | None = None

    @property
    def completion(self) -> dict[str, Any] | None:
        for action in self.actions:
            if action["type"] == ActionType.COMPLETE_ORCHESTRATION.value:
                return action
        return None


class OrchestrationExecutor:
    """Replays one orchestrator function for one instance."""

    def __init__(self, orchestrator: Orchestrator, instance_id: str) -> None:
        self.orchestrator = orchestrator
        self.ctx = DaprWorkflowContext(instance_id)
        self._generator: Generator[Task[Any], Any, Any] | None = None
        self._waiting_on: Task[Any] | None = None
        self._suspended = False
        self._held: list[dict[str, Any]] = []

    def execute(self, past: list[dict[str, Any]], new: list[dict[str, Any]]) -> StepResult:
        ctx = self.ctx
        try:
            ctx.is_replaying = True
            for event in past:
                self._process(event)
            ctx.is_replaying = False
            for event in new:
                self._process(event)
        except NonDeterminismError as exc:
            ctx.pending_actions.clear()
            ctx.completion = None
            ctx.complete(
                RuntimeStatus.FAILED.value,
                failureDetails={"errorType": "NonDeterminismError", "errorMessage": str(exc), "isNonRetriable": True},
            )
        actions = [ctx.pending_actions[k] for k in sorted(ctx.pending_actions)]
        if ctx.completion is not None:
            actions.append(dict(ctx.completion, id=ctx.next_id()))
        return StepResult(actions=actions, custom_status=ctx.custom_status)

    # -- events -----------------------------------------------------------------------------------

    def _process(self, event: dict[str, Any]) -> None:
        ctx = self.ctx
        kind = event["type"]
        if ctx.completion is not None:
            carried = ctx.completion.get("carryoverEvents")
            if kind == EventType.EVENT_RAISED and carried is not None:
                # Continue-as-new with save_events: what came after it goes to the next execution.
                carried.append({"name": event.get("name"), "input": event.get("input")})
            return
        if self._suspended and kind not in (EventType.EXECUTION_RESUMED, EventType.EXECUTION_TERMINATED):
            self._held.append(event)
            return
        if kind == EventType.ORCHESTRATOR_STARTED:
            ctx.current_utc_datetime = parse_time(event["timestamp"])
        elif kind == EventType.EXECUTION_STARTED:
            ctx.execution_id = str(event.get("executionId", ""))
            self._start(decode(event.get("input")))
        elif kind in _ACTION_OF:
            self._match(event, _ACTION_OF[EventType(kind)])
        elif kind in _RESULTS or kind in _FAILURES or kind == EventType.TIMER_FIRED:
            self._outcome(event)
        elif kind == EventType.EVENT_RAISED:
            self._raised(event)
        elif kind == EventType.EXECUTION_TERMINATED:
            ctx.complete(RuntimeStatus.TERMINATED.value, result=event.get("input"))
        elif kind == EventType.EXECUTION_SUSPENDED:
            self._suspended = True
        elif kind == EventType.EXECUTION_RESUMED:
            self._suspended = False
            held, self._held = self._held, []
            for waiting in held:
                self._process(waiting)

    def _match(self, event: dict[str, Any], expected: ActionType) -> None:
        """A recorded action: the replayed code must have taken the same one under the same id."""
        task_id = int(event["eventId"])
        action = self.ctx.pending_actions.pop(task_id, None)
        recorded = f"{expected.value} {event.get('name') or ''}".strip()
        if action is None:
            raise NonDeterminismError(
                f"history has {recorded} as task #{task_id}, but the workflow code no longer starts it: "
                "the code changed while this instance was running"
            )
        if action["type"] != expected.value or (event.get("name") and action.get("name") != event.get("name")):
            found = f"{action['type']} {action.get('name') or ''}".strip()
            raise NonDeterminismError(
                f"task #{task_id}: history has {recorded}, but the replay started {found}: "
                "the code changed while this instance was running"
            )

    def _outcome(self, event: dict[str, Any]) -> None:
        ctx = self.ctx
        if event.get("executionId") and event["executionId"] != ctx.execution_id:
            return  # a late result of an execution before a continue-as-new
        kind = event["type"]
        task_id = int(event["timerId"] if kind == EventType.TIMER_FIRED else event.get("taskScheduledId", -1))
        task = ctx.pending_tasks.pop(task_id, None)
        if task is None:
            return  # delivered twice, or of a task already given up
        if isinstance(task, RetryTimer):
            retry = task.retry
            retry.attempt += 1
            ctx.schedule(retry.action, retry)
            return
        if kind in _FAILURES:
            details = FailureDetails.model_validate(event.get("failureDetails") or {})
            if isinstance(task, RetryableTask) and not details.is_non_retriable:
                delay = task.policy.delay(task.attempt, task.started, ctx.current_utc_datetime)
                if delay is not None:
                    ctx.retry_later(task, delay)
                    return
            what = "activity" if kind == EventType.TASK_FAILED else "child workflow"
            name = task.action.get("name") if isinstance(task, RetryableTask) else None
            attempts = f" after {task.attempt} attempts" if isinstance(task, RetryableTask) else ""
            label = f"{what} '{name}'" if name else f"{what} task #{task_id}"
            task.fail(f"{label} failed{attempts}: {details.error_type}: {details.error_message}", details)
        elif kind == EventType.TIMER_FIRED:
            task.complete(None)
        else:
            task.complete(decode(event.get("result")))
        self._resume()

    def _raised(self, event: dict[str, Any]) -> None:
        ctx = self.ctx
        key = str(event.get("name", "")).lower()
        waiting = ctx.waiting_events.get(key)
        if waiting:
            waiting.pop(0).complete(decode(event.get("input")))
            self._resume()
        else:
            ctx.received_events.setdefault(key, []).append(event.get("input"))

    # -- the orchestrator's code ------------------------------------------------------------------

    def _start(self, input: Any) -> None:
        try:
            result = self.orchestrator(self.ctx, input)
        except Exception as exc:
            self._fail(exc)
            return
        if inspect.isgenerator(result):
            self._generator = cast(Generator[Task[Any], Any, Any], result)
            self._advance(None, None)
        else:
            self.ctx.complete(RuntimeStatus.COMPLETED.value, result=_encode_output(result))

    def _resume(self) -> None:
        task = self._waiting_on
        if task is None or not task.is_complete or self.ctx.completion is not None:
            return
        if task.is_failed:
            self._advance(None, task.get_exception())
        else:
            self._advance(task.get_result(), None)

    def _advance(self, value: Any, error: BaseException | None) -> None:
        """Run the generator to its next yield; loop while what it yields is complete already."""
        gen = self._generator
        assert gen is not None
        while self.ctx.completion is None:
            try:
                yielded = gen.throw(error) if error is not None else gen.send(value)
            except StopIteration as stop:
                self.ctx.complete(RuntimeStatus.COMPLETED.value, result=_encode_output(stop.value))
                return
            except NonDeterminismError:
                raise
            except Exception as exc:
                self._fail(exc)
                return
            if not isinstance(yielded, Task):
                self._fail(TypeError(f"a workflow must yield tasks, it yielded {type(yielded).__name__}"))
                return
            self._waiting_on = yielded
            if not yielded.is_complete:
                return
            value, error = (None, yielded.get_exception()) if yielded.is_failed else (yielded.get_result(), None)

    def _fail(self, exc: BaseException) -> None:
        if isinstance(exc, TaskFailedError):
            inner = exc.details
            details = {
                "errorType": inner.error_type or "TaskFailedError",
                "errorMessage": str(exc),
                "stackTrace": inner.stack_trace,
            }
        else:
            details = {
                "errorType": type(exc).__name__,
                "errorMessage": str(exc),
                "stackTrace": "".join(traceback.format_exception(exc)),
            }
        self.ctx.complete(RuntimeStatus.FAILED.value, failureDetails={k: v for k, v in details.items() if v})


def _encode_output(value: Any) -> str | None:
    return encode(value)
