"""Spans natrium records itself and hands to OpenTelemetry's span processors when they end.

The SDK's `Tracer.start_span` measured ~37 us per span on the 2-core dev machine (a quarter of it
re-checking attribute values natrium builds from strings and ints, the rest locks, limits and
sampler plumbing for spans natrium has already sampled). A `RecordedSpan` keeps the few fields a
finished span needs and becomes an SDK `ReadableSpan` at `end()`: ~5 us, and the exporters
(OTLP, console, in-memory) see exactly what they would from the SDK.

Span processors get `on_end` only: `on_start` takes the SDK's own mutable span, and the ones
natrium installs (batch and simple export processors) do nothing there.
"""

from __future__ import annotations

import random
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.util.types import Attributes, AttributeValue

__all__ = ["RecordedSpan", "SpanSink"]

_SAMPLED = trace.TraceFlags(trace.TraceFlags.SAMPLED)
_UNSET = trace.Status(trace.StatusCode.UNSET)


@dataclass(frozen=True)
class SpanSink:
    """Where finished spans go: the processors (export pipelines) and the process's resource."""

    processors: Sequence[SpanProcessor]
    resource: Resource
    scope: InstrumentationScope = InstrumentationScope("natrium")

    def start(
        self,
        name: str,
        parent: trace.SpanContext | None,
        kind: trace.SpanKind,
        attributes: Mapping[str, AttributeValue] | None,
        trace_id: int | None = None,
    ) -> RecordedSpan:
        """A sampled span: a child of `parent` when it is valid, else the root of trace `trace_id`."""
        if parent is not None and parent.is_valid:
            trace_id, trace_state = parent.trace_id, parent.trace_state
        else:
            parent, trace_state = None, None
            trace_id = trace_id or random.getrandbits(128) or 1
        context = trace.SpanContext(
            trace_id=trace_id,
            span_id=random.getrandbits(64) or 1,
            is_remote=False,
            trace_flags=_SAMPLED,
            trace_state=trace_state,
        )
        return RecordedSpan(self, name, context, parent, kind, attributes)


class RecordedSpan(trace.Span):
    """One sampled hop: what it recorded until `end()` hands it to the sink's processors."""

    __slots__ = (
        "_sink",
        "_name",
        "_context",
        "_parent",
        "_kind",
        "_attributes",
        "_events",
        "_status",
        "_start",
        "_end",
    )

    def __init__(
        self,
        sink: SpanSink,
        name: str,
        context: trace.SpanContext,
        parent: trace.SpanContext | None,
        kind: trace.SpanKind,
        attributes: Mapping[str, AttributeValue] | None,
    ) -> None:
        self._sink = sink
        self._name = name
        self._context = context
        self._parent = parent
        self._kind = kind
        # natrium's attribute values are str/int/bool it made itself; None means "not known" here.
        self._attributes: dict[str, AttributeValue] = (
            {k: v for k, v in attributes.items() if v is not None} if attributes else {}
        )
        self._events: list[Event] = []
        self._status = _UNSET
        self._start = time.time_ns()
        self._end: int | None = None

    def get_span_context(self) -> trace.SpanContext:
        return self._context

    def is_recording(self) -> bool:
        return self._end is None

    def set_attributes(self, attributes: Mapping[str, AttributeValue]) -> None:
        for key, value in attributes.items():
            self.set_attribute(key, value)

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        if self._end is None and value is not None:
            self._attributes[key] = value

    def add_event(self, name: str, attributes: Attributes = None, timestamp: int | None = None) -> None:
        if self._end is None:
            self._events.append(Event(name, attributes, timestamp or time.time_ns()))

    def update_name(self, name: str) -> None:
        if self._end is None:
            self._name = name

    def set_status(self, status: trace.Status | trace.StatusCode, description: str | None = None) -> None:
        if self._end is not None:
            return
        if isinstance(status, trace.StatusCode):
            status = trace.Status(status, description)
        # As the SDK: an OK span stays OK, and UNSET never overrides what was set.
        if self._status.status_code is not trace.StatusCode.OK and status.status_code is not trace.StatusCode.UNSET:
            self._status = status

    def record_exception(
        self,
        exception: BaseException,
        attributes: Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        """The semantic-convention `exception` event, as the SDK records it."""
        kind = type(exception)
        module = kind.__module__
        event: dict[str, AttributeValue] = {
            "exception.type": f"{module}.{kind.__qualname__}" if module and module != "builtins" else kind.__qualname__,
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped),
        }
        if attributes:
            event.update(attributes)
        self.add_event("exception", event, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self._end is not None:
            return
        self._end = end_time or time.time_ns()
        finished = ReadableSpan(
            name=self._name,
            context=self._context,
            parent=self._parent,
            resource=self._sink.resource,
            attributes=self._attributes,
            events=tuple(self._events),
            kind=self._kind,
            status=self._status,
            start_time=self._start,
            end_time=self._end,
            instrumentation_scope=self._sink.scope,
        )
        for processor in self._sink.processors:
            processor.on_end(finished)
