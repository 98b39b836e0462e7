"""Actor RPCs: each one is the `ActorClient` call `/v1.0/actors/...` makes (adapters/gateway/actors.py).

Method answers and errors follow the HTTP route's rules (`method_error`, `restated`), so a call
gets the same outcome whichever API the caller speaks. Reminder `data` arrives as bytes: JSON bytes
are kept as the JSON value, anything else as base64 text, which is what the Python SDK sends over
HTTP, so an actor reads the same `data` whichever way its reminder was registered.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from dapr.proto.runtime.v1 import actors_pb2
from google.protobuf import any_pb2, empty_pb2

from adapters.gateway.actors import invoke_actor, method_error, require_active, restated
from adapters.grpc.rpc import Rpcs, rpc
from kernel.errors import Codes, NatriumError
from schemas.actors import ReminderRequest, StateOperation, TimerRequest

__all__ = ["ActorRpcs"]


def _data(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return base64.b64encode(raw).decode()


def _bytes(value: Any) -> bytes:
    """A stored reminder's `data` back as bytes: base64 text is decoded, a JSON value is its JSON."""
    if value is None:
        return b""
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            pass
    return json.dumps(value, separators=(",", ":")).encode()


def _times(request: Any) -> dict[str, Any]:
    fields = {"dueTime": request.due_time, "period": request.period, "ttl": request.ttl}
    return {k: v for k, v in fields.items() if v}


class ActorRpcs(Rpcs):
    @rpc
    async def InvokeActor(self, request: actors_pb2.InvokeActorRequest, context: Any) -> actors_pb2.InvokeActorResponse:
        headers = dict(request.metadata)
        try:
            reply = await invoke_actor(
                self.gateway, request.actor_type, request.actor_id, request.method, request.data, headers
            )
        except NatriumError as exc:
            raise restated(exc, Codes.ACTOR_INVOKE_METHOD, "error invoke actor method") from None
        error = method_error(reply, request.actor_type, request.actor_id, request.method)
        if error is not None:
            raise error
        return actors_pb2.InvokeActorResponse(data=reply.body)

    @rpc
    async def GetActorState(
        self, request: actors_pb2.GetActorStateRequest, context: Any
    ) -> actors_pb2.GetActorStateResponse:
        try:
            value = await self.gateway.actors.get_state(request.actor_type, request.actor_id, request.key)
        except NatriumError as exc:
            raise restated(exc, Codes.ACTOR_STATE_GET, "error getting actor state") from None
        return actors_pb2.GetActorStateResponse(data=value or b"")

    @rpc
    async def ExecuteActorStateTransaction(
        self, request: actors_pb2.ExecuteActorStateTransactionRequest, context: Any
    ) -> empty_pb2.Empty:
        await require_active(self.gateway, request.actor_type, request.actor_id)
        operations = []
        for op in request.operations:
            if op.operationType not in ("upsert", "delete"):
                raise NatriumError(
                    Codes.ACTOR_STATE_TRANSACTION_SAVE,
                    f"error saving actor transaction state: operation type {op.operationType} not supported",
                    status=500,
                )
            body: dict[str, Any] = {"key": op.key, "metadata": dict(op.metadata)}
            if op.operationType == "upsert":
                # The value's bytes are stored as they came, as daprd stores a gRPC value.
                body["value"] = op.value.value
            operations.append(StateOperation(operation=op.operationType, request=body))
        try:
            await self.gateway.actors.transaction(request.actor_type, request.actor_id, operations)
        except NatriumError as exc:
            raise restated(exc, Codes.ACTOR_STATE_TRANSACTION_SAVE, "error saving actor transaction state") from None
        return empty_pb2.Empty()

    @rpc
    async def RegisterActorReminder(
        self, request: actors_pb2.RegisterActorReminderRequest, context: Any
    ) -> empty_pb2.Empty:
        reminder = ReminderRequest.model_validate({**_times(request), "data": _data(request.data)})
        try:
            await self.gateway.actors.create_reminder(request.actor_type, request.actor_id, request.name, reminder)
        except NatriumError as exc:
            raise restated(exc, Codes.ACTOR_REMINDER_CREATE, "error creating actor reminder") from None
        return empty_pb2.Empty()

    @rpc
    async def GetActorReminder(
        self, request: actors_pb2.GetActorReminderRequest, context: Any
    ) -> actors_pb2.GetActorReminderResponse:
        try:
            found = await self.gateway.actors.get_reminder(request.actor_type, request.actor_id, request.name)
        except NatriumError as exc:
            raise restated(exc, Codes.ACTOR_REMINDER_GET, "error getting actor reminder") from None
        if found is None:
            raise NatriumError(Codes.ACTOR_REMINDER_NOT_FOUND, f"actor reminder not found: {request.name}", status=404)
        return actors_pb2.GetActorReminderResponse(
            actor_type=request.actor_type,
            actor_id=request.actor_id,
            due_time=str(found.get("dueTime") or ""),
            period=str(found.get("period") or ""),
            ttl=str(found.get("ttl") or ""),
            data=any_pb2.Any(value=_bytes(found.get("data"))),
        )

    @rpc
    async def UnregisterActorReminder(
        self, request: actors_pb2.UnregisterActorReminderRequest, context: Any
    ) -> empty_pb2.Empty:
        try:
            await self.gateway.actors.delete_reminder(request.actor_type, request.actor_id, request.name)
        except NatriumError as exc:
            raise restated(exc, Codes.ACTOR_REMINDER_DELETE, "error deleting actor reminder") from None
        return empty_pb2.Empty()

    @rpc
    async def RegisterActorTimer(self, request: actors_pb2.RegisterActorTimerRequest, context: Any) -> empty_pb2.Empty:
        fields = {**_times(request), "data": _data(request.data), "callback": request.callback or None}
        timer = TimerRequest.model_validate(fields)
        try:
            await self.gateway.actors.create_timer(request.actor_type, request.actor_id, request.name, timer)
        except NatriumError as exc:
            raise restated(exc, Codes.ACTOR_TIMER_CREATE, "error creating actor timer") from None
        return empty_pb2.Empty()

    @rpc
    async def UnregisterActorTimer(
        self, request: actors_pb2.UnregisterActorTimerRequest, context: Any
    ) -> empty_pb2.Empty:
        try:
            await self.gateway.actors.delete_timer(request.actor_type, request.actor_id, request.name)
        except NatriumError as exc:
            raise restated(exc, Codes.ACTOR_TIMER_DELETE, "error deleting actor timer") from None
        return empty_pb2.Empty()
