"""Bus requests and replies of the secrets block (`<root>.secrets.<store>.<operation>`).

A secret is a map of string keys to string values, as in Dapr; a single-value store answers
`{name: value}`. `get` and `bulk` are what apps call (filtered by the caller's secret scopes);
`put`, `delete` and `list` are for operators and write only to the sealed store.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator

__all__ = [
    "BulkSecretReply",
    "BulkSecretRequest",
    "DeleteSecretRequest",
    "GetSecretReply",
    "GetSecretRequest",
    "ListSecretsReply",
    "ListSecretsRequest",
    "PutSecretRequest",
    "OPERATIONS",
]

OPERATIONS = ("get", "bulk", "put", "delete", "list")


class _Model(BaseModel):
    # Unknown fields are ignored, as Go's JSON decoding in daprd ignores them.
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


def _name(value: str) -> str:
    if not value:
        raise ValueError("secret name is empty")
    return value


class _Named(_Model):
    name: StrictStr
    """The secret's name (Dapr's `key` in `GET /v1.0/secrets/{store}/{key}`)."""

    _nonempty = field_validator("name")(_name)


class _Caller(_Model):
    app_id: str | None = Field(default=None, alias="appId")
    """The calling app: the Configuration `secrets.scopes` that apply to it filter what it reads."""
    metadata: dict[str, StrictStr] = Field(default_factory=dict)


class GetSecretRequest(_Named, _Caller):
    pass


class GetSecretReply(_Model):
    data: dict[str, str] = Field(default_factory=dict)


class BulkSecretRequest(_Caller):
    pass


class BulkSecretReply(_Model):
    data: dict[str, dict[str, str]] = Field(default_factory=dict)
    """Every secret the caller may read: name -> {key: value}."""


class PutSecretRequest(_Named):
    value: StrictStr | dict[StrictStr, StrictStr]
    """A string is stored as `{name: value}`; a map keeps its keys (a multi-valued secret)."""


class DeleteSecretRequest(_Named):
    pass


class ListSecretsRequest(_Model):
    pass


class ListSecretsReply(_Model):
    names: list[str] = Field(default_factory=list)
    """Secret names, sorted; never values."""
