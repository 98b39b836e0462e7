"""The app side of the channel for a gRPC app: calls its `AppCallback` service the way daprd does.

The same seams as adapters/appchannel/http_app.py, so the app channel, the invocation server and
the delivery engine drive either kind of app: `forward` turns an invocation into `OnInvoke`,
`subscriptions` reads `ListTopicSubscriptions`, `deliver` sends `OnTopicEvent` and reads the
answer with daprd's rules (SUCCESS / RETRY / DROP as given, UNIMPLEMENTED drops the event, any
other error retries it).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from typing import Any

import grpc
from dapr.proto.common.v1 import common_pb2
from dapr.proto.runtime.v1 import appcallback_pb2 as pb
from dapr.proto.runtime.v1 import appcallback_pb2_grpc as callbacks
from google.protobuf import any_pb2, empty_pb2, struct_pb2
from grpc import aio

from adapters.delivery import Event, Retry, Status
from adapters.grpc.messaging import ANY_TYPE_HEADER, grpc_headers
from adapters.invocation import InvokeRequest, InvokeResponse
from adapters.subscriptions import Rule, SubscriptionSpec
from kernel.errors import Codes, NatriumError
from kernel.tracing import inject

__all__ = ["GrpcApp", "HTTP_OF_GRPC", "event_status", "topic_event_request"]

log = logging.getLogger("natrium.appchannel.grpc")

# The CloudEvent attributes TopicEventRequest has fields for; the rest travel as extensions.
_CORE = {"id", "source", "type", "specversion", "datacontenttype", "data", "data_base64"}
_STATUS = {
    pb.TopicEventResponse.SUCCESS: Status.SUCCESS,
    pb.TopicEventResponse.RETRY: Status.RETRY,
    pb.TopicEventResponse.DROP: Status.DROP,
}
# A gRPC callee's failure as the HTTP status an HTTP caller sees (grpc-gateway's table, as daprd).
HTTP_OF_GRPC = {
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}


class GrpcApp:
    """An app serving `AppCallback` on `host:port`; `open()` before use, `close()` after."""

    def __init__(self, app_id: str, port: int, host: str = "127.0.0.1", api_token: str | None = None) -> None:
        self.app_id = app_id
        self.host, self.port = host, port
        self.api_token = api_token
        self.channel: aio.Channel | None = None
        self.stub: callbacks.AppCallbackStub | None = None

    async def open(self) -> None:
        self.channel = aio.insecure_channel(f"{self.host}:{self.port}")
        self.stub = callbacks.AppCallbackStub(self.channel)

    async def close(self) -> None:
        if self.channel is not None:
            await self.channel.close()

    def _metadata(self, extra: dict[str, str] | None = None) -> list[tuple[str, str]]:
        headers = dict(extra or {})
        if self.api_token:
            headers["dapr-api-token"] = self.api_token  # APP_API_TOKEN, as daprd sends it
        return grpc_headers(inject(headers))

    async def wait_for_port(self, timeout: float, exited: asyncio.Event | None = None) -> None:
        """Return once the app answers its health check (or at least takes connections)."""
        assert self.channel is not None
        health = callbacks.AppCallbackHealthCheckStub(self.channel)
        deadline = time.monotonic() + timeout
        while True:
            try:
                await health.HealthCheck(empty_pb2.Empty(), metadata=self._metadata(), timeout=1.0)
                return
            except aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                    return  # an app without the health service is up all the same
            if exited is not None and exited.is_set():
                raise NatriumError("ERR_APP_EXITED", f"app {self.app_id} exited before opening port {self.port}")
            if time.monotonic() > deadline:
                raise NatriumError(
                    "ERR_APP_PORT_TIMEOUT", f"app {self.app_id} did not open gRPC port {self.port} within {timeout:g}s"
                )
            await asyncio.sleep(0.1)

    async def health_probe(self, path: str, timeout: float) -> bool:
        """Dapr's gRPC app health probe, `HealthCheck` (`path` is for HTTP apps). An app without the
        health service answered all the same: healthy."""
        assert self.channel is not None
        health = callbacks.AppCallbackHealthCheckStub(self.channel)
        try:
            await health.HealthCheck(empty_pb2.Empty(), metadata=self._metadata(), timeout=timeout)
        except aio.AioRpcError as exc:
            return exc.code() == grpc.StatusCode.UNIMPLEMENTED
        return True

    async def forward(self, request: InvokeRequest) -> InvokeResponse:
        assert self.stub is not None
        headers = {k.lower(): v for k, v in request.headers.items()}
        type_url = headers.pop(ANY_TYPE_HEADER, "")
        content_type = headers.pop("content-type", "")
        verbs = common_pb2.HTTPExtension.Verb
        verb = verbs.Value(request.verb.upper()) if request.verb.upper() in verbs.keys() else verbs.NONE
        message = common_pb2.InvokeRequest(
            method=request.method.lstrip("/"),
            data=any_pb2.Any(type_url=type_url, value=request.body),
            content_type=content_type,
            http_extension=common_pb2.HTTPExtension(
                verb=verb,
                querystring=request.query,
            ),
        )
        headers["dapr-callee-app-id"] = self.app_id
        try:
            call = self.stub.OnInvoke(message, metadata=self._metadata(headers))
            reply = await call
            initial = await call.initial_metadata()
        except aio.AioRpcError as exc:
            status = HTTP_OF_GRPC.get(exc.code(), 500)
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                raise NatriumError(
                    Codes.DIRECT_INVOKE, f"failed to invoke, id: {self.app_id}, err: the app is not reachable"
                ) from None
            details = (exc.details() or "").encode()
            return InvokeResponse(status, {"Content-Type": "text/plain"}, details, exc.code().value[0])
        reply_headers = {str(k): v for k, v in (initial or ()) if isinstance(v, str)}
        if reply.content_type:
            reply_headers["Content-Type"] = reply.content_type
        if reply.data.type_url:
            reply_headers[ANY_TYPE_HEADER] = reply.data.type_url
        return InvokeResponse(200, reply_headers, reply.data.value)

    async def subscriptions(self, retries: int = 5) -> list[SubscriptionSpec]:
        """The app's subscriptions from `ListTopicSubscriptions`; UNIMPLEMENTED means none."""
        assert self.stub is not None
        for attempt in range(retries):
            try:
                reply = await self.stub.ListTopicSubscriptions(empty_pb2.Empty(), metadata=self._metadata())
                break
            except aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                    return []
                if attempt + 1 == retries:
                    message = f"ListTopicSubscriptions failed: {exc.details()}"
                    raise NatriumError(Codes.COMPONENT_INVALID, message) from None
                await asyncio.sleep(0.5)
        return [_spec(s, self.app_id) for s in reply.subscriptions]

    async def deliver(self, route: str, event: Event) -> Status:
        """`OnTopicEvent` with `route` as its path; raises Retry when the app cannot be reached."""
        assert self.stub is not None
        request = topic_event_request(event, route)
        try:
            reply = await self.stub.OnTopicEvent(request, metadata=self._metadata({"pubsubname": event.pubsub}))
        except aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                return Status.DROP  # daprd: the app has no handler, redelivering cannot help
            log.warning("event delivery failed: %s", exc.details(), extra={"event_id": event.id, "route": route})
            raise Retry(f"{exc.code().name}: {exc.details()}") from None
        return _STATUS.get(reply.status, Status.RETRY)

    async def input_bindings(self) -> list[str]:
        """The names `ListInputBindings` gives; UNIMPLEMENTED means none."""
        assert self.stub is not None
        try:
            reply = await self.stub.ListInputBindings(empty_pb2.Empty(), metadata=self._metadata())
        except aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                return []
            raise NatriumError(Codes.COMPONENT_INVALID, f"ListInputBindings failed: {exc.details()}") from None
        return list(reply.bindings)

    async def binding_event(
        self, name: str, data: bytes, metadata: dict[str, str], timeout: float
    ) -> pb.BindingEventResponse:
        """`OnBindingEvent`; raises aio.AioRpcError when the app fails it."""
        assert self.stub is not None
        request = pb.BindingEventRequest(name=name, data=data, metadata=metadata)
        response: pb.BindingEventResponse = await self.stub.OnBindingEvent(
            request, metadata=self._metadata(), timeout=timeout
        )
        return response


