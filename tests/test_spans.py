"""natrium's own span records: what they hand the SDK's processors at the end."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from kernel.spans import SpanSink


def sink() -> tuple[SpanSink, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    return SpanSink([SimpleSpanProcessor(exporter)], Resource.create({"service.name": "t"})), exporter


def test_a_child_keeps_its_parents_trace_and_state_and_a_root_the_drawn_trace_id() -> None:
    spans, exporter = sink()
    state = trace.TraceState([("vendor", "v1")])
    parent = trace.SpanContext(0xABC, 0x123, is_remote=True, trace_flags=trace.TraceFlags(1), trace_state=state)
    spans.start("child", parent, trace.SpanKind.SERVER, {"a": "1", "gone": None}).end()
    spans.start("root", None, trace.SpanKind.CLIENT, None, trace_id=0xDEF).end()
    child, root = exporter.get_finished_spans()
    assert child.context.trace_id == 0xABC and child.parent == parent and child.context.trace_state == state
    assert child.context.trace_flags.sampled and dict(child.attributes or {}) == {"a": "1"}
    assert child.resource.attributes["service.name"] == "t" and child.instrumentation_scope.name == "natrium"
    assert root.context.trace_id == 0xDEF and root.parent is None and root.kind is trace.SpanKind.CLIENT


def test_status_exceptions_and_end_behave_as_the_sdks() -> None:
    spans, exporter = sink()
    active = spans.start("op", None, trace.SpanKind.INTERNAL, None)
    active.set_status(trace.StatusCode.ERROR, "ERR_X")
    active.set_status(trace.Status(trace.StatusCode.UNSET))  # never overrides what was set
    active.record_exception(ValueError("boom"))
    active.end()
    active.set_attribute("late", 1)  # after the end: ignored, and not exported twice
    active.end()
    (done,) = exporter.get_finished_spans()
    assert done.status.status_code is trace.StatusCode.ERROR and done.status.description == "ERR_X"
    assert [e.name for e in done.events] == ["exception"]
    assert done.events[0].attributes["exception.type"] == "ValueError"  # type: ignore[index]
    assert "late" not in (done.attributes or {}) and not active.is_recording()
    assert done.end_time is not None and done.start_time is not None and done.end_time >= done.start_time
