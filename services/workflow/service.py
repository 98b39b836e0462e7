"""The workflow block on the bus: `<root>.workflow.<component>.<operation>`.

Management (start, get, raise, terminate, pause, resume, purge, list, history) and the worker
side of the Durable Task protocol (complete_orchestration, complete_activity). Workers take
their work items from the component's work stream themselves (see schemas/workflow.py).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from kernel.components import Component
from kernel.errors import Codes, NatriumError, malformed
from kernel.jetstream import transport_errors_as
from kernel.service import ComponentService, Endpoint, RequestContext
from schemas.workflow import (
    CompleteActivityRequest,
    CompleteOrchestrationReply,
    CompleteOrchestrationRequest,
    HistoryReply,
    InstanceRequest,
    InstanceState,
    ListReply,
    ListRequest,
    RaiseEventRequest,
    StartReply,
    StartRequest,
    TerminateRequest,
)
from services.workflow.engine import WorkflowEngine
from services.workflow.relay import Relay

__all__ = ["WorkflowService", "DEFAULT_COMPONENT", "SUPPORTED_TYPES"]

DEFAULT_COMPONENT = Component(name="dapr", type="workflow.dapr")
SUPPORTED_TYPES = ("workflow.dapr", "workflow.nats")


class _Empty(BaseModel):
    pass


class WorkflowService(ComponentService[WorkflowEngine]):
    """Serves every workflow component; each has its own history, work and timer streams."""

    block = "workflow"
    default_component = DEFAULT_COMPONENT
    supported_types = SUPPORTED_TYPES

    def __post_init__(self) -> None:
        super().__post_init__()
        self.relays: list[Relay] = []

    def endpoints(self) -> list[Endpoint[Any]]:
        return [
            Endpoint("start", StartRequest, self.start_workflow),
            Endpoint("get", InstanceRequest, self.get_workflow),
            Endpoint("raise", RaiseEventRequest, self.raise_event),
            Endpoint("terminate", TerminateRequest, self.terminate),
            Endpoint("pause", InstanceRequest, self.pause),
            Endpoint("resume", InstanceRequest, self.resume),
            Endpoint("purge", InstanceRequest, self.purge),
            Endpoint("list", ListRequest, self.list_instances),
            Endpoint("history", InstanceRequest, self.get_history),
            Endpoint("complete_orchestration", CompleteOrchestrationRequest, self.complete_orchestration),
            Endpoint("complete_activity", CompleteActivityRequest, self.complete_activity),
        ]

    async def open_component(self, component: Component) -> WorkflowEngine:
        engine = WorkflowEngine(self.nc, self.subjects, component)
        await engine.open()
        return engine

    async def setup(self) -> None:
        await super().setup()
        for engine in self.stores.values():
            relay = Relay(engine)
            await relay.start()
            self.relays.append(relay)

    async def teardown(self) -> None:
        for relay in self.relays:
            await relay.stop()

    def not_found(self, name: str) -> NatriumError:
        return NatriumError(
            Codes.WORKFLOW_COMPONENT_NOT_FOUND, f"workflow component '{name}' is not configured", status=400
        )

    # -- management -------------------------------------------------------------------------------

    @transport_errors_as(Codes.START_WORKFLOW)
    async def start_workflow(self, request: StartRequest, ctx: RequestContext) -> StartReply:
        instance_id = await self.store(ctx).start(
            request.name, request.instance_id, request.input, start_at=request.start_at
        )
        return StartReply(instance_id=instance_id)

    @transport_errors_as(Codes.GET_WORKFLOW)
    async def get_workflow(self, request: InstanceRequest, ctx: RequestContext) -> InstanceState:
        return await self.store(ctx).get(_required(request.instance_id))

    @transport_errors_as(Codes.RAISE_EVENT_WORKFLOW)
    async def raise_event(self, request: RaiseEventRequest, ctx: RequestContext) -> _Empty:
        await self.store(ctx).raise_event(_required(request.instance_id), request.event_name, request.input)
        return _Empty()

    @transport_errors_as(Codes.TERMINATE_WORKFLOW)
    async def terminate(self, request: TerminateRequest, ctx: RequestContext) -> _Empty:
        await self.store(ctx).terminate(_required(request.instance_id), request.output, request.recursive)
        return _Empty()

    @transport_errors_as(Codes.PAUSE_WORKFLOW)
    async def pause(self, request: InstanceRequest, ctx: RequestContext) -> _Empty:
        await self.store(ctx).pause(_required(request.instance_id))
        return _Empty()

    @transport_errors_as(Codes.RESUME_WORKFLOW)
    async def resume(self, request: InstanceRequest, ctx: RequestContext) -> _Empty:
        await self.store(ctx).resume(_required(request.instance_id))
        return _Empty()

    @transport_errors_as(Codes.PURGE_WORKFLOW)
    async def purge(self, request: InstanceRequest, ctx: RequestContext) -> _Empty:
        await self.store(ctx).purge(_required(request.instance_id), request.recursive)
        return _Empty()

    @transport_errors_as(Codes.GET_WORKFLOW)
    async def list_instances(self, request: ListRequest, ctx: RequestContext) -> ListReply:
        return ListReply(instances=await self.store(ctx).list(request.status, request.limit))

    @transport_errors_as(Codes.GET_WORKFLOW)
    async def get_history(self, request: InstanceRequest, ctx: RequestContext) -> HistoryReply:
        engine = self.store(ctx)
        await engine.get(_required(request.instance_id))
        return HistoryReply(events=await engine.history.read(request.instance_id))

    # -- workers ----------------------------------------------------------------------------------

    @transport_errors_as(Codes.INTERNAL)
    async def complete_orchestration(
        self, request: CompleteOrchestrationRequest, ctx: RequestContext
    ) -> CompleteOrchestrationReply:
        return CompleteOrchestrationReply(committed=await self.store(ctx).commit(request))

    @transport_errors_as(Codes.INTERNAL)
    async def complete_activity(self, request: CompleteActivityRequest, ctx: RequestContext) -> _Empty:
        await self.store(ctx).complete_activity(request)
        return _Empty()


def _required(instance_id: str) -> str:
    if not instance_id:
        raise malformed("instanceId is required")
    return instance_id
