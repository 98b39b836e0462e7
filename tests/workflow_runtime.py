"""A workflow service on its own subject root, with workers and a client for it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from nats.aio.client import Client

from adapters.sdk.workflow import DaprWorkflowClient, WorkflowRuntime
from kernel.components import Component, ComponentSet
from kernel.subjects import Subjects
from schemas.workflow import WorkflowLayout
from services.workflow import WorkflowService


class WorkflowHarness:
    """The service (component `dapr`), a client, and the workers a test starts."""

    def __init__(self, nc: Client, subjects: Subjects, service: WorkflowService) -> None:
        self.nc = nc
        self.subjects = subjects
        self.service = service
        self.client = DaprWorkflowClient(nc, subjects=subjects)
        self.layout = WorkflowLayout(subjects, "dapr")
        self.workers: list[WorkflowRuntime] = []

    def worker(self, **options: Any) -> WorkflowRuntime:
        """A new (not started) worker on this root; stopped with the harness."""
        runtime = WorkflowRuntime(self.nc, subjects=self.subjects, **options)
        self.workers.append(runtime)
        return runtime

    async def run(self, workflow: Any, input: Any = None, timeout: float = 30) -> Any:
        instance_id = await self.client.schedule_new_workflow(workflow, input=input)
        return await self.client.wait_for_workflow_completion(instance_id, timeout_in_seconds=timeout)

    async def history_types(self, instance_id: str) -> list[str]:
        return [e["type"] for e in await self.client.get_history(instance_id)]


async def start_service(nc: Client, subjects: Subjects, **metadata: str) -> WorkflowService:
    component = Component(name="dapr", type="workflow.dapr", metadata=dict(metadata))
    service = WorkflowService(nc, subjects=subjects, components=ComponentSet(components=[component]))
    await service.start()
    return service


async def delete_streams(nc: Client, layout: WorkflowLayout) -> None:
    js = nc.jetstream()
    for stream in (layout.history_stream, layout.work_stream, layout.timer_stream, f"KV_{layout.metadata_bucket}"):
        with contextlib.suppress(Exception):
            await js.delete_stream(stream)


@contextlib.asynccontextmanager
async def workflow_harness(nc: Client, subjects: Subjects, **metadata: str) -> AsyncIterator[WorkflowHarness]:
    service = await start_service(nc, subjects, **metadata)
    harness = WorkflowHarness(nc, subjects, service)
    try:
        yield harness
    finally:
        for worker in harness.workers:
            await worker.shutdown()
        await service.stop()
        await delete_streams(nc, harness.layout)
