"""`/v1.0/secrets/...`: each route is one bus request to the secrets block."""

from __future__ import annotations

from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel

from adapters.gateway.context import gateway_of, query_metadata
from adapters.gateway.errors import transport_as
from kernel.errors import Codes, NatriumError
from schemas.secrets import BulkSecretReply, GetSecretReply

__all__ = ["routes"]

Reply = TypeVar("Reply", bound=BaseModel)


async def _call(request: web.Request, operation: str, body: dict[str, Any], reply_model: type[Reply]) -> Reply:
    gateway = gateway_of(request)
    body["appId"] = gateway.config.app_id  # the secret scopes of this app apply
    subject = gateway.subjects.block("secrets", request.match_info["store"], operation)
    try:
        return await gateway.bus.request(subject, body, reply_model)
    except NatriumError as exc:
        raise transport_as(exc, Codes.SECRET_GET, Codes.SECRET_STORES_NOT_CONFIGURED) from None


async def get(request: web.Request) -> web.Response:
    body = {"name": request.match_info["name"], "metadata": query_metadata(request)}
    reply = await _call(request, "get", body, GetSecretReply)
    if not reply.data:
        return web.Response(status=204)
    return web.json_response(reply.data)


async def bulk(request: web.Request) -> web.Response:
    reply = await _call(request, "bulk", {"metadata": query_metadata(request)}, BulkSecretReply)
    return web.json_response(reply.data)


def routes() -> list[web.RouteDef]:
    base = "/v1.0/secrets/{store}"
    return [web.get(base + "/bulk", bulk), web.get(base + "/{name:.+}", get)]
