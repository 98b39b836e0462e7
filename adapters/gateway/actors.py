"""`/v1.0/actors/{type}/{id}/...`: Dapr's actor API, each route one `ActorClient` call.

Both official SDKs are served as they are: PUT or POST, Go or ISO durations and base64 or plain
JSON reminder data go through unchanged (the actors block reads them). Answers follow daprd: an
actor method's reply passes through only when the app answered 200 (or flagged an actor error
with `X-DaprErrorResponseHeader`); any other answer is a 500 `ERR_ACTOR_INVOKE_METHOD`.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from aiohttp import web
from pydantic import ValidationError

from adapters.actors.app import ActorCall, ActorReply, CallKind
from adapters.actors.client import ActorClient
from adapters.gateway.context import GATEWAY, Gateway, gateway_of
from adapters.gateway.errors import parse_json_body
from adapters.invocation import forwardable
from kernel.errors import Codes, NatriumError
from schemas.actors import ReminderRequest, StateOperation, TimerRequest

__all__ = ["close", "invoke_actor", "method_error", "require_active", "restated", "routes"]

_BASE = "/v1.0/actors/{type}/{id}"
_Body = TypeVar("_Body", ReminderRequest, TimerRequest)
# Errors that mean "the bus did not deliver", restated as the operation's own code like daprd does.
_TRANSPORT = {Codes.NO_RESPONDERS, Codes.TIMEOUT}
_ERROR_HEADER = "x-daprerrorresponseheader"
_REMINDER_CANCEL = "x-daprremindercancel"
_REMINDER_FIELDS = ("dueTime", "period", "ttl", "data")
_TIMER_FIELDS = (*_REMINDER_FIELDS, "callback")


def _client(request: web.Request) -> ActorClient:
    return gateway_of(request).actors


def restated(error: NatriumError, code: str, prefix: str) -> NatriumError:
    if error.code not in _TRANSPORT:
        return error
    # Routed calls handle a missing host themselves: no responders here means the actors service.
    hint = ": is the actors service running?" if error.code == Codes.NO_RESPONDERS else ""
    return NatriumError(code, f"{prefix}: {error.message}{hint}", status=500, retryable=True)


def _invalid_name(kind: str, value: str) -> str | None:
    """Why daprd refuses a type, id or name that would break out of its URL segment."""
    if any(c in value for c in "#?\x00/\\"):
        return f"invalid {kind}: name contains forbidden character: {value!r}"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        return f"invalid {kind}: name contains control character: {value!r}"
    if value in (".", ".."):
        return f"invalid {kind}: name is a path traversal sequence: {value!r}"
    return None


def _target(request: web.Request, *names: str) -> tuple[str, str]:
    actor_type, actor_id = request.match_info["type"], request.match_info["id"]
    checks = [("actorType", actor_type), ("actorId", actor_id), *((n, request.match_info[n]) for n in names)]
    for kind, value in checks:
        reason = _invalid_name(kind, value)
        if reason:
            raise NatriumError(Codes.BAD_REQUEST, f"invalid request: {reason}", status=400)
    return actor_type, actor_id


def _folded(body: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    """Known fields in any letter case, as Go's JSON decoding reads them (exact spelling wins);
    other fields stay as sent."""
    canonical = {f.lower(): f for f in fields}
    out: dict[str, Any] = {}
    for key, value in body.items():
        name = canonical.get(key.lower(), key)
        if name not in out or key == name:
            out[name] = value
    return out


async def _json_object(request: web.Request, what: str) -> dict[str, Any]:
    body = await parse_json_body(request)
    if not isinstance(body, dict):
        raise NatriumError(
            Codes.MALFORMED_REQUEST, f"failed deserializing HTTP body: {what} must be a JSON object", status=400
        )
    return body


# --- methods -------------------------------------------------------------------------------------


async def invoke(request: web.Request) -> web.Response:
    actor_type, actor_id = _target(request)
    method = request.match_info["method"]
    if any(c in method for c in "#?\x00") or any(ord(c) < 0x20 or ord(c) == 0x7F for c in method):
        raise NatriumError(
            Codes.BAD_REQUEST, f"invalid request: method contains forbidden character: {method!r}", status=400
        )
    body = await request.read()
    try:
        headers = forwardable(request.headers)
        reply = await invoke_actor(gateway_of(request), actor_type, actor_id, method, body, headers)
    except NatriumError as exc:
        raise restated(exc, Codes.ACTOR_INVOKE_METHOD, "error invoke actor method") from None
    return _method_answer(reply, actor_type, actor_id, method)


async def invoke_actor(
    gateway: Gateway, actor_type: str, actor_id: str, method: str, body: bytes, headers: dict[str, str]
) -> ActorReply:
    """One actor method call, under the actor type's Resiliency policy when there is one: its
    timeout bounds each attempt, and an app error (5xx) or a call that could not land is retried."""
    call = ActorCall(actor_type, actor_id, CallKind.METHOD, method, body, headers)
    policy = gateway.resiliency.for_actor(actor_type)
    if policy is None:
        return await gateway.actors.call(call)
    return await policy.call(
        lambda limit: gateway.actors.call(call, timeout=limit),
        lambda reply: reply.status >= 500,
        lambda error: error.retryable,
    )


def _method_answer(reply: ActorReply, actor_type: str, actor_id: str, method: str) -> web.Response:
    error = method_error(reply, actor_type, actor_id, method)
    if error is not None:
        raise error
    return web.Response(status=reply.status, body=reply.body, headers=reply.headers)


def method_error(reply: ActorReply, actor_type: str, actor_id: str, method: str) -> NatriumError | None:
    """The error daprd makes of an actor method's answer; None when the answer goes back as it is."""
    lowered = {k.lower(): v for k, v in reply.headers.items()}
    # A flagged actor error (the .NET SDK's way) goes back as the app wrote it.
    if _ERROR_HEADER in lowered or (reply.status == 200 and _REMINDER_CANCEL not in lowered):
        return None
    if reply.status == 200:
        reason = "reminder has been canceled"
    elif reply.status == 404:
        reason = f"actor method not found: actors/{actor_type}/{actor_id}/method/{method}"
    else:
        reason = f"error from actor service: ({reply.status}) {reply.body.decode(errors='replace')}"
    return NatriumError(Codes.ACTOR_INVOKE_METHOD, f"error invoke actor method: {reason}", status=500)


