"""`/v1.0/workflows/...` (and the `-beta1`, `-alpha1` aliases): Dapr's workflow management API.

Each route is one bus request to the workflow block. daprd's shapes: start answers 202
`{"instanceID"}`, the other changes 202 with an empty body, and `GET` answers the instance with
its payloads under `properties`.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from adapters.gateway.context import gateway_of
from adapters.gateway.errors import transport_as
from kernel.errors import Codes, NatriumError
from schemas.workflow import InstanceState, StartReply

__all__ = ["routes", "describe"]

_PREFIXES = ("/v1.0", "/v1.0-beta1", "/v1.0-alpha1")
_OPERATIONS = {
    "terminate": Codes.TERMINATE_WORKFLOW,
    "pause": Codes.PAUSE_WORKFLOW,
    "resume": Codes.RESUME_WORKFLOW,
    "purge": Codes.PURGE_WORKFLOW,
}


async def _call(request: web.Request, operation: str, body: dict[str, Any], code: str, reply: Any = None) -> Any:
    gateway = gateway_of(request)
    subject = gateway.subjects.block("workflow", request.match_info["component"], operation)
    try:
        return await gateway.bus.request(subject, body, reply_model=reply)
    except NatriumError as exc:
        raise transport_as(exc, code) from None


async def _text_body(request: web.Request) -> str | None:
    raw = await request.read()
    if not raw:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise NatriumError(Codes.MALFORMED_REQUEST, "the request body is not UTF-8 text", status=400) from None


async def start(request: web.Request) -> web.Response:
    body: dict[str, Any] = {"name": request.match_info["name"]}
    instance_id = request.query.get("instanceID") or request.query.get("instanceId")
    if instance_id:
        body["instanceId"] = instance_id
    payload = await _text_body(request)
    if payload is not None:
        body["input"] = payload
    reply: StartReply = await _call(request, "start", body, Codes.START_WORKFLOW, StartReply)
    return web.json_response({"instanceID": reply.instance_id}, status=202)


async def get(request: web.Request) -> web.Response:
    body = {"instanceId": request.match_info["instance"]}
    state: InstanceState = await _call(request, "get", body, Codes.GET_WORKFLOW, InstanceState)
    return web.json_response(describe(state))


def describe(state: InstanceState) -> dict[str, Any]:
    """An instance as daprd's `GET /v1.0/workflows/{component}/{id}` answers it."""
    properties: dict[str, str] = {}
    if state.input is not None:
        properties["dapr.workflow.input"] = state.input
    if state.output is not None:
        properties["dapr.workflow.output"] = state.output
    if state.custom_status is not None:
        properties["dapr.workflow.custom_status"] = state.custom_status
    if state.failure_details is not None:
        properties["dapr.workflow.failure.error_type"] = state.failure_details.error_type
        properties["dapr.workflow.failure.error_message"] = state.failure_details.error_message
    return {
        "instanceID": state.instance_id,
        "workflowName": state.name,
        "createdAt": state.created_at,
        "lastUpdatedAt": state.last_updated_at,
        "runtimeStatus": state.runtime_status.value,
        "properties": properties,
    }


def _change(operation: str) -> Any:
    async def handler(request: web.Request) -> web.Response:
        body: dict[str, Any] = {"instanceId": request.match_info["instance"]}
        if operation == "terminate":
            output = await _text_body(request)
            if output is not None:
                body["output"] = output
        if operation in ("terminate", "purge") and request.query.get("non_recursive", "").lower() == "true":
            body["recursive"] = False
        await _call(request, operation, body, _OPERATIONS[operation])
        return web.Response(status=202)

    return handler


async def raise_event(request: web.Request) -> web.Response:
    body: dict[str, Any] = {"instanceId": request.match_info["instance"], "eventName": request.match_info["event"]}
    payload = await _text_body(request)
    if payload is not None:
        body["input"] = payload
    await _call(request, "raise", body, Codes.RAISE_EVENT_WORKFLOW)
    return web.Response(status=202)


def routes() -> list[web.RouteDef]:
    out: list[web.RouteDef] = []
    for prefix in _PREFIXES:
        base = f"{prefix}/workflows/{{component}}"
        out.append(web.post(f"{base}/{{name}}/start", start))
        out.append(web.get(f"{base}/{{instance}}", get))
        out.append(web.post(f"{base}/{{instance}}/raiseEvent/{{event}}", raise_event))
        for operation in _OPERATIONS:
            out.append(web.post(f"{base}/{{instance}}/{operation}", _change(operation)))
    return out
