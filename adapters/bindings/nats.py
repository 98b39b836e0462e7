"""`bindings.nats`: plain NATS subjects as a binding, for systems that already speak NATS.

Metadata: `subject` (required), `natsURL` (another NATS; default: the bus natrium runs on),
`queueGroup` for input (default `natrium-<name>`: replicas share the subject's messages).
Output operations: `create` publishes (request metadata `subject` overrides), `request` sends a
request and answers the reply. Input: core NATS keeps nothing, so an event is stored in the
binding's stream as it arrives; a sender that used a request gets an empty reply once it is
stored, and no reply (its timeout) when it could not be.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import ClassVar

import nats
import nats.errors
from nats.aio.client import Client

from adapters.bindings.base import BindingRequest, BindingResponse, Driver, DriverEnv, Emit, InputEvent, TargetError
from kernel.components import Component

__all__ = ["NatsBinding"]

log = logging.getLogger("natrium.bindings.nats")


class NatsBinding(Driver):
    operations: ClassVar[tuple[str, ...]] = ("create", "request")
    reads: ClassVar[bool] = True

    def __init__(self, component: Component, env: DriverEnv) -> None:
        super().__init__(component, env)
        self.subject = self.required("subject")
        self.url = component.meta("natsURL") or None
        self.queue_group = component.meta("queueGroup") or f"natrium-{component.name}"
        self.timeout = self.duration("timeout", "5s")
        self._own: Client | None = None
        self._connecting = asyncio.Lock()

    async def _nc(self) -> Client:
        if self.url is None:
            return self.env.nc
        async with self._connecting:
            if self._own is None or self._own.is_closed:
                try:
                    self._own = await nats.connect(
                        self.url, connect_timeout=self.timeout, allow_reconnect=True, max_reconnect_attempts=-1
                    )
                except (OSError, TimeoutError, nats.errors.Error) as exc:
                    raise TargetError(f"nats {self.url}: cannot connect: {type(exc).__name__} {exc}") from None
            return self._own

    async def invoke(self, request: BindingRequest) -> BindingResponse:
        nc = await self._nc()
        subject = request.meta("subject") or self.subject
        try:
            if request.operation == "create":
                await nc.publish(subject, request.data)
                await nc.flush(timeout=max(1, int(self.timeout)))
                return BindingResponse()
            reply = await nc.request(subject, request.data, timeout=self.timeout)
        except nats.errors.NoRespondersError:
            raise TargetError(f"nats: no responders on {subject}") from None
        except (TimeoutError, nats.errors.TimeoutError):
            raise TargetError(f"nats: no reply on {subject} within {self.timeout:g}s") from None
        except nats.errors.Error as exc:
            raise TargetError(f"nats: {subject}: {type(exc).__name__} {exc}") from None
        return BindingResponse(reply.data, {k: v for k, v in (reply.headers or {}).items()})

    async def read(self, emit: Emit) -> None:
        nc = await self._nc()
        subscription = await nc.subscribe(self.subject, queue=self.queue_group)
        try:
            async for msg in subscription.messages:
                metadata = {"subject": msg.subject, **(msg.headers or {})}
                try:
                    await emit(InputEvent(msg.data, metadata))
                except Exception as exc:
                    # Core NATS cannot redeliver: say so loudly; a requester sees its timeout.
                    log.error("event on %s not stored, lost: %s", msg.subject, exc)
                    continue
                if msg.reply:
                    await msg.respond(b"")
        finally:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()

    async def close(self) -> None:
        if self._own is not None:
            with contextlib.suppress(Exception):
                await self._own.close()
