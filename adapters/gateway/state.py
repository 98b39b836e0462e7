"""`/v1.0/state/...`: each route is one bus request to the state block."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from adapters.gateway.context import Gateway, gateway_of, query_metadata
from adapters.gateway.errors import parse_json_body, transport_as
from kernel.errors import Codes, NatriumError
from schemas.state import BulkGetReply, GetReply

__all__ = ["routes"]


def _subject(gateway: Gateway, request: web.Request, operation: str) -> str:
    return gateway.subjects.block("state", request.match_info["store"], operation)


async def _call(request: web.Request, operation: str, body: dict[str, Any], code: str, **kwargs: Any) -> Any:
    gateway = gateway_of(request)
    body["appId"] = gateway.config.app_id
    try:
        return await gateway.bus.request(_subject(gateway, request, operation), body, **kwargs)
    except NatriumError as exc:
        raise transport_as(exc, code, Codes.STATE_STORE_NOT_CONFIGURED) from None


async def save(request: web.Request) -> web.Response:
    items = await parse_json_body(request)
    if not isinstance(items, list):
        raise NatriumError(Codes.MALFORMED_REQUEST, "state save body must be a JSON array of items", status=400)
    if items:
        await _call(request, "save", {"items": items, "metadata": query_metadata(request)}, Codes.STATE_SAVE)
    return web.Response(status=204)


async def get(request: web.Request) -> web.Response:
    body = {"key": request.match_info["key"], "metadata": query_metadata(request)}
    consistency = request.query.get("consistency")
    if consistency:
        body["consistency"] = consistency
    reply: GetReply = await _call(request, "get", body, Codes.STATE_GET, reply_model=GetReply)
    if not reply.found:
        return web.Response(status=204)
    headers = {f"metadata.{k}": v for k, v in reply.metadata.items()}
    if reply.etag:
        headers["ETag"] = reply.etag
    return web.Response(status=200, body=reply.data or b"", content_type="application/json", headers=headers)


async def bulk(request: web.Request) -> web.Response:
    body = await parse_json_body(request)
    if not isinstance(body, dict) or not isinstance(body.get("keys"), list):
        raise NatriumError(Codes.MALFORMED_REQUEST, 'bulk get body must be {"keys": [...]}', status=400)
    bus_body = {"keys": body["keys"], "metadata": {**(body.get("metadata") or {}), **query_metadata(request)}}
    if body.get("parallelism"):
        bus_body["parallelism"] = body["parallelism"]
    reply: BulkGetReply = await _call(request, "bulkget", bus_body, Codes.STATE_GET, reply_model=BulkGetReply)
    # Serialised in JSON mode: `data` becomes the stored JSON value, as daprd embeds it.
    items = [item.model_dump(mode="json", exclude_none=True) for item in reply.items]
    return web.json_response(items)


async def delete(request: web.Request) -> web.Response:
    body: dict[str, Any] = {"key": request.match_info["key"], "metadata": query_metadata(request)}
    etag = request.headers.get("If-Match")
    if etag:
        body["etag"] = etag.strip('"')
    options = {k: request.query[k] for k in ("concurrency", "consistency") if request.query.get(k)}
    if options:
        body["options"] = options
    await _call(request, "delete", body, Codes.STATE_DELETE)
    return web.Response(status=204)


async def transaction(request: web.Request) -> web.Response:
    body = await parse_json_body(request)
    if not isinstance(body, dict):
        raise NatriumError(Codes.MALFORMED_REQUEST, "transaction body must be a JSON object", status=400)
    operations = body.get("operations") or []
    if operations:
        metadata = {**(body.get("metadata") or {}), **query_metadata(request)}
        await _call(request, "transaction", {"operations": operations, "metadata": metadata}, Codes.STATE_TRANSACTION)
    return web.Response(status=204)


async def query(request: web.Request) -> web.Response:
    raise NatriumError(
        Codes.STATE_STORE_NOT_SUPPORTED,
        f"state store {request.match_info['store']} does not support the query API",
        status=500,
    )


def routes() -> list[web.RouteDef]:
    base = "/v1.0/state/{store}"
    return [
        *(web.route(m, base, save) for m in ("POST", "PUT")),
        *(web.route(m, base + "/bulk", bulk) for m in ("POST", "PUT")),
        *(web.route(m, base + "/transaction", transaction) for m in ("POST", "PUT")),
        *(web.route(m, "/v1.0-alpha1/state/{store}/query", query) for m in ("POST", "PUT")),
        web.get(base + "/{key:.+}", get),
        web.delete(base + "/{key:.+}", delete),
    ]
