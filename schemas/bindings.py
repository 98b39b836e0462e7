"""Bus requests and replies of the bindings block (`<root>.bindings.<name>.{invoke,subscribe,inputs}`).

`data` travels as raw bytes: a msgpack `bin`, and base64 text in a JSON body. The HTTP gateway
JSON-encodes Dapr's `data` value before it sends it, as daprd does; the SDK sends bytes as they are.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "BindingInfo",
    "InputBindingsReply",
    "InputBindingsRequest",
    "InvokeBindingReply",
    "InvokeBindingRequest",
    "SubscribeBindingReply",
    "SubscribeBindingRequest",
    "EVENT_METADATA_HEADER",
    "OPERATIONS",
]

OPERATIONS = ("invoke", "subscribe", "inputs")
EVENT_METADATA_HEADER = "Natrium-Binding-Metadata"
"""Header of an input event in its stream: the event's metadata as one JSON object (NATS headers
would not keep the case of its keys)."""


class _Model(BaseModel):
    # base64 keeps binary data intact in JSON bodies; msgpack carries bytes natively.
    model_config = ConfigDict(extra="ignore", populate_by_name=True, ser_json_bytes="base64", val_json_bytes="base64")


def _none_is_empty_map(value: object) -> object:
    return {} if value is None else value


class InvokeBindingRequest(_Model):
    operation: str = ""
    """The driver's operation (`create`, `get`, `query`...); empty is refused as daprd refuses it."""
    data: bytes = b""
    metadata: dict[str, str] = Field(default_factory=dict)
    """Per-request metadata (`key`, `sql`, `fileName`, HTTP headers...), as Dapr defines per driver."""
    app_id: str | None = Field(default=None, alias="appId")

    _maps = field_validator("metadata", mode="before")(_none_is_empty_map)

    @field_validator("data", mode="before")
    @classmethod
    def _text_is_utf8(cls, value: object) -> object:
        return b"" if value is None else value


class InvokeBindingReply(_Model):
    data: bytes | None = None
    """None when the target answered nothing (the gateway replies 204)."""
    metadata: dict[str, str] = Field(default_factory=dict)


class SubscribeBindingRequest(_Model):
    app_id: str = Field(alias="appId", min_length=1)


class SubscribeBindingReply(_Model):
    """Where an app's events of one input binding wait, and how to retry them."""

    stream: str
    consumer: str
    subject: str
    backoff: list[float] = Field(default_factory=lambda: [1.0])
    """Seconds before redelivering an event the app refused, by delivery number (last repeats)."""
    ack_wait: float = Field(default=60.0, alias="ackWait")
    """Seconds the server waits for an ack; an app channel still delivering says "in progress" within it."""


class InputBindingsRequest(_Model):
    app_id: str | None = Field(default=None, alias="appId")
    """Only bindings scoped to this app (all unscoped ones, too); None lists every input binding."""


class BindingInfo(_Model):
    name: str
    type: str
    route: str
    """Where an HTTP app receives the events: the component's `route`, else `/<name>`."""
    declared: bool = False
    """True when the component's `direction` names `input`: daprd then skips the OPTIONS probe."""


class InputBindingsReply(_Model):
    bindings: list[BindingInfo] = Field(default_factory=list)
