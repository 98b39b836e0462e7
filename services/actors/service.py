"""The actors block on the bus: `<root>.actors.<type>.<operation>`.

Operations: `state-get`, `state-transaction`, `reminder-create`, `reminder-get`,
`reminder-delete`, and `invoke` (a method call routed to the owning host, for any NATS client that
does not want to track placement itself). Every replica also serves the reminder fire consumer.
Actor hosts are not here: they live in the processes that run the actor code (`natrium run`
app channels, bus-native SDK apps).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar

from adapters.actors.client import ActorClient
from adapters.actors.placement import Placement
from kernel.errors import Codes, NatriumError
from kernel.service import BlockService, Endpoint, RequestContext
from schemas.actors import (
    ActorInvokeReply,
    ActorInvokeRequest,
    ActorReminderCreateRequest,
    ActorReminderRef,
    ActorReminderReply,
    ActorStateGetReply,
    ActorStateGetRequest,
    ActorStateTransactionRequest,
)
from services.actors.reminders import Reminders
from services.actors.store import ActorStateStore

__all__ = ["ActorsService"]


@dataclass
class ActorsService(BlockService):
    """State and reminders of every actor type under one subject root."""

    block: ClassVar[str] = "actors"
    resolves_secret_refs: ClassVar[bool] = False

    def __post_init__(self) -> None:
        super().__post_init__()
        self.client = ActorClient(self.nc, self.subjects)
        self.state = ActorStateStore(self.nc, self.subjects)
        self.reminders = Reminders(self.nc, self.subjects, self.client)

    def endpoints(self) -> list[Endpoint[Any]]:
        return [
            Endpoint("state-get", ActorStateGetRequest, self.state_get),
            Endpoint("state-transaction", ActorStateTransactionRequest, self.state_transaction),
            Endpoint("reminder-create", ActorReminderCreateRequest, self.reminder_create),
            Endpoint("reminder-get", ActorReminderRef, self.reminder_get),
            Endpoint("reminder-delete", ActorReminderRef, self.reminder_delete),
            Endpoint("invoke", ActorInvokeRequest, self.invoke),
        ]

    async def setup(self) -> None:
        await Placement(self.nc, self.subjects).open(owner=True)
        await self.state.open()
        await self.reminders.start()

    async def teardown(self) -> None:
        await self.reminders.stop()
        await self.client.close()

    async def state_get(self, request: ActorStateGetRequest, ctx: RequestContext) -> ActorStateGetReply:
        data = await self.state.get(ctx.component, request.actor_id, request.key)
        return ActorStateGetReply(found=data is not None, data=data or b"")

    async def state_transaction(self, request: ActorStateTransactionRequest, ctx: RequestContext) -> None:
        await self.state.transaction(ctx.component, request.actor_id, request.operations)

    async def reminder_create(self, request: ActorReminderCreateRequest, ctx: RequestContext) -> None:
        await self.reminders.create(ctx.component, request.actor_id, request.name, request)

    async def reminder_get(self, request: ActorReminderRef, ctx: RequestContext) -> ActorReminderReply:
        reminder = await self.reminders.get(ctx.component, request.actor_id, request.name)
        return ActorReminderReply(found=reminder is not None, reminder=reminder or {})

    async def reminder_delete(self, request: ActorReminderRef, ctx: RequestContext) -> None:
        await self.reminders.delete(ctx.component, request.actor_id, request.name)

    async def invoke(self, request: ActorInvokeRequest, ctx: RequestContext) -> ActorInvokeReply:
        if isinstance(request.data, bytes):
            body = request.data
        elif request.data is None:
            body = b""
        else:
            body = json.dumps(request.data, separators=(",", ":")).encode()
        headers = dict(request.headers)
        content_type = request.content_type or ("application/json" if request.data is not None else None)
        if content_type:
            headers.setdefault("Content-Type", content_type)
        if not request.method:
            raise NatriumError(Codes.ACTOR_INVOKE_METHOD, "method must not be empty", status=400)
        reply = await self.client.invoke(ctx.component, request.actor_id, request.method, body, headers)
        return ActorInvokeReply(status=reply.status, data=reply.body, headers=reply.headers)
