"""The context an orchestrator and an activity see, with the Dapr Python SDK's names.

An orchestrator must be deterministic: it gets time from `ctx.current_utc_datetime`, never from
the clock, and does I/O only through activities. Each call that starts work (`call_activity`,
`create_timer`, ...) takes the next sequence number; replay checks the history recorded the
same call under the same number.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable
from typing import Any

from adapters.sdk.workflow.tasks import CompletableTask, RetryPolicy, Task
from schemas.workflow import MAX_INSTANCE_ID, ActionType, format_time

__all__ = ["DaprWorkflowContext", "WorkflowActivityContext", "name_of", "encode", "decode"]


def name_of(fn: Callable[..., Any] | str) -> str:
    """The name a workflow or activity is registered and called by."""
    if isinstance(fn, str):
        return fn
    return str(getattr(fn, "_natrium_workflow_name", None) or fn.__name__)


def encode(value: Any) -> str | None:
    """A payload as the JSON text history keeps."""
    return None if value is None else json.dumps(value)


def decode(text: str | None) -> Any:
    """A payload back from JSON text; text that is not JSON (an HTTP start's raw body) stays text."""
    if text is None or text == "":
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


class RetryableTask(CompletableTask[Any]):
    """An activity or child workflow call under a retry policy: on failure, a timer, then again."""

    def __init__(self, action: dict[str, Any], policy: RetryPolicy, started: dt.datetime) -> None:
        super().__init__()
        self.action = action
        self.policy = policy
        self.started = started
        self.attempt = 1


class RetryTimer(CompletableTask[None]):
    """The back-off timer between two attempts of a RetryableTask."""

    def __init__(self, retry: RetryableTask) -> None:
        super().__init__()
        self.retry = retry


class WorkflowActivityContext:
    """What an activity knows about the call: which workflow instance and which task."""

    def __init__(self, workflow_id: str, task_id: int, name: str) -> None:
        self.workflow_id = workflow_id
        self.task_id = task_id
        self.name = name


class DaprWorkflowContext:
    """The orchestrator's handle: start work, wait for it, read the replay-safe clock."""

    def __init__(self, instance_id: str) -> None:
        self.instance_id = instance_id
        self.execution_id = ""
        self.current_utc_datetime = dt.datetime.fromtimestamp(0, dt.UTC)
        self.is_replaying = True
        self._sequence = 0
        self.pending_actions: dict[int, dict[str, Any]] = {}
        self.pending_tasks: dict[int, CompletableTask[Any]] = {}
        self.waiting_events: dict[str, list[CompletableTask[Any]]] = {}
        self.received_events: dict[str, list[str | None]] = {}
        self.custom_status: str | None = None
        self.completion: dict[str, Any] | None = None

    # -- the orchestrator's API (Dapr's names) ----------------------------------------------------

    def call_activity(
        self, activity: Callable[..., Any] | str, *, input: Any = None, retry_policy: RetryPolicy | None = None
    ) -> Task[Any]:
        action = {"type": ActionType.SCHEDULE_TASK.value, "name": name_of(activity), "input": encode(input)}
        return self._start(action, retry_policy)

    def call_child_workflow(
        self,
        workflow: Callable[..., Any] | str,
        *,
        input: Any = None,
        instance_id: str | None = None,
        retry_policy: RetryPolicy | None = None,
    ) -> Task[Any]:
        action = {
            "type": ActionType.CREATE_SUB_ORCHESTRATION.value,
            "name": name_of(workflow),
            "input": encode(input),
            "instanceId": instance_id,
        }
        return self._start(action, retry_policy)

    def create_timer(self, fire_at: dt.datetime | dt.timedelta) -> Task[None]:
        if isinstance(fire_at, dt.timedelta):
            fire_at = self.current_utc_datetime + fire_at
        elif fire_at.tzinfo is None:
            fire_at = fire_at.replace(tzinfo=dt.UTC)
        task: CompletableTask[None] = CompletableTask()
        self._add_timer(fire_at, task)
        return task

    def wait_for_external_event(self, name: str) -> Task[Any]:
        key = name.lower()  # Dapr matches event names case-insensitively
        task: CompletableTask[Any] = CompletableTask()
        buffered = self.received_events.get(key)
        if buffered:
            task.complete(decode(buffered.pop(0)))
        else:
            self.waiting_events.setdefault(key, []).append(task)
        return task

    def continue_as_new(self, new_input: Any = None, *, save_events: bool = False) -> None:
        """Finish this execution and start the workflow again with `new_input` and an empty history.

        With `save_events`, external events not yet waited for are kept for the next execution.
        """
        carried: list[dict[str, Any]] | None = None
        if save_events:
            carried = [{"name": n, "input": i} for n, inputs in self.received_events.items() for i in inputs]
        self.complete("CONTINUED_AS_NEW", result=encode(new_input), carryoverEvents=carried)

    def set_custom_status(self, custom_status: Any) -> None:
        self.custom_status = (
            custom_status if isinstance(custom_status, str) or custom_status is None else encode(custom_status)
        )

    # -- for the executor ---------------------------------------------------------------------------

    def next_id(self) -> int:
        self._sequence += 1
        return self._sequence

    def _start(self, action: dict[str, Any], policy: RetryPolicy | None) -> Task[Any]:
        task: CompletableTask[Any] = (
            RetryableTask(action, policy, self.current_utc_datetime) if policy else CompletableTask()
        )
        self.schedule(action, task)
        return task

    def schedule(self, action: dict[str, Any], task: CompletableTask[Any]) -> None:
        """Give `action` the next id and wait for its outcome in `task`."""
        task_id = self.next_id()
        sent = dict(action, id=task_id)
        if sent["type"] == ActionType.CREATE_SUB_ORCHESTRATION.value and not sent.get("instanceId"):
            sent["instanceId"] = _child_id(self.instance_id, self.execution_id, task_id)
        self.pending_actions[task_id] = sent
        self.pending_tasks[task_id] = task

    def _add_timer(self, fire_at: dt.datetime, task: CompletableTask[Any]) -> None:
        task_id = self.next_id()
        self.pending_actions[task_id] = {
            "id": task_id,
            "type": ActionType.CREATE_TIMER.value,
            "fireAt": format_time(fire_at),
        }
        self.pending_tasks[task_id] = task

    def retry_later(self, task: RetryableTask, delay: dt.timedelta) -> None:
        self._add_timer(self.current_utc_datetime + delay, RetryTimer(task))

    def complete(self, status: str, **fields: Any) -> None:
        if self.completion is None:
            self.completion = {"type": ActionType.COMPLETE_ORCHESTRATION.value, "orchestrationStatus": status}
            self.completion.update({k: v for k, v in fields.items() if v is not None})


def _child_id(parent: str, execution: str, task_id: int) -> str:
    candidate = f"{parent}-{task_id}"
    if len(candidate) <= MAX_INSTANCE_ID:
        return candidate
    return hashlib.sha256(f"{parent}/{execution}/{task_id}".encode()).hexdigest()[:40]
