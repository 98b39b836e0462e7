"""`POST|PUT /v1.0/bindings/{name}`: one output binding call, as one bus request to the bindings block.

As daprd does, `data` is JSON-encoded before it reaches the driver (a JSON string arrives quoted),
the reply is 200 with the target's bytes or 204 without any, and the reply metadata comes back as
`metadata.<key>` headers, also on an error.
"""

from __future__ import annotations

import json

from aiohttp import web

from adapters.gateway.context import gateway_of
from adapters.gateway.errors import error_response, parse_json_body, transport_as
from kernel.errors import Codes, NatriumError
from schemas.bindings import InvokeBindingReply

__all__ = ["routes"]


async def invoke(request: web.Request) -> web.Response:
    body = await parse_json_body(request)
    if not isinstance(body, dict):
        raise NatriumError(Codes.MALFORMED_REQUEST, "binding request body must be a JSON object", status=400)
    operation = body.get("operation") or ""
    metadata = body.get("metadata") or {}
    if not isinstance(operation, str):
        raise NatriumError(Codes.MALFORMED_REQUEST, "operation must be a string", status=400)
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise NatriumError(Codes.MALFORMED_REQUEST, "metadata must be an object of string values", status=400)
    # daprd marshals `data` whatever it is (absent: null) and hands the bytes to the component.
    data = json.dumps(body.get("data"), separators=(",", ":"), ensure_ascii=False).encode()
    gateway = gateway_of(request)
    name = request.match_info["name"]
    bus_body = {"operation": operation, "data": data, "metadata": metadata, "appId": gateway.config.app_id}
    subject = gateway.subjects.block("bindings", name, "invoke")
    try:
        reply = await gateway.bus.request(subject, bus_body, InvokeBindingReply, timeout=gateway.config.invoke_timeout)
    except NatriumError as exc:
        error = transport_as(exc, Codes.INVOKE_OUTPUT_BINDING, Codes.INVOKE_OUTPUT_BINDING)
        response = error_response(_without_metadata(error))
        _add_metadata(response, _metadata_of(exc))
        return response
    response = web.Response(status=204) if reply.data is None else web.Response(status=200, body=reply.data)
    _add_metadata(response, reply.metadata)
    return response


def _metadata_of(error: NatriumError) -> dict[str, str]:
    for detail in error.details:
        if isinstance(detail, dict) and isinstance(detail.get("metadata"), dict):
            return {str(k): str(v) for k, v in detail["metadata"].items()}
    return {}


def _without_metadata(error: NatriumError) -> NatriumError:
    # The metadata goes out as headers; the body stays daprd's {errorCode, message}.
    return NatriumError(error.code, error.message, status=error.status, retryable=error.retryable)


def _add_metadata(response: web.Response, metadata: dict[str, str]) -> None:
    for key, value in metadata.items():
        response.headers.add("metadata." + key, value.replace("\r", " ").replace("\n", " "))


def routes() -> list[web.RouteDef]:
    return [
        web.post("/v1.0/bindings/{name}", invoke),
        web.put("/v1.0/bindings/{name}", invoke),
    ]