def topic_event_request(event: Event, route: str = "") -> pb.TopicEventRequest:
    """An event as daprd hands it to a gRPC app (or a streaming subscriber)."""
    envelope = event.envelope
    extensions = struct_pb2.Struct()
    extensions.update({k: v for k, v in envelope.items() if k not in _CORE})
    return pb.TopicEventRequest(
        id=str(envelope.get("id", event.id)),
        source=str(envelope.get("source", "")),
        type=str(envelope.get("type", "")),
        spec_version=str(envelope.get("specversion", "")),
        data_content_type=str(envelope.get("datacontenttype", "")),
        data=_data(envelope),
        topic=event.topic,
        pubsub_name=event.pubsub,
        path=route,
        extensions=extensions,
    )


def event_status(status: int) -> Status:
    """A `TopicEventResponse` status as the delivery engine's; anything unknown retries."""
    return _STATUS.get(status, Status.RETRY)  # type: ignore[call-overload]


def _data(envelope: dict[str, Any]) -> bytes:
    """The payload bytes daprd hands a gRPC app: base64 decoded, text as it is, JSON re-encoded."""
    if "data_base64" in envelope:
        return base64.b64decode(str(envelope["data_base64"]))
    data = envelope.get("data")
    if data is None:
        return b""
    if isinstance(data, str):
        content_type = str(envelope.get("datacontenttype", ""))
        if "json" not in content_type:
            return data.encode()
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def _spec(subscription: pb.TopicSubscription, app_id: str) -> SubscriptionSpec:
    where = f"app {app_id} ListTopicSubscriptions"
    routes = subscription.routes
    rules = tuple(Rule.compiled(r.match, r.path, where) for r in routes.rules)
    # No rule and no default: daprd delivers with an empty path, which the SDK's App looks up.
    default = routes.default or ("" if not rules else None)
    return SubscriptionSpec(
        pubsub=subscription.pubsub_name,
        topic=subscription.topic,
        rules=rules,
        default=default,
        dead_letter_topic=subscription.dead_letter_topic or None,
        metadata=dict(subscription.metadata),
    )
