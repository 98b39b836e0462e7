"""Bus requests and replies of the pub/sub block (`<root>.pubsub.<pubsub>.<operation>`).

`data` over msgpack is the raw body (bytes) with its `contentType`; over JSON it is any JSON value
and the content type defaults to `application/json`. Events land in the stream subject
`<root>.events.<pubsub>.<topic>` as CloudEvents JSON, which a client may also publish directly.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator
from pydantic_core import PydanticCustomError

__all__ = [
    "BulkEntry",
    "BulkPublishReply",
    "BulkPublishRequest",
    "FailedEntry",
    "PublishReply",
    "PublishRequest",
    "SubscribeReply",
    "SubscribeRequest",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


def _topic(value: str) -> str:
    if not value:
        # Dapr's own code and status for it, as the HTTP route gives (kernel.service.coded_error)
        raise PydanticCustomError("natrium_coded", "topic is empty", {"code": "ERR_TOPIC_NAME_EMPTY", "status": 404})
    return value


class PublishRequest(_Model):
    topic: StrictStr
    data: Any = None
    content_type: str | None = Field(default=None, alias="contentType")
    metadata: dict[str, StrictStr] = Field(default_factory=dict)
    app_id: str | None = Field(default=None, alias="appId")
    """The publisher, which becomes the CloudEvent `source`."""

    _valid_topic = field_validator("topic")(_topic)


class PublishReply(_Model):
    id: str
    """The CloudEvent id, also the stream's `Nats-Msg-Id`."""
    sequence: int
    duplicate: bool = False
    """True when the same id was published within the stream's duplicate window: stored once."""


class BulkEntry(_Model):
    entry_id: StrictStr = Field(alias="entryId")
    event: Any = None
    content_type: str | None = Field(default=None, alias="contentType")
    metadata: dict[str, StrictStr] = Field(default_factory=dict)

    @field_validator("entry_id")
    @classmethod
    def _entry_id(cls, value: str) -> str:
        if not value:
            raise ValueError("entryId is empty")
        return value


class BulkPublishRequest(_Model):
    topic: StrictStr
    entries: list[BulkEntry]
    metadata: dict[str, StrictStr] = Field(default_factory=dict)
    app_id: str | None = Field(default=None, alias="appId")

    _valid_topic = field_validator("topic")(_topic)

    @field_validator("entries")
    @classmethod
    def _unique_ids(cls, entries: list[BulkEntry]) -> list[BulkEntry]:
        ids = [e.entry_id for e in entries]
        if len(set(ids)) != len(ids):
            raise ValueError("entryId values must be unique")
        return entries


class FailedEntry(_Model):
    entry_id: str = Field(alias="entryId")
    error: str


class BulkPublishReply(_Model):
    failed_entries: list[FailedEntry] = Field(default_factory=list, alias="failedEntries")


class SubscribeRequest(_Model):
    topic: StrictStr
    app_id: StrictStr = Field(alias="appId")
    """The consumer group: every replica of an app shares one durable consumer per topic."""
    dead_letter_topic: str | None = Field(default=None, alias="deadLetterTopic")
    metadata: dict[str, StrictStr] = Field(default_factory=dict)

    _valid_topic = field_validator("topic")(_topic)


class SubscribeReply(_Model):
    stream: str
    consumer: str
    subject: str
    max_deliver: int = Field(alias="maxDeliver")
    backoff: list[float]
    """Seconds to wait before each redelivery after a RETRY; the last one repeats."""
    dead_letter_subject: str | None = Field(default=None, alias="deadLetterSubject")
    ack_wait: float = Field(default=30.0, alias="ackWait")
    """Seconds the server waits for an ack before redelivering; a subscriber still working on an
    event says "in progress" well within it."""
