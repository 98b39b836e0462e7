"""What every binding driver is: output operations, an optional event reader, and their errors.

A driver validates its metadata in `__init__` (bad metadata stops the component, as in Dapr), and
connects lazily, so an unreachable target costs the calls that need it, not the whole service.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from nats.aio.client import Client

from kernel.components import Component
from kernel.durations import parse_duration
from kernel.errors import Codes, NatriumError
from kernel.subjects import Subjects

__all__ = [
    "BindingRequest",
    "BindingResponse",
    "Driver",
    "DriverEnv",
    "Emit",
    "InputEvent",
    "TargetError",
    "invalid",
    "unquote",
]


@dataclass
class BindingRequest:
    operation: str
    data: bytes = b""
    metadata: dict[str, str] = field(default_factory=dict)

    def meta(self, key: str, default: str = "") -> str:
        """A request metadata value; exact key first, then case-insensitive (Dapr keys are camelCase)."""
        if key in self.metadata:
            return self.metadata[key]
        lowered = key.lower()
        for name, value in self.metadata.items():
            if name.lower() == lowered:
                return value
        return default


@dataclass
class BindingResponse:
    data: bytes | None = None
    metadata: dict[str, str] = field(default_factory=dict)


class TargetError(Exception):
    """The target refused or failed; `metadata` still reaches the caller (daprd sends it even on error)."""

    def __init__(self, message: str, metadata: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.metadata = metadata or {}


@dataclass
class InputEvent:
    """One event read from a source, on its way into the binding's stream."""

    data: bytes
    metadata: dict[str, str] = field(default_factory=dict)
    id: str | None = None
    """A source-given id: the stream stores a redelivered copy once (`Nats-Msg-Id`)."""


Emit = Callable[[InputEvent], Awaitable[None]]
"""Stores an event durably; returns once JetStream acknowledged it, raises if it did not."""


@dataclass(frozen=True)
class DriverEnv:
    """What the bindings service lends its drivers."""

    nc: Client
    subjects: Subjects


def invalid(component: Component, why: str) -> NatriumError:
    return NatriumError(Codes.COMPONENT_INVALID, f"component {component.name!r} ({component.source}): {why}")


def unquote(data: bytes) -> bytes:
    """The text inside a JSON string, for drivers that store text: the gateway JSON-encodes `data`."""
    if len(data) >= 2 and data[:1] == b'"' and data[-1:] == b'"':
        try:
            text = json.loads(data)
        except ValueError:
            return data
        if isinstance(text, str):
            return text.encode("utf-8")
    return data


class Driver:
    """Base of every driver; subclasses set `operations` (output) and/or `reads` (input)."""

    operations: ClassVar[tuple[str, ...]] = ()
    reads: ClassVar[bool] = False
    """True for drivers that produce events (input bindings)."""
    competing: ClassVar[bool] = True
    """True when several replicas may read the source at once without duplicating events."""

    def __init__(self, component: Component, env: DriverEnv) -> None:
        self.component = component
        self.env = env

    def duration(self, key: str, default: str) -> float:
        """A metadata duration (`5s`, `1m`, or bare seconds)."""
        raw = self.component.meta(key) or default
        try:
            return parse_duration(raw)
        except ValueError as exc:
            raise invalid(self.component, f"metadata {key}: {exc}") from None

    def required(self, *keys: str) -> str:
        """The first of `keys` that is set (Dapr renamed some over time), or a clear error."""
        for key in keys:
            value = self.component.meta(key)
            if value:
                return value
        raise invalid(self.component, f"metadata {keys[0]} is required")

    async def invoke(self, request: BindingRequest) -> BindingResponse:
        raise TargetError(f"binding {self.component.name} is input only")

    async def read(self, emit: Emit) -> None:
        """Read events until cancelled, calling `emit` for each and acking the source only after it returns."""
        raise NotImplementedError

    async def close(self) -> None:
        """Release connections; called once at service stop."""

    def describe(self) -> dict[str, Any]:
        return {"operations": list(self.operations), "input": self.reads}
