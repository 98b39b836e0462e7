"""The pub/sub block on the bus: `<root>.pubsub.<pubsub>.{publish,bulkpublish,subscribe}`."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from typing import Any

from kernel.cloudevents import CLOUDEVENTS_JSON, RAW_PAYLOAD_HEADER, new_envelope, parse_structured, rfc3339
from kernel.components import Component
from kernel.errors import Codes, NatriumError
from kernel.metrics import METRICS
from kernel.service import ComponentService, Endpoint, RequestContext
from kernel.tracing import inject
from schemas.pubsub import (
    BulkPublishReply,
    BulkPublishRequest,
    FailedEntry,
    PublishReply,
    PublishRequest,
    SubscribeReply,
    SubscribeRequest,
)
from services.pubsub.stream import EventStream

__all__ = ["PubsubService", "DEFAULT_PUBSUB"]

DEFAULT_PUBSUB = Component(name="pubsub", type="pubsub.jetstream")
SUPPORTED_TYPES = ("pubsub.jetstream", "pubsub.nats-jetstream", "pubsub.natrium")


class PubsubService(ComponentService[EventStream]):
    """Serves every pubsub component of the loaded set."""

    block = "pubsub"
    default_component = DEFAULT_PUBSUB
    supported_types = SUPPORTED_TYPES

    def endpoints(self) -> list[Endpoint[Any]]:
        return [
            Endpoint("publish", PublishRequest, self.publish),
            Endpoint("bulkpublish", BulkPublishRequest, self.bulk_publish),
            Endpoint("subscribe", SubscribeRequest, self.subscribe),
        ]

    async def open_component(self, component: Component) -> EventStream:
        stream = EventStream(self.nc, component, self.subjects)
        await stream.open()
        return stream

    def not_found(self, name: str) -> NatriumError:
        return NatriumError(Codes.PUBSUB_NOT_FOUND, f"pubsub {name} is not found", status=404)

    async def publish(self, request: PublishRequest, ctx: RequestContext) -> PublishReply:
        stream = self.store(ctx)
        body, ctype = _body(request.data, request.content_type)
        event_id, message, headers = self._message(stream, request.topic, body, ctype, request.metadata, request.app_id)
        sequence, duplicate = await stream.publish(request.topic, message, headers)
        METRICS.pubsub_published.labels(ctx.component, request.topic).inc()
        return PublishReply(id=event_id, sequence=sequence, duplicate=duplicate)

    async def bulk_publish(self, request: BulkPublishRequest, ctx: RequestContext) -> BulkPublishReply:
        stream = self.store(ctx)
        published = METRICS.pubsub_published.labels(ctx.component, request.topic)

        async def one(entry_id: str, data: Any, ctype: str | None, metadata: dict[str, str]) -> FailedEntry | None:
            try:
                body, content_type = _body(data, ctype)
                _, message, headers = self._message(
                    stream, request.topic, body, content_type, {**request.metadata, **metadata}, request.app_id
                )
                await stream.publish(request.topic, message, headers)
            except NatriumError as exc:
                return FailedEntry(entry_id=entry_id, error=exc.message)
            published.inc()
            return None

        results = await asyncio.gather(*(one(e.entry_id, e.event, e.content_type, e.metadata) for e in request.entries))
        return BulkPublishReply(failed_entries=[r for r in results if r is not None])

    async def subscribe(self, request: SubscribeRequest, ctx: RequestContext) -> SubscribeReply:
        return await self.store(ctx).subscribe(request.app_id, request.topic, request.dead_letter_topic)

    def _message(
        self,
        stream: EventStream,
        topic: str,
        body: bytes,
        content_type: str,
        metadata: dict[str, str],
        app_id: str | None,
    ) -> tuple[str, bytes, dict[str, str]]:
        """(event id, stream message, headers): the CloudEvent, or the raw body when asked for."""
        trace_headers: dict[str, str] = inject({})
        headers: dict[str, str] = dict(trace_headers)
        ttl = _ttl(metadata.get("ttlInSeconds"))
        if ttl:
            headers["Nats-TTL"] = str(ttl)
        if metadata.get("rawPayload", "").lower() == "true":
            event_id = metadata.get("cloudevent.id") or str(uuid.uuid4())
            headers.update({"Nats-Msg-Id": event_id, "Content-Type": content_type, RAW_PAYLOAD_HEADER: "true"})
            return event_id, body, headers
        pubsub, source = stream.component.name, app_id or "natrium"
        parent, state = trace_headers.get("traceparent"), trace_headers.get("tracestate")
        if content_type.split(";", 1)[0].strip().lower() == CLOUDEVENTS_JSON:
            event = parse_structured(
                body, topic=topic, pubsub=pubsub, source=source, traceparent=parent, tracestate=state
            )
        else:
            event = new_envelope(
                body,
                content_type,
                topic=topic,
                pubsub=pubsub,
                source=source,
                metadata=metadata,
                traceparent=parent,
                tracestate=state,
            )
        if ttl:
            event["expiration"] = rfc3339(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=ttl))
        headers.update({"Nats-Msg-Id": str(event["id"]), "Content-Type": CLOUDEVENTS_JSON})
        return str(event["id"]), json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode(), headers


def _body(data: Any, content_type: str | None) -> tuple[bytes, str]:
    """Raw bytes pass as they are; any other value (a JSON bus request) is JSON unless it is text."""
    if isinstance(data, bytes):
        return data, content_type or "text/plain"
    if isinstance(data, str) and (content_type or "text/plain").split(";", 1)[0] != "application/json":
        return data.encode("utf-8"), content_type or "text/plain"
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode(), content_type or "application/json"


def _ttl(raw: str | None) -> int | None:
    if raw is None or raw == "":
        return None
    try:
        seconds = int(raw)
    except ValueError:
        seconds = 0
    if seconds <= 0:
        raise NatriumError(
            Codes.PUBSUB_REQUEST_METADATA, f"metadata ttlInSeconds must be a positive integer, got {raw!r}", status=400
        )
    return seconds
