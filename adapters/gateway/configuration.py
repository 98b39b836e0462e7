"""`/v1.0/configuration/...` and `/v1.0-alpha1/configuration/...`: each route is one bus request.

Subscribing over HTTP records an `app` subscription for this gateway's app id (and, under
`natrium run`, its channel id); the updates are POSTed to the app (`/configuration/{store}/{key}`)
by its app channel, which reads those records.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from adapters.gateway.context import gateway_of, query_metadata
from adapters.gateway.errors import transport_as
from kernel.errors import Codes, NatriumError
from schemas.configuration import GetReply, SubscribeReply, UnsubscribeReply

__all__ = ["routes"]

PREFIXES = ("/v1.0", "/v1.0-alpha1")


async def _call(request: web.Request, operation: str, body: dict[str, Any], code: str, **kwargs: Any) -> Any:
    gateway = gateway_of(request)
    subject = gateway.subjects.block("configuration", request.match_info["store"], operation)
    try:
        return await gateway.bus.request(subject, body, **kwargs)
    except NatriumError as exc:
        raise transport_as(exc, code, Codes.CONFIGURATION_STORE_NOT_CONFIGURED) from None


async def get(request: web.Request) -> web.Response:
    body = {"keys": request.query.getall("key", []), "metadata": query_metadata(request)}
    reply: GetReply = await _call(request, "get", body, Codes.CONFIGURATION_GET, reply_model=GetReply)
    # As daprd's code does (pkg/api/http onGetConfiguration): 200 with the items map, and 204 with
    # an empty body when no item was found. Its docs say 204 for every success; the code wins.
    if not reply.items:
        return web.Response(status=204)
    return web.json_response({key: item.model_dump() for key, item in reply.items.items()})


async def subscribe(request: web.Request) -> web.Response:
    body = {
        "keys": request.query.getall("key", []),
        "metadata": query_metadata(request),
        "delivery": "app",
        "appId": gateway_of(request).config.app_id,
    }
    channel_id = gateway_of(request).config.channel_id
    if channel_id:  # this run's app channel alone delivers the updates, as daprd's own memory would
        body["channelId"] = channel_id
    reply: SubscribeReply = await _call(
        request, "subscribe", body, Codes.CONFIGURATION_SUBSCRIBE, reply_model=SubscribeReply
    )
    return web.json_response({"id": reply.id})


async def unsubscribe(request: web.Request) -> web.Response:
    body = {"id": request.match_info["id"]}
    try:
        await _call(request, "unsubscribe", body, Codes.CONFIGURATION_UNSUBSCRIBE, reply_model=UnsubscribeReply)
    except NatriumError as exc:
        if exc.code != Codes.CONFIGURATION_UNSUBSCRIBE:
            raise  # an unknown or unconfigured store is a plain Dapr error, as in daprd
        # daprd answers a failed unsubscribe with its own body, not {errorCode, message}.
        return web.json_response({"ok": False, "message": exc.message}, status=500)
    return web.json_response({"ok": True})


def routes() -> list[web.RouteDef]:
    out: list[web.RouteDef] = []
    for prefix in PREFIXES:
        base = prefix + "/configuration/{store}"
        out += [
            web.get(base, get),
            web.get(base + "/subscribe", subscribe),
            web.get(base + "/{id}/unsubscribe", unsubscribe),
        ]
    return out
