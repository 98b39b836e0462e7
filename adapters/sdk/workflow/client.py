"""The workflow client: start, inspect, signal and end instances, over the bus.

Method names are the Dapr Python SDK's (`DaprWorkflowClient`), as coroutines.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from nats.aio.client import Client

from adapters.sdk.workflow.context import encode, name_of
from kernel.client import BusClient
from kernel.errors import Codes, NatriumError
from kernel.subjects import Subjects
from schemas.workflow import (
    FailureDetails,
    HistoryReply,
    InstanceState,
    ListReply,
    RuntimeStatus,
    StartReply,
    WorkflowLayout,
    format_time,
    parse_time,
)

__all__ = ["DaprWorkflowClient", "WorkflowState", "WorkflowStatus"]


class WorkflowStatus(Enum):
    """Dapr's `WorkflowStatus`."""

    UNKNOWN = 0
    RUNNING = 1
    COMPLETED = 2
    FAILED = 3
    TERMINATED = 4
    PENDING = 5
    SUSPENDED = 6
    CONTINUED_AS_NEW = 7
    CANCELED = 8


@dataclass(frozen=True)
class WorkflowState:
    """An instance as `get_workflow_state` reports it (Dapr's field names)."""

    instance_id: str
    name: str
    runtime_status: WorkflowStatus
    created_at: dt.datetime
    last_updated_at: dt.datetime
    serialized_input: str | None
    serialized_output: str | None
    serialized_custom_status: str | None
    failure_details: FailureDetails | None

    @classmethod
    def of(cls, state: InstanceState, fetch_payloads: bool = True) -> WorkflowState:
        return cls(
            instance_id=state.instance_id,
            name=state.name,
            runtime_status=WorkflowStatus[state.runtime_status.value],
            created_at=parse_time(state.created_at),
            last_updated_at=parse_time(state.last_updated_at),
            serialized_input=state.input if fetch_payloads else None,
            serialized_output=state.output if fetch_payloads else None,
            serialized_custom_status=state.custom_status if fetch_payloads else None,
            failure_details=state.failure_details,
        )


class DaprWorkflowClient:
    """Manages the instances of one workflow component."""

    def __init__(
        self, nc: Client, *, component: str = "dapr", subjects: Subjects | None = None, timeout: float = 10.0
    ) -> None:
        self.nc = nc
        self.component = component
        self.subjects = subjects or Subjects.from_env()
        self.layout = WorkflowLayout(self.subjects, component)
        self.bus = BusClient(nc, timeout=timeout)

    def _subject(self, operation: str) -> str:
        return self.subjects.block("workflow", self.component, operation)

    async def schedule_new_workflow(
        self,
        workflow: Callable[..., Any] | str,
        *,
        input: Any = None,
        instance_id: str | None = None,
        start_at: dt.datetime | None = None,
    ) -> str:
        """Start an instance; with `start_at` it stays PENDING until then (a naive time is UTC)."""
        body = {"name": name_of(workflow), "instanceId": instance_id, "input": encode(input)}
        if start_at is not None:
            body["startAt"] = format_time(start_at if start_at.tzinfo else start_at.replace(tzinfo=dt.UTC))
        reply = await self.bus.request(self._subject("start"), _drop_none(body), StartReply)
        return reply.instance_id

    async def get_workflow_state(self, instance_id: str, *, fetch_payloads: bool = True) -> WorkflowState | None:
        try:
            state = await self.bus.request(self._subject("get"), {"instanceId": instance_id}, InstanceState)
        except NatriumError as exc:
            if exc.code == Codes.INSTANCE_ID_NOT_FOUND:
                return None
            raise
        return WorkflowState.of(state, fetch_payloads)

    async def wait_for_workflow_start(
        self, instance_id: str, *, fetch_payloads: bool = False, timeout_in_seconds: float = 60
    ) -> WorkflowState:
        return await self._wait(
            instance_id, lambda s: s.runtime_status != RuntimeStatus.PENDING, fetch_payloads, timeout_in_seconds
        )

    async def wait_for_workflow_completion(
        self, instance_id: str, *, fetch_payloads: bool = True, timeout_in_seconds: float = 60
    ) -> WorkflowState:
        """The instance once COMPLETED, FAILED or TERMINATED; TimeoutError after `timeout_in_seconds`."""
        return await self._wait(instance_id, lambda s: s.runtime_status.is_terminal, fetch_payloads, timeout_in_seconds)

    async def _wait(
        self, instance_id: str, done: Callable[[InstanceState], bool], fetch_payloads: bool, timeout: float
    ) -> WorkflowState:
        # Listen before reading, so a change between the read and the wait is not missed.
        changes: asyncio.Queue[bytes] = asyncio.Queue()

        async def on_change(msg: Any) -> None:
            changes.put_nowait(msg.data)

        sub = await self.nc.subscribe(self.layout.status(instance_id), cb=on_change)
        try:
            async with asyncio.timeout(timeout):
                state = await self.bus.request(self._subject("get"), {"instanceId": instance_id}, InstanceState)
                while not done(state):
                    try:
                        data = await asyncio.wait_for(changes.get(), 5.0)
                        state = InstanceState.model_validate_json(data)
                    except TimeoutError:
                        # A missed notice (a reconnect) must not stall the wait: read again now and then.
                        state = await self.bus.request(self._subject("get"), {"instanceId": instance_id}, InstanceState)
                return WorkflowState.of(state, fetch_payloads)
        finally:
            await sub.unsubscribe()

    async def raise_workflow_event(self, instance_id: str, event_name: str, *, data: Any = None) -> None:
        body = {"instanceId": instance_id, "eventName": event_name, "input": encode(data)}
        await self.bus.request(self._subject("raise"), _drop_none(body))

    async def terminate_workflow(self, instance_id: str, *, output: Any = None, recursive: bool = True) -> None:
        body = {"instanceId": instance_id, "output": encode(output), "recursive": recursive}
        await self.bus.request(self._subject("terminate"), _drop_none(body))

    async def pause_workflow(self, instance_id: str) -> None:
        await self.bus.request(self._subject("pause"), {"instanceId": instance_id})

    async def resume_workflow(self, instance_id: str) -> None:
        await self.bus.request(self._subject("resume"), {"instanceId": instance_id})

    async def purge_workflow(self, instance_id: str, *, recursive: bool = True) -> None:
        await self.bus.request(self._subject("purge"), {"instanceId": instance_id, "recursive": recursive})

    async def list_workflows(self, status: RuntimeStatus | None = None, limit: int = 100) -> list[InstanceState]:
        body: dict[str, Any] = {"limit": limit}
        if status is not None:
            body["status"] = status.value
        reply = await self.bus.request(self._subject("list"), body, ListReply)
        return reply.instances

    async def get_history(self, instance_id: str) -> list[dict[str, Any]]:
        """The instance's history events (natrium's; Durable Task's `GetInstanceHistory`)."""
        reply = await self.bus.request(self._subject("history"), {"instanceId": instance_id}, HistoryReply)
        return reply.events


def _drop_none(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if v is not None}
