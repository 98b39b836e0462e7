"""Calling actors: find the owning host (cached), send the turn straight to it, recover when it moved.

Used by the gateway, the app channel's Dapr API, the SDK proxies and the actors service (which
fires reminders through it). Invokes and timers go to the owning host's subject; state and
reminders go to the actors block service (`<root>.actors.<type>.<operation>`).

Routing: the owner cache says where an id lives. On a miss the caller picks the rendezvous winner
among the live hosts of the type and lets that host claim the id; a host that does not own it
answers "moved <host>", one that cannot serve it now (lease lapsed, draining) answers "retry", and
a host that is gone shows as "no responders". Each of those costs one bounded retry, never a
second activation: only the compare-and-set activation record decides ownership.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from typing import Any

from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.micro.request import ERROR_CODE_HEADER, ERROR_HEADER

from adapters.actors.app import ActorCall, ActorReply, CallKind
from adapters.actors.placement import HostDirectory, Placement, host_subject, rendezvous
from adapters.actors.wire import pack, unpack
from kernel.client import BusClient
from kernel.errors import Codes, NatriumError
from kernel.subjects import Subjects
from kernel.tracing import inject
from schemas.actors import (
    ActorReminderCreateRequest,
    ActorReminderRef,
    ActorReminderReply,
    ActorStateGetReply,
    ActorStateGetRequest,
    ActorStateTransactionRequest,
    ReminderRequest,
    StateOperation,
    TimerRequest,
)

__all__ = ["ActorClient"]

_CACHE_SIZE = 100_000


class ActorClient:
    """Calls actors and their state, reminders and timers; every failure is a NatriumError with Dapr's code."""

    def __init__(
        self,
        nc: Client,
        subjects: Subjects,
        timeout: float = 60.0,
        *,
        max_attempts: int = 100,
        service_timeout: float = 10.0,
    ) -> None:
        self.nc = nc
        self.subjects = subjects
        self.timeout = timeout
        """Longest wait for one actor call (the turn included)."""
        self.max_attempts = max_attempts
        """Routing attempts per call (moved / retry / host gone); the timeout bounds them too."""
        self.bus = BusClient(nc, timeout=service_timeout)
        self.placement = Placement(nc, subjects)
        self.directory = HostDirectory(nc, self.placement)
        self._owners: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._started: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Open the host list now (else the first call does)."""
        if self._started is None:
            self._started = asyncio.ensure_future(self.directory.start())
        try:
            await asyncio.shield(self._started)
        except BaseException:
            self._started = None
            raise

    async def close(self) -> None:
        await self.directory.stop()

    # -- invoke -----------------------------------------------------------------------------------

    async def invoke(
        self,
        actor_type: str,
        actor_id: str,
        method: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> ActorReply:
        """Run `method` on the actor, activating it where placement says. An app error is a reply."""
        return await self.call(ActorCall(actor_type, actor_id, CallKind.METHOD, method, body, dict(headers or {})))

    async def call(self, call: ActorCall, timeout: float | None = None) -> ActorReply:
        """Any kind of turn (the actors service fires reminders with CallKind.REMINDER)."""
        _check_target(call.actor_type, call.actor_id, Codes.ACTOR_INVOKE_METHOD)
        request = {
            "op": "call",
            "t": call.actor_type,
            "i": call.actor_id,
            "k": call.kind.value,
            "n": call.name,
            "b": call.body,
            "h": inject(dict(call.headers)),
        }
        reply = await self._route(call.actor_type, call.actor_id, request, Codes.ACTOR_INVOKE_METHOD, timeout)
        return ActorReply(int(reply.get("s", 200)), bytes(reply.get("b") or b""), dict(reply.get("h") or {}))

    # -- timers (on the owning host: they live and die with the activation) -----------------------

    async def create_timer(self, actor_type: str, actor_id: str, name: str, request: TimerRequest) -> None:
        _check_target(actor_type, actor_id, Codes.ACTOR_TIMER_CREATE)
        timer = request.model_dump(mode="json", by_alias=True, exclude_none=True)
        message = {"op": "timer.create", "t": actor_type, "i": actor_id, "n": name, "timer": timer}
        await self._route(actor_type, actor_id, message, Codes.ACTOR_TIMER_CREATE, None)

    async def delete_timer(self, actor_type: str, actor_id: str, name: str) -> None:
        _check_target(actor_type, actor_id, Codes.ACTOR_TIMER_DELETE)
        message = {"op": "timer.delete", "t": actor_type, "i": actor_id, "n": name}
        await self._route(actor_type, actor_id, message, Codes.ACTOR_TIMER_DELETE, None)

    # -- state and reminders (the actors service) -------------------------------------------------

    async def get_state(self, actor_type: str, actor_id: str, key: str) -> bytes | None:
        _check_target(actor_type, actor_id, Codes.ACTOR_STATE_GET)
        reply = await self.bus.request(
            self._service(actor_type, "state-get"),
            ActorStateGetRequest(actor_id=actor_id, key=key),
            ActorStateGetReply,
        )
        return reply.data if reply.found else None

    async def is_active(self, actor_type: str, actor_id: str) -> bool:
        """Whether a live host holds the actor's activation now (daprd's check before an HTTP or
        gRPC state transaction: only an activation writes its actor's state)."""
        await self.placement.open()
        owner = await self.placement.owner(actor_type, actor_id)
        return owner is not None and await self.placement.lease_alive(*owner)

    async def transaction(self, actor_type: str, actor_id: str, operations: list[StateOperation]) -> None:
        _check_target(actor_type, actor_id, Codes.ACTOR_STATE_TRANSACTION_SAVE)
        await self.bus.request(
            self._service(actor_type, "state-transaction"),
            ActorStateTransactionRequest(actor_id=actor_id, operations=operations),
        )

    async def create_reminder(self, actor_type: str, actor_id: str, name: str, request: ReminderRequest) -> None:
        _check_target(actor_type, actor_id, Codes.ACTOR_REMINDER_CREATE)
        body = request.model_dump(by_alias=True, exclude_none=True)
        await self.bus.request(
            self._service(actor_type, "reminder-create"),
            ActorReminderCreateRequest.model_validate({**body, "actorId": actor_id, "name": name}),
        )

    async def get_reminder(self, actor_type: str, actor_id: str, name: str) -> dict[str, Any] | None:
        _check_target(actor_type, actor_id, Codes.ACTOR_REMINDER_GET)
        reply = await self.bus.request(
            self._service(actor_type, "reminder-get"),
            ActorReminderRef(actor_id=actor_id, name=name),
            ActorReminderReply,
        )
        return reply.reminder if reply.found else None

    async def delete_reminder(self, actor_type: str, actor_id: str, name: str) -> None:
        _check_target(actor_type, actor_id, Codes.ACTOR_REMINDER_DELETE)
        await self.bus.request(
            self._service(actor_type, "reminder-delete"), ActorReminderRef(actor_id=actor_id, name=name)
        )

    def _service(self, actor_type: str, operation: str) -> str:
        return self.subjects.block("actors", actor_type, operation)

    # -- routing ----------------------------------------------------------------------------------

    async def _route(
        self, actor_type: str, actor_id: str, request: dict[str, Any], code: str, timeout: float | None
    ) -> dict[str, Any]:
        await self.start()
        payload = pack(request)
        key = (actor_type, actor_id)
        deadline = time.monotonic() + (timeout or self.timeout)
        pause = 0.02
        why = "no host"
        empty = 0
        trail: list[str] = []
        for _ in range(self.max_attempts):
            host = self._owners.get(key)
            if host is None:
                hosts = self.directory.hosts_for(actor_type)
                if not hosts:
                    # The host list is a live watch; one short look again covers a host whose
                    # lease is being written this very moment, more would only delay the error.
                    why = "no host"
                    empty += 1
                    if empty > 2:
                        break
                    await self.directory.refresh()
                    pause = await _pause(pause, deadline)
                    continue
                host = rendezvous(actor_type, actor_id, hosts)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            trail.append(f"{host}@{remaining:.1f}")
            try:
                msg = await self.nc.request(host_subject(self.subjects, host), payload, timeout=remaining)
            except NoRespondersError:
                # The host is gone (its subscription with it): a retry cannot run the turn twice.
                self.directory.suspect(host)
                self._forget(key)
                why = f"host {host} is gone"
                pause = await _pause(pause, deadline)
                continue
            except (TimeoutError, NatsTimeoutError):
                # Ambiguous (the turn may have run), so not retried; but a host that stopped
                # answering (frozen, partitioned) must not keep its callers: look afresh next time.
                self._forget(key)
                self.directory.suspect(host)
                raise NatriumError(
                    code,
                    f"actor {actor_type}/{actor_id} did not answer within {timeout or self.timeout:g}s"
                    f" (last: {why}; tried {' '.join(trail[-6:])})",
                    status=500,
                ) from None
            headers = msg.headers or {}
            if ERROR_CODE_HEADER in headers:
                try:
                    body: Any = unpack(msg.data)
                except ValueError:
                    body = None
                raise NatriumError.from_body(_status(headers[ERROR_CODE_HEADER]), body, headers.get(ERROR_HEADER, ""))
            reply = unpack(msg.data)
            moved = reply.get("moved")
            if moved is not None:
                trail.append(f"moved:{moved}")
                self._remember(key, str(moved))
                if not request.get("r"):
                    # Tell the next host it was sent there on purpose: it claims, not redirects.
                    request["r"] = 1
                    payload = pack(request)
                why = f"moved to {moved}"
                continue
            if "retry" in reply:
                trail.append("retry")
                self._forget(key)
                why = str(reply["retry"])
                pause = await _pause(pause, deadline)
                continue
            self._remember(key, host)
            return reply
        if why == "no host":
            raise NatriumError(
                code, f"error finding address for actor type {actor_type} with id {actor_id}", status=500
            )
        raise NatriumError(
            code, f"actor {actor_type}/{actor_id} could not be reached: {why}", status=500, retryable=True
        )

    def _remember(self, key: tuple[str, str], host: str) -> None:
        self._owners[key] = host
        self._owners.move_to_end(key)
        if len(self._owners) > _CACHE_SIZE:
            self._owners.popitem(last=False)

    def _forget(self, key: tuple[str, str]) -> None:
        self._owners.pop(key, None)


async def _pause(pause: float, deadline: float) -> float:
    await asyncio.sleep(max(0.0, min(pause, deadline - time.monotonic())))
    return min(pause * 2, 0.5)


def _check_target(actor_type: str, actor_id: str, code: str) -> None:
    if not actor_type or not actor_id:
        raise NatriumError(code, "actor type and actor id must not be empty", status=400)


def _status(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        return 500