# --- state ---------------------------------------------------------------------------------------


async def get_state(request: web.Request) -> web.Response:
    actor_type, actor_id = _target(request)
    try:
        value = await _client(request).get_state(actor_type, actor_id, request.match_info["key"])
    except NatriumError as exc:
        raise restated(exc, Codes.ACTOR_STATE_GET, "error getting actor state") from None
    if not value:
        return web.Response(status=204)
    return web.Response(status=200, body=value, content_type="application/json")


async def transaction(request: web.Request) -> web.Response:
    actor_type, actor_id = _target(request)
    body = await parse_json_body(request)
    if body is None:
        body = []
    if not isinstance(body, list) or not all(isinstance(op, dict) for op in body):
        raise NatriumError(
            Codes.MALFORMED_REQUEST,
            "failed deserializing HTTP body: expected a JSON array of {operation, request} objects",
            status=400,
        )
    await require_active(gateway_of(request), actor_type, actor_id)
    operations = [_operation(op) for op in body]
    try:
        await _client(request).transaction(actor_type, actor_id, operations)
    except NatriumError as exc:
        raise restated(exc, Codes.ACTOR_STATE_TRANSACTION_SAVE, "error saving actor transaction state") from None
    return web.Response(status=204)


async def require_active(gateway: Gateway, actor_type: str, actor_id: str) -> None:
    """daprd writes actor state only for an activation it hosts; elsewhere the write is refused.

    Where this Dapr API belongs to the host of the actor's type (`natrium run`), the activation
    must be this host's own, under a valid lease: a turn that outlived its host's lease (the host
    froze, another took the actor over) must not write over the new owner's state.
    """
    host = gateway.actor_host
    if host is not None and actor_type in host.types:
        if not host.owns(actor_type, actor_id):
            raise NatriumError(Codes.ACTOR_INSTANCE_MISSING, "actor instance is missing", status=400)
        return
    try:
        active = await gateway.actors.is_active(actor_type, actor_id)
    except Exception as exc:  # placement unreadable: the transaction cannot be judged either
        raise NatriumError(
            Codes.ACTOR_STATE_TRANSACTION_SAVE, f"error saving actor transaction state: {exc}", status=500
        ) from None
    if not active:
        raise NatriumError(Codes.ACTOR_INSTANCE_MISSING, "actor instance is missing", status=400)


