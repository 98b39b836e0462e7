"""The Durable Task protocol (`TaskHubSidecarService`) that Dapr's workflow SDKs speak, over the bus.

Management RPCs are the workflow block's bus requests (the same ones `/v1.0/workflows/...` makes);
`GetWorkItems` streams work items from the component's work queue (taskhub_work.py) and the two
completions go back as the block's `complete_orchestration` / `complete_activity` requests. The
workflow service stays the only backend; translation lives in taskhub_codec.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

from google.protobuf import empty_pb2, wrappers_pb2

from adapters.gateway.context import Gateway
from adapters.gateway.errors import transport_as
from adapters.grpc.rpc import Rpcs, check_token, rpc
from adapters.grpc.taskhub_codec import (
    Unsupported,
    action_of,
    failure_of,
    history_events,
    pb,
    pb_grpc,
    status_of,
    text_of,
    time_text,
    timestamp,
    unsupported_failure,
    workflow_state,
)
from adapters.grpc.taskhub_work import TaskHub, Token
from kernel.errors import Codes, NatriumError
from schemas.workflow import (
    CompleteOrchestrationReply,
    HistoryReply,
    InstanceState,
    ListReply,
    RuntimeStatus,
    StartReply,
)

__all__ = ["TaskHubService", "add_to_server"]

SERVICE = "TaskHubSidecarService"
_TERMINAL = [s for s in RuntimeStatus if s.is_terminal]


class TaskHubService(Rpcs, pb_grpc.TaskHubSidecarServiceServicer):
    """Durable Task's sidecar service for the `dapr` workflow component (the one Dapr's SDKs use)."""

    service_name = SERVICE

    def __init__(self, gateway: Gateway, shutdown: asyncio.Event | None = None, component: str = "dapr") -> None:
        super().__init__(gateway, shutdown)
        self.hub = TaskHub(gateway, component)

    async def _call(self, operation: str, body: dict[str, Any], code: str, reply: Any = None) -> Any:
        try:
            return await self.gateway.bus.request(self.hub.subject(operation), body, reply)
        except NatriumError as exc:
            raise transport_as(exc, code) from None

    async def _state(self, instance_id: str) -> InstanceState | None:
        try:
            state: InstanceState = await self._call(
                "get", {"instanceId": instance_id}, Codes.GET_WORKFLOW, InstanceState
            )
        except NatriumError as exc:
            if exc.code == Codes.INSTANCE_ID_NOT_FOUND:
                return None
            raise
        return state

    # -- management -------------------------------------------------------------------------------

    @rpc
    async def Hello(self, request: empty_pb2.Empty, context: Any) -> empty_pb2.Empty:
        return empty_pb2.Empty()

    @rpc
    async def StartInstance(self, request: Any, context: Any) -> Any:
        body = {"name": request.name, "instanceId": request.instanceId or None, "input": text_of(request, "input")}
        if request.HasField("scheduledStartTimestamp") and request.scheduledStartTimestamp.seconds > 0:
            body["startAt"] = time_text(request.scheduledStartTimestamp)
        reply: StartReply = await self._call("start", _drop_none(body), Codes.START_WORKFLOW, StartReply)
        return pb.CreateInstanceResponse(instanceId=reply.instance_id)

    @rpc
    async def GetInstance(self, request: Any, context: Any) -> Any:
        return _instance_response(await self._state(request.instanceId), request.getInputsAndOutputs)

    @rpc
    async def WaitForInstanceStart(self, request: Any, context: Any) -> Any:
        state = await self._wait(request.instanceId, lambda s: s.runtime_status is not RuntimeStatus.PENDING)
        return _instance_response(state, request.getInputsAndOutputs)

    @rpc
    async def WaitForInstanceCompletion(self, request: Any, context: Any) -> Any:
        state = await self._wait(request.instanceId, lambda s: s.runtime_status.is_terminal)
        return _instance_response(state, request.getInputsAndOutputs)

    async def _wait(self, instance_id: str, done: Callable[[InstanceState], bool]) -> InstanceState | None:
        """The instance once `done` holds; the caller's deadline bounds the wait."""
        changes: asyncio.Queue[bytes] = asyncio.Queue()

        async def on_change(msg: Any) -> None:
            changes.put_nowait(msg.data)

        # Listen before reading, so a change between the read and the wait is not missed.
        sub = await self.gateway.nc.subscribe(self.hub.layout.status(instance_id), cb=on_change)
        try:
            state = await self._state(instance_id)
            while state is not None and not done(state):
                try:
                    state = InstanceState.model_validate_json(await asyncio.wait_for(changes.get(), 5.0))
                except TimeoutError:  # a notice lost to a reconnect must not stall the wait
                    state = await self._state(instance_id)
            return state
        finally:
            await sub.unsubscribe()

    @rpc
    async def RaiseEvent(self, request: Any, context: Any) -> Any:
        body = {"instanceId": request.instanceId, "eventName": request.name, "input": text_of(request, "input")}
        await self._call("raise", _drop_none(body), Codes.RAISE_EVENT_WORKFLOW)
        return pb.RaiseEventResponse()

    @rpc
    async def TerminateInstance(self, request: Any, context: Any) -> Any:
        body = {"instanceId": request.instanceId, "output": text_of(request, "output"), "recursive": request.recursive}
        await self._call("terminate", _drop_none(body), Codes.TERMINATE_WORKFLOW)
        return pb.TerminateResponse()

    @rpc
    async def SuspendInstance(self, request: Any, context: Any) -> Any:
        await self._call("pause", {"instanceId": request.instanceId}, Codes.PAUSE_WORKFLOW)
        return pb.SuspendResponse()

    @rpc
    async def ResumeInstance(self, request: Any, context: Any) -> Any:
        await self._call("resume", {"instanceId": request.instanceId}, Codes.RESUME_WORKFLOW)
        return pb.ResumeResponse()

    @rpc
    async def PurgeInstances(self, request: Any, context: Any) -> Any:
        if request.WhichOneof("request") == "purgeInstanceFilter":
            targets = await self._filtered(request.purgeInstanceFilter)
        else:
            targets = [request.instanceId]
        deleted = 0
        for instance_id in targets:
            try:
                body = {"instanceId": instance_id, "recursive": request.recursive}
                await self._call("purge", body, Codes.PURGE_WORKFLOW)
            except NatriumError as exc:
                if exc.code != Codes.INSTANCE_ID_NOT_FOUND:
                    raise
                continue
            deleted += 1
        return pb.PurgeInstancesResponse(deletedInstanceCount=deleted, isComplete=wrappers_pb2.BoolValue(value=True))

    async def _filtered(self, purge_filter: Any) -> list[str]:
        statuses = [status_of(s) for s in purge_filter.runtimeStatus] or _TERMINAL
        since = purge_filter.createdTimeFrom.ToDatetime() if purge_filter.HasField("createdTimeFrom") else None
        until = purge_filter.createdTimeTo.ToDatetime() if purge_filter.HasField("createdTimeTo") else None
        out: list[str] = []
        for status in statuses:
            listed: ListReply = await self._call(
                "list", {"status": status.value, "limit": 10_000}, Codes.PURGE_WORKFLOW, ListReply
            )
            for state in listed.instances:
                created = timestamp(state.created_at).ToDatetime()
                if (since is None or created >= since) and (until is None or created < until):
                    out.append(state.instance_id)
        return out

    @rpc
    async def ListInstanceIDs(self, request: Any, context: Any) -> Any:
        offset = int(request.continuationToken) if request.continuationToken.isdigit() else 0
        size = request.pageSize or 100
        listed: ListReply = await self._call(
            "list", {"limit": min(offset + size, 10_000)}, Codes.GET_WORKFLOW, ListReply
        )
        page = [s.instance_id for s in listed.instances[offset : offset + size]]
        more = len(listed.instances) >= offset + size
        return pb.ListInstanceIDsResponse(
            instanceIds=page, continuationToken=str(offset + size) if more and page else None
        )

    @rpc
    async def GetInstanceHistory(self, request: Any, context: Any) -> Any:
        reply: HistoryReply = await self._call(
            "history", {"instanceId": request.instanceId}, Codes.GET_WORKFLOW, HistoryReply
        )
        return pb.GetInstanceHistoryResponse(events=history_events(reply.events))

    @rpc
    async def RerunWorkflowFromEvent(self, request: Any, context: Any) -> Any:
        raise NatriumError(
            Codes.API_UNIMPLEMENTED, f"natrium does not serve {SERVICE}/RerunWorkflowFromEvent yet", status=501
        )

    # -- workers ----------------------------------------------------------------------------------

    async def GetWorkItems(self, request: Any, context: Any) -> AsyncIterator[Any]:
        await check_token(self.gateway, context)
        stream = await self.hub.open_stream()
        try:
            while True:
                yield await stream.items.get()
        finally:
            # The call is being cancelled: give its items back from a task of its own.
            self.hub.release(stream)

    @rpc
    async def CompleteOrchestratorTask(self, request: Any, context: Any) -> Any:
        token = Token.decode(request.completionToken)
        actions: list[dict[str, Any]] = []
        for action in request.actions:
            try:
                actions.append(action_of(action))
            except Unsupported as problem:
                actions = [unsupported_failure(action.id, problem)]
                break
        body = {
            "instanceId": token.i,
            "executionId": token.e,
            "expectedSeq": token.q,
            "startedAt": token.t,
            "actions": actions,
            "customStatus": text_of(request, "customStatus"),
        }
        reply: CompleteOrchestrationReply = await self._call(
            "complete_orchestration", _drop_none(body), Codes.INTERNAL, CompleteOrchestrationReply
        )
        self.hub.resolve(token, reply.committed)
        return pb.CompleteTaskResponse()

    CompleteWorkflowTask = CompleteOrchestratorTask

    @rpc
    async def CompleteActivityTask(self, request: Any, context: Any) -> Any:
        token = Token.decode(request.completionToken)
        body: dict[str, Any] = {"instanceId": token.i, "executionId": token.e, "taskId": token.k}
        if request.HasField("failureDetails"):
            body["failureDetails"] = failure_of(request.failureDetails)
        else:
            body["result"] = text_of(request, "result")
        await self._call("complete_activity", _drop_none(body), Codes.INTERNAL)
        self.hub.resolve(token, True)
        return pb.CompleteTaskResponse()


def _instance_response(state: InstanceState | None, payloads: bool) -> Any:
    if state is None:
        return pb.GetInstanceResponse(exists=False)
    return pb.GetInstanceResponse(exists=True, workflowState=workflow_state(state, payloads))


def _drop_none(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if v is not None}


def add_to_server(gateway: Gateway, server: Any, shutdown: asyncio.Event | None = None) -> TaskHubService:
    service = TaskHubService(gateway, shutdown)
    pb_grpc.add_TaskHubSidecarServiceServicer_to_server(service, server)
    return service
