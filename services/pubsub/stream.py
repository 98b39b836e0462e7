"""One pub/sub component on one JetStream stream: publishing envelopes and defining consumer groups."""

from __future__ import annotations

import logging

from nats.aio.client import Client
from nats.js import api

from kernel.components import Component
from kernel.durations import parse_duration
from kernel.errors import Codes, NatriumError
from kernel.jetstream import JetStreamRejected, ensure_stream, publish, storage_of, transport_errors_as
from kernel.subjects import Subjects, encode_token
from schemas.pubsub import SubscribeReply

__all__ = ["EventStream"]

log = logging.getLogger("natrium.pubsub")
_RETENTION = {"limits": api.RetentionPolicy.LIMITS, "interest": api.RetentionPolicy.INTEREST}
_DELIVER = {"all": api.DeliverPolicy.ALL, "new": api.DeliverPolicy.NEW, "last": api.DeliverPolicy.LAST}


class EventStream:
    """Settings come from the component's metadata; each has a default a laptop can live with."""

    def __init__(self, nc: Client, component: Component, subjects: Subjects) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.component = component
        self.subjects = subjects
        self.name = component.meta("streamName") or subjects.stream("pubsub", component.name)
        meta = component.meta
        try:
            self.max_age = parse_duration(meta("maxAge", "24h") or "24h")
            self.ack_wait = parse_duration(meta("ackWait", "30s") or "30s")
            self.backoff = [parse_duration(p) for p in (meta("backOff", "1s,2s,5s,10s,30s") or "1s").split(",")]
            self.duplicate_window = parse_duration(meta("duplicateWindow", "2m") or "2m")
        except ValueError as exc:
            raise self._invalid(str(exc)) from None
        self.max_deliver = component.meta_int("maxDeliver", 5)
        self.max_ack_pending = component.meta_int("maxAckPending", 1000)
        self.retention = (meta("retention", "limits") or "limits").lower()
        self.deliver_policy = (meta("deliverPolicy", "all") or "all").lower()
        if self.retention not in _RETENTION:
            raise self._invalid("retention must be limits or interest")
        if self.deliver_policy not in _DELIVER:
            raise self._invalid("deliverPolicy must be all, new or last")
        if self.max_deliver < 1:
            raise self._invalid("maxDeliver must be at least 1")

    def _invalid(self, why: str) -> NatriumError:
        return NatriumError(
            Codes.COMPONENT_INVALID, f"component {self.component.name!r} ({self.component.source}): {why}"
        )

    def stream_config(self) -> api.StreamConfig:
        return api.StreamConfig(
            name=self.name,
            description=f"natrium pubsub {self.component.name}",
            subjects=[self.subjects.events_wildcard(self.component.name)],
            retention=_RETENTION[self.retention],
            max_age=self.max_age or None,
            max_bytes=self.component.meta_int("maxBytes", -1),
            max_msg_size=self.component.meta_int("maxMessageSize", -1),
            num_replicas=self.component.meta_int("replicas", 1),
            duplicate_window=self.duplicate_window,
            allow_msg_ttl=True,
            storage=storage_of(self.component),
        )

    async def open(self) -> None:
        await ensure_stream(self.js, self.stream_config())
        log.info("pubsub ready", extra={"pubsub": self.component.name, "stream": self.name})

    @transport_errors_as(Codes.PUBSUB_PUBLISH_MESSAGE)
    async def publish(self, topic: str, body: bytes, headers: dict[str, str]) -> tuple[int, bool]:
        """Store one message; returns (stream sequence, duplicate)."""
        try:
            ack = await publish(self.nc, self.subjects.events(self.component.name, topic), body, headers)
        except JetStreamRejected as exc:
            raise NatriumError(
                Codes.PUBSUB_PUBLISH_MESSAGE,
                f"error when publishing to topic {topic} in pubsub {self.component.name}: {exc.description}",
                retryable=exc.code == 503,
            ) from None
        return int(ack["seq"]), bool(ack.get("duplicate"))

    def group_name(self, app_id: str, topic: str) -> str:
        """The durable consumer of a consumer group: one per (app id, topic) on this stream.

        '==' never occurs inside an encoded token (escapes are '=' and two hex digits), so the
        pair is unambiguous, unlike '_' which tokens keep as is."""
        return f"{encode_token(app_id)}=={encode_token(topic)}"

    async def subscribe(self, app_id: str, topic: str, dead_letter_topic: str | None) -> SubscribeReply:
        """Create or update the group's durable consumer and tell the subscriber how to consume it."""
        durable = self.group_name(app_id, topic)
        subject = self.subjects.events(self.component.name, topic)
        config = api.ConsumerConfig(
            durable_name=durable,
            description=f"natrium group {app_id} on {topic}",
            filter_subject=subject,
            ack_policy=api.AckPolicy.EXPLICIT,
            deliver_policy=_DELIVER[self.deliver_policy],
            ack_wait=self.ack_wait,
            # Unlimited at the server: the subscriber counts deliveries itself and dead-letters at
            # maxDeliver, so a message that keeps timing out is parked, not silently abandoned.
            max_deliver=-1,
            max_ack_pending=self.max_ack_pending,
        )
        await self.js.add_consumer(self.name, config)
        dlq = self.subjects.events(self.component.name, dead_letter_topic) if dead_letter_topic else None
        return SubscribeReply(
            stream=self.name,
            consumer=durable,
            subject=subject,
            max_deliver=self.max_deliver,
            backoff=self.backoff,
            dead_letter_subject=dlq,
            ack_wait=self.ack_wait,
        )
