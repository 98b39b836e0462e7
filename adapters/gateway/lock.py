"""`/v1.0-alpha1/lock|unlock/{store}`: each route is one bus request to the lock block."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel

from adapters.gateway.context import gateway_of
from adapters.gateway.errors import parse_json_body, transport_as
from kernel.errors import Codes, NatriumError
from schemas.lock import LockReply, UnlockReply

__all__ = ["routes"]

_FIELDS = ("resourceId", "lockOwner", "expiryInSeconds")


async def _call(request: web.Request, operation: str, code: str, reply_model: type[BaseModel]) -> Any:
    body = await parse_json_body(request)
    if not isinstance(body, dict):
        raise NatriumError(Codes.MALFORMED_REQUEST, f"{operation} body must be a JSON object", status=400)
    gateway = gateway_of(request)
    bus_body = {name: body[name] for name in _FIELDS if name in body}
    bus_body["appId"] = gateway.config.app_id
    subject = gateway.subjects.block("lock", request.match_info["store"], operation)
    try:
        return await gateway.bus.request(subject, bus_body, reply_model=reply_model)
    except NatriumError as exc:
        raise transport_as(exc, code, Codes.LOCK_STORE_NOT_CONFIGURED) from None


async def lock(request: web.Request) -> web.Response:
    reply: LockReply = await _call(request, "lock", Codes.TRY_LOCK, LockReply)
    # A lock held by someone else is a 200 with success false, not an error.
    return web.json_response({"success": reply.success})


async def unlock(request: web.Request) -> web.Response:
    reply: UnlockReply = await _call(request, "unlock", Codes.UNLOCK, UnlockReply)
    return web.json_response({"status": reply.status})


def routes() -> list[web.RouteDef]:
    return [
        web.post("/v1.0-alpha1/lock/{store}", lock),
        web.post("/v1.0-alpha1/unlock/{store}", unlock),
    ]
