"""Publish, invoke and output-binding RPCs: the bus requests of adapters/gateway/{pubsub,invoke,bindings}.py.

Invocation carries the call as the HTTP gateway does (adapters/invocation.py): the `http_extension`
verb (POST when unset, as daprd calls an HTTP app) and query string, the call's gRPC metadata as
headers, the `Any` payload's bytes as the body. A callee's non-2xx status comes back as daprd's
gRPC error for it; the type URL of a packed protobuf message rides along in a header, so a gRPC
callee gets its `Any` back whole.
"""

from __future__ import annotations

from typing import Any

from dapr.proto.common.v1 import common_pb2
from dapr.proto.runtime.v1 import binding_pb2, invoke_pb2, pubsub_pb2
from google.protobuf import any_pb2, empty_pb2

from adapters.gateway.errors import transport_as
from adapters.grpc.errors import grpc_status, http_status
from adapters.grpc.rpc import Rpcs, abort, incoming_metadata, rpc
from adapters.invocation import InvokeRequest, invoke
from kernel.errors import Codes, NatriumError
from schemas.bindings import InvokeBindingReply
from schemas.pubsub import BulkPublishReply

__all__ = ["ANY_TYPE_HEADER", "MessagingRpcs", "grpc_headers"]

ANY_TYPE_HEADER = "dapr-any-type-url"
"""The type URL of an invocation's protobuf `Any`, when the caller packed a message."""
HTTP_STATUS_HEADER = "dapr-http-status"
_VERBS = dict(common_pb2.HTTPExtension.Verb.items())
_NOT_FORWARDED = {"content-type", "user-agent", "te", "dapr-api-token", "grpc-accept-encoding", "grpc-timeout"}


def call_headers(metadata: dict[str, str]) -> dict[str, str]:
    """gRPC metadata as invocation headers: transport fields and pseudo-headers left out."""
    return {k: v for k, v in metadata.items() if not k.startswith(":") and k not in _NOT_FORWARDED}


def grpc_headers(headers: dict[str, str]) -> list[tuple[str, str]]:
    """Reply headers as gRPC metadata: lower-case ASCII keys and values only, as gRPC requires."""
    out = []
    for key, value in headers.items():
        key = key.lower()
        if key.startswith(("grpc-", ":")) or key.endswith("-bin") or key in ("content-length", "transfer-encoding"):
            continue
        if key.isascii() and value.isascii() and all(c.isalnum() or c in "-_." for c in key):
            out.append((key, value))
    return out


