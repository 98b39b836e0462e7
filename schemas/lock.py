"""Bus requests and replies of the distributed lock block (`<root>.lock.<store>.{lock,unlock}`).

Fields are Dapr's (`resourceId`, `lockOwner`, `expiryInSeconds`). A missing field is its zero
value, as in daprd's JSON decoding, so an empty id or owner gets Dapr's own 400 message from the
service rather than a schema error.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator

__all__ = ["LockReply", "LockRequest", "UnlockReply", "UnlockRequest", "UnlockStatus", "OPERATIONS"]

OPERATIONS = ("lock", "unlock")
_INT32 = 2**31 - 1


class UnlockStatus(IntEnum):
    """Dapr's `UnlockResponse.Status`; the HTTP API answers it as a number."""

    SUCCESS = 0
    LOCK_DOES_NOT_EXIST = 1
    LOCK_BELONGS_TO_OTHERS = 2
    INTERNAL_ERROR = 3


class _Model(BaseModel):
    # Unknown fields are ignored, as Go's JSON decoding in daprd ignores them.
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


def _null_is_empty(value: Any) -> Any:
    return "" if value is None else value


class _LockTarget(_Model):
    resource_id: StrictStr = Field(default="", alias="resourceId")
    """Any string; the app's own name for what it locks."""
    lock_owner: StrictStr = Field(default="", alias="lockOwner")
    """Who holds the lock; only this owner can unlock it."""
    app_id: str | None = Field(default=None, alias="appId")
    """The calling app, for the store's `keyPrefix` (Dapr keys locks by app id by default)."""

    _nulls = field_validator("resource_id", "lock_owner", mode="before")(_null_is_empty)


class LockRequest(_LockTarget):
    expiry_in_seconds: int = Field(default=0, alias="expiryInSeconds", ge=-_INT32 - 1, le=_INT32)
    """Lease length; the lock ends by itself after it (an int32, as in Dapr's proto)."""

    @field_validator("expiry_in_seconds", mode="before")
    @classmethod
    def _no_bool(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("expiryInSeconds must be an integer, not a boolean")
        return 0 if value is None else value


class LockReply(_Model):
    success: bool
    """False when another owner (or the same one) holds the lock: not an error."""


class UnlockRequest(_LockTarget):
    pass


class UnlockReply(_Model):
    status: int = Field(ge=0, le=3)
    """An `UnlockStatus` value: 0 SUCCESS, 1 LOCK_DOES_NOT_EXIST, 2 LOCK_BELONGS_TO_OTHERS, 3 INTERNAL_ERROR."""
