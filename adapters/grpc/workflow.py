"""The `Dapr` service's workflow RPCs (Alpha1 and Beta1): the bus requests of adapters/gateway/workflow.py."""

from __future__ import annotations

from typing import Any

from dapr.proto.runtime.v1 import workflow_pb2
from google.protobuf import empty_pb2, timestamp_pb2

from adapters.gateway.errors import transport_as
from adapters.gateway.workflow import describe
from adapters.grpc.rpc import Rpcs, rpc
from kernel.errors import Codes, NatriumError
from schemas.workflow import InstanceState, StartReply, parse_time

__all__ = ["WorkflowRpcs"]

_DEFAULT_COMPONENT = "dapr"


def timestamp(text: str) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(parse_time(text))
    return stamp


def _text(data: bytes) -> str | None:
    if not data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise NatriumError(Codes.MALFORMED_REQUEST, "the workflow payload is not UTF-8 text", status=400) from None


class WorkflowRpcs(Rpcs):
    async def _workflow(
        self, component: str, operation: str, body: dict[str, Any], code: str, reply: Any = None
    ) -> Any:
        gateway = self.gateway
        subject = gateway.subjects.block("workflow", component or _DEFAULT_COMPONENT, operation)
        try:
            return await gateway.bus.request(subject, body, reply_model=reply)
        except NatriumError as exc:
            raise transport_as(exc, code) from None

    @rpc
    async def StartWorkflowBeta1(
        self, request: workflow_pb2.StartWorkflowRequest, context: Any
    ) -> workflow_pb2.StartWorkflowResponse:
        body: dict[str, Any] = {"name": request.workflow_name}
        if request.instance_id:
            body["instanceId"] = request.instance_id
        payload = _text(request.input)
        if payload is not None:
            body["input"] = payload
        reply: StartReply = await self._workflow(
            request.workflow_component, "start", body, Codes.START_WORKFLOW, StartReply
        )
        return workflow_pb2.StartWorkflowResponse(instance_id=reply.instance_id)

    @rpc
    async def GetWorkflowBeta1(
        self, request: workflow_pb2.GetWorkflowRequest, context: Any
    ) -> workflow_pb2.GetWorkflowResponse:
        body = {"instanceId": request.instance_id}
        state: InstanceState = await self._workflow(
            request.workflow_component, "get", body, Codes.GET_WORKFLOW, InstanceState
        )
        return workflow_pb2.GetWorkflowResponse(
            instance_id=state.instance_id,
            workflow_name=state.name,
            created_at=timestamp(state.created_at),
            last_updated_at=timestamp(state.last_updated_at),
            runtime_status=state.runtime_status.value,
            properties=describe(state)["properties"],
        )

    async def _change(self, request: Any, operation: str, code: str) -> empty_pb2.Empty:
        await self._workflow(request.workflow_component, operation, {"instanceId": request.instance_id}, code)
        return empty_pb2.Empty()

    @rpc
    async def TerminateWorkflowBeta1(
        self, request: workflow_pb2.TerminateWorkflowRequest, context: Any
    ) -> empty_pb2.Empty:
        return await self._change(request, "terminate", Codes.TERMINATE_WORKFLOW)

    @rpc
    async def PauseWorkflowBeta1(self, request: workflow_pb2.PauseWorkflowRequest, context: Any) -> empty_pb2.Empty:
        return await self._change(request, "pause", Codes.PAUSE_WORKFLOW)

    @rpc
    async def ResumeWorkflowBeta1(self, request: workflow_pb2.ResumeWorkflowRequest, context: Any) -> empty_pb2.Empty:
        return await self._change(request, "resume", Codes.RESUME_WORKFLOW)

    @rpc
    async def PurgeWorkflowBeta1(self, request: workflow_pb2.PurgeWorkflowRequest, context: Any) -> empty_pb2.Empty:
        return await self._change(request, "purge", Codes.PURGE_WORKFLOW)

    @rpc
    async def RaiseEventWorkflowBeta1(
        self, request: workflow_pb2.RaiseEventWorkflowRequest, context: Any
    ) -> empty_pb2.Empty:
        body: dict[str, Any] = {"instanceId": request.instance_id, "eventName": request.event_name}
        payload = _text(request.event_data)
        if payload is not None:
            body["input"] = payload
        await self._workflow(request.workflow_component, "raise", body, Codes.RAISE_EVENT_WORKFLOW)
        return empty_pb2.Empty()

    # The Alpha1 RPCs take the same messages.
    StartWorkflowAlpha1 = StartWorkflowBeta1
    GetWorkflowAlpha1 = GetWorkflowBeta1
    TerminateWorkflowAlpha1 = TerminateWorkflowBeta1
    PauseWorkflowAlpha1 = PauseWorkflowBeta1
    ResumeWorkflowAlpha1 = ResumeWorkflowBeta1
    PurgeWorkflowAlpha1 = PurgeWorkflowBeta1
    RaiseEventWorkflowAlpha1 = RaiseEventWorkflowBeta1
