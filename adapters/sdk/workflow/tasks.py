"""What an orchestrator yields: tasks that complete from history, and their combinators.

`when_all` fails as soon as one child fails (Durable Task's rule); `when_any` completes with the
first child that completes (and returns that child task).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from schemas.workflow import FailureDetails

__all__ = [
    "CompletableTask",
    "NonDeterminismError",
    "RetryPolicy",
    "Task",
    "TaskFailedError",
    "WhenAllTask",
    "WhenAnyTask",
    "when_all",
    "when_any",
]

T = TypeVar("T")


class TaskFailedError(Exception):
    """An activity or child workflow failed; `details` says how (raised inside the orchestrator)."""

    def __init__(self, message: str, details: FailureDetails) -> None:
        super().__init__(message)
        self.details = details


class NonDeterminismError(Exception):
    """The orchestrator's code did something else on replay than the history records."""


@dataclass(frozen=True)
class RetryPolicy:
    """How an activity or child workflow is retried (Dapr's `RetryPolicy` fields)."""

    first_retry_interval: dt.timedelta
    max_number_of_attempts: int
    backoff_coefficient: float = 1.0
    max_retry_interval: dt.timedelta | None = None
    retry_timeout: dt.timedelta | None = None

    def __post_init__(self) -> None:
        if self.first_retry_interval <= dt.timedelta(0):
            raise ValueError("first_retry_interval must be positive")
        if self.max_number_of_attempts < 1:
            raise ValueError("max_number_of_attempts must be at least 1")
        if self.backoff_coefficient < 1:
            raise ValueError("backoff_coefficient must be at least 1")

    def delay(self, attempt: int, started: dt.datetime, now: dt.datetime) -> dt.timedelta | None:
        """The wait before attempt `attempt + 1` (attempts count from 1), or None to give up."""
        if attempt >= self.max_number_of_attempts:
            return None
        seconds = self.first_retry_interval.total_seconds() * self.backoff_coefficient ** (attempt - 1)
        delay = dt.timedelta(seconds=seconds)
        if self.max_retry_interval is not None:
            delay = min(delay, self.max_retry_interval)
        if self.retry_timeout is not None and now + delay > started + self.retry_timeout:
            return None
        return delay


class Task(Generic[T]):
    """A unit of work an orchestrator waits for."""

    def __init__(self) -> None:
        self._result: T | None = None
        self._exception: TaskFailedError | None = None
        self._complete = False
        self._parents: list[CompositeTask[Any]] = []

    @property
    def is_complete(self) -> bool:
        return self._complete

    @property
    def is_failed(self) -> bool:
        return self._exception is not None

    def get_result(self) -> T:
        if not self._complete:
            raise RuntimeError("the task is not complete")
        if self._exception is not None:
            raise self._exception
        return self._result  # type: ignore[return-value]

    def get_exception(self) -> TaskFailedError | None:
        return self._exception

    def _notify(self) -> None:
        for parent in self._parents:
            parent.on_child_completed(self)


class CompletableTask(Task[T]):
    """Completed (or failed) by a history event."""

    def complete(self, result: T) -> None:
        if self._complete:
            return
        self._result = result
        self._complete = True
        self._notify()

    def fail(self, message: str, details: FailureDetails) -> None:
        if self._complete:
            return
        self._exception = TaskFailedError(message, details)
        self._complete = True
        self._notify()


class CompositeTask(Task[T]):
    def __init__(self, tasks: list[Task[Any]]) -> None:
        super().__init__()
        self.children = list(tasks)
        for task in self.children:
            task._parents.append(self)
        for task in self.children:
            if task.is_complete and not self._complete:
                self.on_child_completed(task)

    def on_child_completed(self, task: Task[Any]) -> None:
        raise NotImplementedError


class WhenAllTask(CompositeTask[list[Any]]):
    def __init__(self, tasks: list[Task[Any]]) -> None:
        super().__init__(tasks)
        if not self.children and not self._complete:
            self._finish([])

    def _finish(self, result: list[Any]) -> None:
        self._result = result
        self._complete = True
        self._notify()

    def on_child_completed(self, task: Task[Any]) -> None:
        if self._complete:
            return
        if task.is_failed:
            self._exception = task.get_exception()
            self._complete = True
            self._notify()
        elif all(child.is_complete for child in self.children):
            self._finish([child.get_result() for child in self.children])


class WhenAnyTask(CompositeTask[Task[Any]]):
    def on_child_completed(self, task: Task[Any]) -> None:
        if self._complete:
            return
        self._result = task
        self._complete = True
        self._notify()


def when_all(tasks: list[Task[Any]]) -> WhenAllTask:
    """A task that completes with every result, in order, once all of `tasks` completed."""
    return WhenAllTask(tasks)


def when_any(tasks: list[Task[Any]]) -> WhenAnyTask:
    """A task that completes with the first of `tasks` to complete."""
    if not tasks:
        raise ValueError("when_any needs at least one task")
    return WhenAnyTask(tasks)
