"""Bus requests and replies of the configuration block (`<root>.configuration.<store>.<operation>`).

An item is Dapr's `{value, version, metadata}`: `value` is a string, `version` the key's KV
revision as a string. `set` and `delete` are natrium's own (Dapr's HTTP API only reads); the
`subscribe` reply tells a subscriber which KV subjects to watch and from which stream sequence.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator

__all__ = [
    "ConfigurationItem",
    "DeleteReply",
    "DeleteRequest",
    "GetReply",
    "GetRequest",
    "SetItem",
    "SetReply",
    "SetRequest",
    "SubscribeReply",
    "SubscribeRequest",
    "SubscriptionRecord",
    "UnsubscribeReply",
    "UnsubscribeRequest",
    "OPERATIONS",
    "RECORD_DELETE_TTL",
    "app_subscriptions_bucket",
    "item_from_stored",
    "safe_bucket_token",
    "stored_bytes",
]

OPERATIONS = ("get", "set", "delete", "subscribe", "unsubscribe")


class _Model(BaseModel):
    # Unknown fields are ignored, as Go's JSON decoding in daprd ignores them.
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


def _keys(keys: list[str]) -> list[str]:
    if any(not key for key in keys):
        raise ValueError("a key is empty")
    return keys


class ConfigurationItem(_Model):
    value: str = ""
    version: str = ""
    """The key's KV revision; it grows with every write to the store."""
    metadata: dict[str, str] = Field(default_factory=dict)


class GetRequest(_Model):
    keys: list[StrictStr] = Field(default_factory=list)
    """The keys to read; empty means every key of the store."""
    metadata: dict[str, StrictStr] = Field(default_factory=dict)

    _valid_keys = field_validator("keys")(_keys)


class GetReply(_Model):
    items: dict[str, ConfigurationItem] = Field(default_factory=dict)
    """The keys found; a missing key is left out, as in Dapr."""


class SetItem(_Model):
    value: StrictStr
    metadata: dict[str, StrictStr] = Field(default_factory=dict)


class SetRequest(_Model):
    items: dict[str, SetItem]
    """Written one after another in this order; not atomic."""

    @field_validator("items")
    @classmethod
    def _named(cls, items: dict[str, SetItem]) -> dict[str, SetItem]:
        if not items:
            raise ValueError("no items to set")
        _keys(list(items))
        return items


class SetReply(_Model):
    versions: dict[str, str] = Field(default_factory=dict)
    """The new version of each key written."""


class DeleteRequest(_Model):
    keys: list[StrictStr]

    _valid_keys = field_validator("keys")(_keys)


class DeleteReply(_Model):
    deleted: list[str] = Field(default_factory=list)
    """The keys that existed and are now deleted; deleting a missing key is no error."""


class SubscribeRequest(_Model):
    keys: list[StrictStr] = Field(default_factory=list)
    """The keys to watch; empty means every key of the store."""
    metadata: dict[str, StrictStr] = Field(default_factory=dict)
    delivery: Literal["watch", "app"] = "watch"
    """`watch`: the caller watches the KV subjects itself (SDK, any NATS client).
    `app`: the app channel of `appId` delivers Dapr's HTTP callbacks; the service keeps a
    subscription record until `unsubscribe`."""
    app_id: str | None = Field(default=None, alias="appId")
    channel_id: str | None = Field(default=None, alias="channelId")
    """The `natrium run` instance asking (its gateway says so): only that app channel delivers
    the record, and removes it when it stops. None: every app channel of `appId` delivers it."""

    _valid_keys = field_validator("keys")(_keys)


class SubscribeReply(_Model):
    id: str
    """The subscription id (Dapr's `subId`)."""
    bucket: str
    stream: str
    """The KV bucket's stream, `KV_<bucket>`."""
    subjects: list[str]
    """Filter subjects of the watch: `$KV.<bucket>.<encoded key>` per key, or `$KV.<bucket>.>`."""
    key_prefix: str = Field(alias="keyPrefix")
    """Strip it from a message subject, then decode the rest (`=XX` escapes of UTF-8 bytes)."""
    start_sequence: int = Field(alias="startSequence")
    """Watch from this stream sequence: every change after the subscription, none skipped."""


class SubscriptionRecord(_Model):
    """What the service keeps for an `app` subscription, for the app channel that delivers it.

    It carries the whole watch plan, so an app channel (in any language) follows the store from
    `startSequence` on its own, the way a `subscribe` reply tells a NATS client to."""

    id: str
    store: str
    keys: list[str] = Field(default_factory=list)
    app_id: str = Field(alias="appId")
    channel_id: str | None = Field(default=None, alias="channelId")
    """The `natrium run` instance that owns the record; None (older or shared-gateway records):
    every app channel of `appId`."""
    start_sequence: int = Field(alias="startSequence")
    created: str
    """RFC 3339 time of the subscription."""
    bucket: str
    stream: str
    subjects: list[str]
    key_prefix: str = Field(alias="keyPrefix")

    def plan(self) -> SubscribeReply:
        """The watch this record stands for, as a `subscribe` reply would give it."""
        return SubscribeReply(
            id=self.id,
            bucket=self.bucket,
            stream=self.stream,
            subjects=self.subjects,
            key_prefix=self.key_prefix,
            start_sequence=self.start_sequence,
        )


class UnsubscribeRequest(_Model):
    id: StrictStr = Field(min_length=1)


class UnsubscribeReply(_Model):
    ok: bool = True


def safe_bucket_token(name: str) -> str:
    """A name made bucket-safe: anything but letters, digits, `-` and `_` becomes `_`."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def app_subscriptions_bucket(root: str) -> str:
    """The KV bucket of a subject root's `app` subscription records (key `<store>.<id>`): the
    configuration service writes them, each app channel follows the ones of its app id."""
    return "configsubs-" + safe_bucket_token(root)


RECORD_DELETE_TTL = "60"
"""Seconds a record's delete marker lives: long enough for live app channels to see it."""


def stored_bytes(value: str, metadata: dict[str, str]) -> bytes:
    """The KV value of an item: `{"value","metadata"}` JSON (the version is the KV revision)."""
    return json.dumps({"value": value, "metadata": metadata}, separators=(",", ":"), ensure_ascii=False).encode()


def item_from_stored(data: bytes, revision: int) -> ConfigurationItem:
    """Read a KV value back; a value written by other tools (`nats kv put`) is taken as the text itself."""
    try:
        stored = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        stored = None
    if isinstance(stored, dict) and isinstance(stored.get("value"), str):
        metadata = stored.get("metadata")
        if not isinstance(metadata, dict):
            metadata = {}
        return ConfigurationItem(
            value=stored["value"], version=str(revision), metadata={str(k): str(v) for k, v in metadata.items()}
        )
    return ConfigurationItem(value=data.decode("utf-8", "replace"), version=str(revision))
