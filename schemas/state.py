"""Bus requests and replies of the state block (`<root>.state.<store>.<operation>`).

Values: over msgpack a `bytes` value is stored verbatim and any other value as its JSON
encoding; over JSON the value is any JSON and is stored as its JSON encoding, as Dapr does.
Replies carry the stored bytes as `data` (msgpack bin); a JSON reply gives `data` as the parsed
JSON value, or `dataBase64` when the stored bytes are not JSON.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator, model_serializer

__all__ = [
    "BulkGetReply",
    "BulkGetRequest",
    "BulkItem",
    "DeleteRequest",
    "GetReply",
    "GetRequest",
    "SaveItem",
    "SaveReply",
    "SaveRequest",
    "StateOptions",
    "TransactionOperation",
    "TransactionRequest",
    "OPERATIONS",
]

OPERATIONS = ("get", "bulkget", "save", "delete", "transaction")


class _Model(BaseModel):
    # Unknown fields are ignored, as Go's JSON decoding in daprd ignores them.
    model_config = ConfigDict(extra="ignore", populate_by_name=True, ser_json_bytes="base64")


def _blank_is_unset(value: Any) -> Any:
    # SDKs send "" or the proto enum's unspecified name for "not set".
    return None if value in ("", "CONCURRENCY_UNSPECIFIED", "CONSISTENCY_UNSPECIFIED") else value


class StateOptions(_Model):
    concurrency: Literal["first-write", "last-write"] | None = None
    consistency: Literal["strong", "eventual"] | None = None

    _blank = field_validator("concurrency", "consistency", mode="before")(_blank_is_unset)


class SaveItem(_Model):
    key: StrictStr
    value: Any = None
    etag: StrictStr | None = None
    """The ETag the key must still have; a JSON string, as daprd requires."""
    metadata: dict[str, StrictStr] = Field(default_factory=dict)
    options: StateOptions | None = None


class _AppScoped(_Model):
    app_id: str | None = Field(default=None, alias="appId")
    """The calling app, for the store's `keyPrefix` (Dapr stores `<app-id>||<key>`)."""
    metadata: dict[str, StrictStr] = Field(default_factory=dict)


class SaveRequest(_AppScoped):
    items: list[SaveItem]


class SaveReply(_Model):
    etags: list[str] = Field(default_factory=list)
    """New ETag of each saved item, in request order."""


class GetRequest(_AppScoped):
    key: StrictStr
    consistency: Literal["strong", "eventual"] | None = None

    _blank = field_validator("consistency", mode="before")(_blank_is_unset)


class _WithData(_Model):
    data: bytes | None = None

    @model_serializer(mode="wrap")
    def _json_data(self, handler: Any, info: Any) -> dict[str, Any]:
        out: dict[str, Any] = handler(self)
        if info.mode == "json" and self.data is not None:
            try:
                out["data"] = json.loads(self.data)
            except ValueError:
                del out["data"]
                out["dataBase64"] = base64.b64encode(self.data).decode()
        return out


class GetReply(_WithData):
    found: bool = False
    etag: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)


class BulkGetRequest(_AppScoped):
    keys: list[StrictStr]
    parallelism: int | None = Field(default=None, ge=1)


class BulkItem(_WithData):
    key: str
    etag: str | None = None
    metadata: dict[str, str] | None = None
    error: str | None = None


class BulkGetReply(_Model):
    items: list[BulkItem] = Field(default_factory=list)


class DeleteRequest(_AppScoped):
    key: StrictStr
    etag: StrictStr | None = None
    options: StateOptions | None = None


class TransactionOperation(_Model):
    operation: str
    """`upsert` or `delete`; anything else is ERR_NOT_SUPPORTED_STATE_OPERATION."""
    request: SaveItem


class TransactionRequest(_AppScoped):
    operations: list[TransactionOperation] = Field(default_factory=list)

    @field_validator("metadata", mode="before")
    @classmethod
    def _null_metadata(cls, value: Any) -> Any:
        return {} if value is None else value  # the JS SDK sends "metadata": null