def _operation(raw: dict[str, Any]) -> StateOperation:
    op = _folded(raw, ("operation", "request"))
    if not isinstance(op.get("operation"), str):
        raise NatriumError(
            Codes.MALFORMED_REQUEST, "failed deserializing HTTP body: operation must be a string", status=400
        )
    problem = None
    kind, request = op["operation"], op.get("request")
    if not kind:
        problem = "operation is empty"
    elif kind not in ("upsert", "delete"):
        problem = f"operation type {kind} not supported"
    elif not isinstance(request, dict):
        problem = "request data is empty"
    else:
        request = _folded(request, ("key", "value", "etag", "metadata"))
        if not isinstance(request.get("key"), str) or not request["key"]:
            problem = "missing key"
    if problem is not None:
        # daprd decodes the operations first and checks them in the state layer: hence a 500.
        raise NatriumError(
            Codes.ACTOR_STATE_TRANSACTION_SAVE, f"error saving actor transaction state: {problem}", status=500
        )
    assert isinstance(request, dict)
    return StateOperation(operation=kind, request=request)


# --- reminders and timers ------------------------------------------------------------------------


async def create_reminder(request: web.Request) -> web.Response:
    actor_type, actor_id = _target(request, "name")
    body = _folded(await _json_object(request, "reminder"), _REMINDER_FIELDS)
    reminder = _validated(ReminderRequest, body)
    try:
        await _client(request).create_reminder(actor_type, actor_id, request.match_info["name"], reminder)
    except NatriumError as exc:
        raise restated(exc, Codes.ACTOR_REMINDER_CREATE, "error creating actor reminder") from None
    return web.Response(status=204)


async def get_reminder(request: web.Request) -> web.Response:
    actor_type, actor_id = _target(request, "name")
    name = request.match_info["name"]
    try:
        reminder = await _client(request).get_reminder(actor_type, actor_id, name)
    except NatriumError as exc:
        raise restated(exc, Codes.ACTOR_REMINDER_GET, "error getting actor reminder") from None
    if reminder is None:
        raise NatriumError(Codes.ACTOR_REMINDER_NOT_FOUND, f"actor reminder not found: {name}", status=404)
    return web.Response(body=json.dumps(reminder).encode(), content_type="application/json")


async def delete_reminder(request: web.Request) -> web.Response:
    actor_type, actor_id = _target(request, "name")
    try:
        await _client(request).delete_reminder(actor_type, actor_id, request.match_info["name"])
    except NatriumError as exc:
        raise restated(exc, Codes.ACTOR_REMINDER_DELETE, "error deleting actor reminder") from None
    return web.Response(status=204)


async def create_timer(request: web.Request) -> web.Response:
    actor_type, actor_id = _target(request, "name")
    body = _folded(await _json_object(request, "timer"), _TIMER_FIELDS)
    timer = _validated(TimerRequest, body)
    try:
        await _client(request).create_timer(actor_type, actor_id, request.match_info["name"], timer)
    except NatriumError as exc:
        raise restated(exc, Codes.ACTOR_TIMER_CREATE, "error creating actor timer") from None
    return web.Response(status=204)


async def delete_timer(request: web.Request) -> web.Response:
    actor_type, actor_id = _target(request, "name")
    try:
        await _client(request).delete_timer(actor_type, actor_id, request.match_info["name"])
    except NatriumError as exc:
        raise restated(exc, Codes.ACTOR_TIMER_DELETE, "error deleting actor timer") from None
    return web.Response(status=204)


def _validated(model: type[_Body], body: dict[str, Any]) -> _Body:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        issue = exc.errors()[0]
        where = ".".join(str(part) for part in issue["loc"]) or "body"
        raise NatriumError(
            Codes.MALFORMED_REQUEST, f"failed deserializing HTTP body: {where}: {issue['msg']}", status=400
        ) from None


def routes() -> list[web.RouteDef]:
    method = f"{_BASE}/method/{{method}}"
    reminder, timer = f"{_BASE}/reminders/{{name}}", f"{_BASE}/timers/{{name}}"
    return [
        *(web.route(verb, method, invoke) for verb in ("GET", "POST", "PUT", "DELETE")),
        web.get(f"{_BASE}/state/{{key}}", get_state),
        web.post(f"{_BASE}/state", transaction),
        web.put(f"{_BASE}/state", transaction),
        web.post(reminder, create_reminder),
        web.put(reminder, create_reminder),
        web.get(reminder, get_reminder),
        web.delete(reminder, delete_reminder),
        web.post(timer, create_timer),
        web.put(timer, create_timer),
        web.delete(timer, delete_timer),
    ]


async def close(app: web.Application) -> None:
    """The gateway's actor client stops watching the host list with the app."""
    await app[GATEWAY].actors.close()
