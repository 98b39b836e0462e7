"""Actor settings and the actor API's request bodies, in Dapr's spelling.

`ActorConfig` is what an app answers on `GET /dapr/config`. The reminder and timer bodies accept
both official SDKs' wires: durations as Go strings (`5s`, `0h0m5s0ms0μs`), ISO 8601 (`PT5S`,
`R5/PT10S`) or RFC 3339 times; `data` as any JSON value (the Python SDK sends base64 text, the JS
SDK plain JSON: natrium stores it as given and hands it back as given).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ActorConfig",
    "ActorInvokeReply",
    "ActorInvokeRequest",
    "ActorReminderCreateRequest",
    "ActorReminderRef",
    "ActorReminderReply",
    "ActorStateGetReply",
    "ActorStateGetRequest",
    "ActorStateTransactionRequest",
    "ActorTarget",
    "ActorTypeConfig",
    "ReentrancyConfig",
    "ConstantRetry",
    "FailurePolicy",
    "ReminderRequest",
    "StateOperation",
    "TimerRequest",
]


class _Model(BaseModel):
    # Unknown fields are ignored, as daprd's Go decoding ignores them.
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class ReentrancyConfig(_Model):
    enabled: bool = False
    max_stack_depth: int = Field(default=32, alias="maxStackDepth", ge=1)


class ActorTypeConfig(_Model):
    """Per-type overrides (`entitiesConfig` in /dapr/config); None means "the app-wide value"."""

    entities: list[str] = Field(default_factory=list)
    actor_idle_timeout: str | None = Field(default=None, alias="actorIdleTimeout")
    actor_scan_interval: str | None = Field(default=None, alias="actorScanInterval")
    drain_ongoing_call_timeout: str | None = Field(default=None, alias="drainOngoingCallTimeout")
    drain_rebalanced_actors: bool | None = Field(default=None, alias="drainRebalancedActors")
    reentrancy: ReentrancyConfig | None = None


class ActorConfig(_Model):
    """The app's answer to `GET /dapr/config`, with Dapr's defaults."""

    entities: list[str] = Field(default_factory=list)
    actor_idle_timeout: str = Field(default="60m", alias="actorIdleTimeout")
    actor_scan_interval: str = Field(default="30s", alias="actorScanInterval")
    drain_ongoing_call_timeout: str = Field(default="60s", alias="drainOngoingCallTimeout")
    drain_rebalanced_actors: bool = Field(default=True, alias="drainRebalancedActors")
    reentrancy: ReentrancyConfig = Field(default_factory=ReentrancyConfig)
    entities_config: list[ActorTypeConfig] = Field(default_factory=list, alias="entitiesConfig")


class _Schedule(_Model):
    due_time: str | None = Field(default=None, alias="dueTime")
    period: str | None = None
    ttl: str | None = None
    data: Any = None


class ConstantRetry(_Model):
    interval: str = "1s"
    max_retries: int | None = Field(default=None, alias="maxRetries", ge=0)
    """None: retry until the fire succeeds."""


class FailurePolicy(_Model):
    """What to do when the actor fails a reminder fire: `{"drop": {}}` or `{"constant": {...}}`."""

    drop: dict[str, Any] | None = None
    constant: ConstantRetry | None = None


class ReminderRequest(_Schedule):
    """`POST|PUT /v1.0/actors/{type}/{id}/reminders/{name}`."""

    failure_policy: FailurePolicy | None = Field(default=None, alias="failurePolicy")
    """None: a few retries with back-off, then this fire is given up (the next one still comes)."""


class TimerRequest(_Schedule):
    """`POST|PUT /v1.0/actors/{type}/{id}/timers/{name}`: a reminder's times and data plus the callback."""

    callback: str | None = None


class StateOperation(_Model):
    """One entry of an actor state transaction: `{"operation": "upsert"|"delete", "request": {...}}`."""

    operation: str
    request: dict[str, Any] = Field(default_factory=dict)


# -- the actors block service on the bus: `<root>.actors.<type>.<operation>` (core helper) ----------


class ActorTarget(_Model):
    actor_id: str = Field(alias="actorId", min_length=1)


class ActorStateGetRequest(ActorTarget):
    """`state-get`: one key of one actor's state."""

    key: str = Field(min_length=1)


class ActorStateGetReply(_Model):
    found: bool
    data: bytes = b""
    """The value's JSON bytes, as the app wrote it."""


class ActorStateTransactionRequest(ActorTarget):
    """`state-transaction`: upserts and deletes applied as one atomic batch."""

    operations: list[StateOperation] = Field(default_factory=list)


class ActorReminderCreateRequest(ActorTarget, ReminderRequest):
    """`reminder-create`: a reminder's Dapr body plus whose and which it is."""

    name: str = Field(min_length=1)


class ActorReminderRef(ActorTarget):
    """`reminder-get` / `reminder-delete`."""

    name: str = Field(min_length=1)


class ActorReminderReply(_Model):
    found: bool
    reminder: dict[str, Any] = Field(default_factory=dict)
    """Dapr's GET reminder JSON: `dueTime`, `period`, `ttl`, `data`."""


class ActorInvokeRequest(ActorTarget):
    """`invoke`: call an actor method from any NATS client (the service routes it to the owner).

    `data` is passed to the method as is when it is bytes (msgpack bin), else as its JSON."""

    method: str = Field(min_length=1)
    data: Any = None
    content_type: str | None = Field(default=None, alias="contentType")
    headers: dict[str, str] = Field(default_factory=dict)


class ActorInvokeReply(_Model):
    status: int
    data: bytes = b""
    headers: dict[str, str] = Field(default_factory=dict)
