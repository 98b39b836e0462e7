"""`/v1.0/publish/...`: each route is one bus request to the pub/sub block."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from adapters.gateway.context import gateway_of, query_metadata
from adapters.gateway.errors import parse_json_body, transport_as
from kernel.errors import Codes, NatriumError
from schemas.pubsub import BulkPublishReply

__all__ = ["routes"]


async def _call(request: web.Request, operation: str, body: dict[str, Any], **kwargs: Any) -> Any:
    gateway = gateway_of(request)
    pubsub = request.match_info.get("pubsub", "")
    if not pubsub:
        raise NatriumError(Codes.PUBSUB_EMPTY, "pubsub name is empty", status=404)
    if not body.get("topic"):
        raise NatriumError(Codes.TOPIC_NAME_EMPTY, f"topic is empty in pubsub {pubsub}", status=404)
    body["appId"] = gateway.config.app_id
    subject = gateway.subjects.block("pubsub", pubsub, operation)
    try:
        return await gateway.bus.request(subject, body, **kwargs)
    except NatriumError as exc:
        if exc.code == Codes.NO_RESPONDERS:
            raise NatriumError(
                Codes.PUBSUB_NOT_CONFIGURED, f"{exc.message}: is the pubsub service running?", status=400
            ) from None
        raise transport_as(exc, Codes.PUBSUB_PUBLISH_MESSAGE) from None


async def publish(request: web.Request) -> web.Response:
    body = {
        "topic": request.match_info["topic"],
        "data": await request.read(),
        "contentType": request.headers.get("Content-Type"),
        "metadata": query_metadata(request),
    }
    await _call(request, "publish", body)
    return web.Response(status=204)


async def bulk_publish(request: web.Request) -> web.Response:
    entries = await parse_json_body(request)
    if not isinstance(entries, list):
        raise NatriumError(Codes.MALFORMED_REQUEST, "bulk publish body must be a JSON array of entries", status=400)
    for entry in entries:
        # The JS SDK spells it entryID, daprd's docs entryId; Go's JSON decoding accepts both.
        if isinstance(entry, dict) and "entryId" not in entry and "entryID" in entry:
            entry["entryId"] = entry.pop("entryID")
    body = {"topic": request.match_info["topic"], "entries": entries, "metadata": query_metadata(request)}
    reply: BulkPublishReply = await _call(request, "bulkpublish", body, reply_model=BulkPublishReply)
    if not reply.failed_entries:
        return web.Response(status=204)
    return web.json_response(
        {
            "failedEntries": [{"entryId": f.entry_id, "error": f.error} for f in reply.failed_entries],
            "errorCode": Codes.PUBSUB_PUBLISH_MESSAGE,
        },
        status=500,
    )


async def empty_name(request: web.Request) -> web.Response:
    """A path without a pubsub name or a topic: Dapr's 404s, not "no such route"."""
    pubsub = request.match_info.get("pubsub", "")
    if not pubsub:
        raise NatriumError(Codes.PUBSUB_EMPTY, "pubsub name is empty", status=404)
    raise NatriumError(Codes.TOPIC_NAME_EMPTY, f"topic is empty in pubsub {pubsub}", status=404)


def routes() -> list[web.RouteDef]:
    methods = ("POST", "PUT")
    publish_paths = ["/v1.0/publish"]
    bulk_paths = ["/v1.0-alpha1/publish/bulk", "/v1.0/publish/bulk"]
    real = [(p, bulk_publish) for p in bulk_paths] + [(p, publish) for p in publish_paths]
    # After the real routes, so `/v1.0/publish/bulk/x` stays topic x of a pubsub named bulk.
    empty = [f"{p}/{{pubsub}}" for p in ("/v1.0-alpha1/publish/bulk", "/v1.0/publish")]
    empty += [f"{p}/{{pubsub}}/" for p in ("/v1.0-alpha1/publish/bulk", "/v1.0/publish")]
    empty += [f"{p}/{{rest:/.*}}" for p in ("/v1.0-alpha1/publish/bulk", "/v1.0/publish")]
    return [
        *(web.route(m, f"{p}/{{pubsub}}/{{topic:.+}}", handler) for p, handler in real for m in methods),
        *(web.route(m, path, empty_name) for path in empty for m in methods),
    ]
