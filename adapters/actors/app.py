"""The seam between an actor host and the code that runs the actors.

`ActorHost` (placement, turns, timers) does not care whether the actor code is an HTTP app under
`natrium run` (adapters/appchannel/actors.py calls `PUT /actors/{type}/{id}/method/...`) or a
bus-native Python app (adapters/sdk/actors.py calls the `Actor` subclass in process). Both sides
implement `ActorApp`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from schemas.actors import ActorConfig

__all__ = ["ActorApp", "ActorCall", "ActorReply", "CallKind"]


class CallKind(StrEnum):
    """What a call to an actor is: a method, a reminder firing, or a timer firing."""

    METHOD = "method"
    REMINDER = "reminder"
    TIMER = "timer"


@dataclass(slots=True)
class ActorCall:
    """One call into an actor, as the host hands it to the app."""

    actor_type: str
    actor_id: str
    kind: CallKind
    name: str
    """The method name; for a reminder or a timer, the reminder's or the timer's name."""
    body: bytes = b""
    """A method's raw request body; for reminders and timers the JSON Dapr sends the app
    (`{"data", "dueTime", "period"}`, timers add `"callback"`)."""
    headers: dict[str, str] = field(default_factory=dict)
    """Forwarded headers: Content-Type, traceparent, and the `Dapr-Reentrancy-Id` of the chain."""


@dataclass(slots=True)
class ActorReply:
    """What the app answered. `status` is HTTP-like: 2xx success, anything else an app error."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class ActorApp(Protocol):
    """What an actor host needs from the code that runs the actors."""

    async def actor_config(self) -> ActorConfig:
        """The actor types hosted here and their settings (Dapr's `GET /dapr/config`)."""
        ...

    async def call(self, call: ActorCall) -> ActorReply:
        """Run one turn: a method, a reminder or a timer. The host guarantees one turn at a time
        per actor id (reentrant calls of the same chain excepted)."""
        ...

    async def deactivate(self, actor_type: str, actor_id: str) -> None:
        """The activation ends (idle, drain, rebalance): Dapr's `DELETE /actors/{type}/{id}`."""
        ...