class MessagingRpcs(Rpcs):
    async def _pubsub(self, pubsub: str, operation: str, body: dict[str, Any], **kwargs: Any) -> Any:
        gateway = self.gateway
        if not pubsub:
            raise NatriumError(Codes.PUBSUB_EMPTY, "pubsub name is empty", status=404)
        if not body.get("topic"):
            raise NatriumError(Codes.TOPIC_NAME_EMPTY, f"topic is empty in pubsub {pubsub}", status=404)
        body["appId"] = gateway.config.app_id
        try:
            return await gateway.bus.request(gateway.subjects.block("pubsub", pubsub, operation), body, **kwargs)
        except NatriumError as exc:
            if exc.code == Codes.NO_RESPONDERS:
                message = f"{exc.message}: is the pubsub service running?"
                raise NatriumError(Codes.PUBSUB_NOT_CONFIGURED, message, status=400) from None
            raise transport_as(exc, Codes.PUBSUB_PUBLISH_MESSAGE) from None

    @rpc
    async def PublishEvent(self, request: pubsub_pb2.PublishEventRequest, context: Any) -> empty_pb2.Empty:
        body = {
            "topic": request.topic,
            "data": request.data,
            "contentType": request.data_content_type or None,
            "metadata": dict(request.metadata),
        }
        await self._pubsub(request.pubsub_name, "publish", body)
        return empty_pb2.Empty()

    @rpc
    async def BulkPublishEvent(
        self, request: pubsub_pb2.BulkPublishRequest, context: Any
    ) -> pubsub_pb2.BulkPublishResponse:
        entries = [
            {
                "entryId": entry.entry_id,
                "event": entry.event,
                "contentType": entry.content_type or None,
                "metadata": dict(entry.metadata),
            }
            for entry in request.entries
        ]
        body = {"topic": request.topic, "entries": entries, "metadata": dict(request.metadata)}
        reply: BulkPublishReply = await self._pubsub(
            request.pubsub_name, "bulkpublish", body, reply_model=BulkPublishReply
        )
        failed = [
            pubsub_pb2.BulkPublishResponseFailedEntry(entry_id=f.entry_id, error=f.error) for f in reply.failed_entries
        ]
        return pubsub_pb2.BulkPublishResponse(failedEntries=failed)

    BulkPublishEventAlpha1 = BulkPublishEvent

    @rpc
    async def InvokeService(
        self, request: invoke_pb2.InvokeServiceRequest, context: Any
    ) -> common_pb2.InvokeResponse | None:
        gateway = self.gateway
        message = request.message
        if not request.id:
            raise NatriumError(Codes.DIRECT_INVOKE, "failed getting app id either from the URL path or the header")
        verb = common_pb2.HTTPExtension.Verb.Name(message.http_extension.verb)
        headers = call_headers(incoming_metadata(context))
        if message.content_type:
            headers["Content-Type"] = message.content_type
        if message.data.type_url:
            headers[ANY_TYPE_HEADER] = message.data.type_url
        call = InvokeRequest(
            app_id=request.id,
            method="/" + message.method.lstrip("/"),
            verb="POST" if verb == "NONE" else verb,
            query=message.http_extension.querystring,
            headers=headers,
            body=message.data.value,
            caller=gateway.config.app_id,
        )
        policy = gateway.resiliency.for_app(request.id)
        timeout = gateway.config.invoke_timeout
        response = await invoke(gateway.nc, gateway.subjects, call, timeout=timeout, policy=policy)
        reply_headers = {k.lower(): v for k, v in response.headers.items()}
        type_url = reply_headers.pop(ANY_TYPE_HEADER, "")
        content_type = reply_headers.get("content-type", "")
        await context.send_initial_metadata([*grpc_headers(reply_headers), (HTTP_STATUS_HEADER, str(response.status))])
        if response.failed:
            await abort(context, http_status(response.status, response.body.decode("utf-8", "replace")))
        return common_pb2.InvokeResponse(
            data=any_pb2.Any(type_url=type_url, value=response.body), content_type=content_type
        )

    @rpc
    async def InvokeBinding(
        self, request: binding_pb2.InvokeBindingRequest, context: Any
    ) -> binding_pb2.InvokeBindingResponse:
        gateway = self.gateway
        # Unlike HTTP, daprd hands a gRPC call's bytes to the binding as they are.
        body = {
            "operation": request.operation,
            "data": request.data,
            "metadata": dict(request.metadata),
            "appId": gateway.config.app_id,
        }
        subject = gateway.subjects.block("bindings", request.name, "invoke")
        try:
            reply = await gateway.bus.request(subject, body, InvokeBindingReply, timeout=gateway.config.invoke_timeout)
        except NatriumError as exc:
            error = transport_as(exc, Codes.INVOKE_OUTPUT_BINDING, Codes.INVOKE_OUTPUT_BINDING)
            await context.send_initial_metadata(_metadata_headers(_metadata_of(exc)))
            await abort(context, grpc_status(NatriumError(error.code, error.message, status=error.status)))
            raise  # not reached: abort raises
        await context.send_initial_metadata(_metadata_headers(reply.metadata))
        return binding_pb2.InvokeBindingResponse(data=reply.data or b"", metadata=reply.metadata)


def _metadata_headers(metadata: dict[str, str]) -> list[tuple[str, str]]:
    """A binding's reply metadata as `metadata.<key>` headers, as daprd sends them."""
    return grpc_headers({f"metadata.{k}": v for k, v in metadata.items()})


def _metadata_of(error: NatriumError) -> dict[str, str]:
    for detail in error.details:
        if isinstance(detail, dict) and isinstance(detail.get("metadata"), dict):
            return {str(k): str(v) for k, v in detail["metadata"].items()}
    return {}
