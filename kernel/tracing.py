"""W3C trace context in NATS headers, head sampling, and the OpenTelemetry setup every natrium process shares.

Exporters follow the standard variables: `OTEL_TRACES_EXPORTER=console` prints spans, `otlp`
sends them over OTLP/HTTP (the `otlp` extra; `OTEL_EXPORTER_OTLP_PROTOCOL=grpc` with the gRPC
exporter installed), and a comma list uses several. With no exporter the SDK
is not installed at all. Trace context still flows: `traceparent` is passed on hop to hop, and a
request that arrives without one gets fresh ids, so every log line carries a trace id either way.

Sampling follows `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` (default `parentbased_always_on`,
as in OpenTelemetry), but natrium decides before any span is made: a request that is not sampled
takes the same path as tracing off (its context made current, ids passed on with the sampled flag
00 so the next hops skip it too). A sampled one is recorded by kernel/spans.py (~5 us, against
~37 us for the SDK's `start_span`) and handed to the SDK's export processors at its end. Measured
with bench/tracing.py (state bus and HTTP get/save, HTTP invoke through `natrium run`,
concurrency 16, 2 shared cores, uvloop): recording every request costs 8-14% of throughput (mean
~10%) and 10-22% more CPU per request in natrium's processes; `parentbased_traceidratio` at 0.1
costs 0-3%, within the run-to-run noise (±2-7%) of two identical untraced setups.

`OTEL_TRACES_EXPORTER=natrium-null` records spans and exports them nowhere: it is for benchmarks
(bench/tracing.py), to measure what recording costs without an exporter's own cost.
Tests record into their own span processor with `use_processor()`.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable, Mapping, MutableMapping
from contextvars import Token
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar

from opentelemetry import context, trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from kernel.subjects import decode_token

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor
    from opentelemetry.sdk.trace.export import SpanExporter

    from kernel.spans import SpanSink

__all__ = [
    "Attributes",
    "Sampler",
    "SpanScope",
    "bus_attributes",
    "current_ids",
    "extract",
    "fail",
    "inject",
    "recording",
    "setup_tracing",
    "span",
    "use_processor",
]

_propagator = TraceContextTextMapPropagator()
_TRACE_HEADERS = ("traceparent", "tracestate")
_LOW_64 = (1 << 64) - 1
SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)
log = logging.getLogger("natrium.tracing")

Attributes = Mapping[str, AttributeValue] | Callable[[], Mapping[str, AttributeValue]] | None
"""Span attributes, or a function making them: called only for a sampled span."""


@dataclass(frozen=True)
class Sampler:
    """OpenTelemetry's standard head samplers, decided by natrium so an unsampled request never reaches the SDK.

    The trace-id ratio test is the SDK's (`TraceIdRatioBased`: the low 64 bits of the trace id
    under `ratio * 2**64`), so every hop, and any OpenTelemetry peer, decides a trace alike.
    """

    name: str = "parentbased_always_on"
    """One of SAMPLERS, as `OTEL_TRACES_SAMPLER` spells it."""
    ratio: float = 1.0
    """Share of traces sampled by the `*traceidratio` samplers (`OTEL_TRACES_SAMPLER_ARG`)."""
    _bound: int = field(init=False, repr=False, compare=False)
    _parent_based: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.name not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.name!r}: use one of {', '.join(SAMPLERS)}")
        if not 0.0 <= self.ratio <= 1.0:
            raise ValueError(f"sampler ratio {self.ratio} is not between 0 and 1")
        base = self.name.removeprefix("parentbased_")
        bound = {"always_on": _LOW_64 + 1, "always_off": 0}.get(base, round(self.ratio * (_LOW_64 + 1)))
        object.__setattr__(self, "_bound", bound)
        object.__setattr__(self, "_parent_based", self.name.startswith("parentbased_"))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Sampler:
        """The sampler the `OTEL_TRACES_SAMPLER*` variables name; a bad value is logged and left at its default."""
        name = environ.get("OTEL_TRACES_SAMPLER", "").strip().lower() or "parentbased_always_on"
        if name not in SAMPLERS:
            log.warning("unknown OTEL_TRACES_SAMPLER %r: parentbased_always_on", name)
            name = "parentbased_always_on"
        if not name.endswith("traceidratio"):
            return cls(name)
        arg = environ.get("OTEL_TRACES_SAMPLER_ARG", "1.0")
        try:
            return cls(name, float(arg))
        except ValueError:
            log.warning("OTEL_TRACES_SAMPLER_ARG %r is not a ratio between 0 and 1: 1.0", arg)
            return cls(name)

    def root(self, trace_id: int) -> bool:
        """Whether a trace starting here with `trace_id` is sampled."""
        return (trace_id & _LOW_64) < self._bound

    def child(self, parent: trace.SpanContext) -> bool:
        """Whether a span under a valid `parent` is sampled: the parent's flag, when parent-based."""
        if self._parent_based:
            return parent.trace_flags.sampled
        return (parent.trace_id & _LOW_64) < self._bound


_recording = False
_sink: SpanSink | None = None
_sampler = Sampler()


def setup_tracing(service_name: str) -> None:
    """Install the SDK tracer provider when an exporter is configured; later calls are no-ops."""
    global _recording, _sink, _sampler
    exporter_name = os.environ.get("OTEL_TRACES_EXPORTER", "none").strip().lower()
    if _recording or exporter_name in ("", "none") or os.environ.get("OTEL_SDK_DISABLED") == "true":
        return
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON

    from kernel.spans import SpanSink

    # A comma list, as the OpenTelemetry variables allow: `console,otlp` exports to both.
    exporters = [e for e in (_exporter(name.strip()) for name in exporter_name.split(",")) if e is not None]
    if not exporters:
        return
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service_name)})
    processors = [BatchSpanProcessor(exporter) for exporter in exporters]
    # natrium records its own spans (kernel/spans.py) into these processors; the provider owns
    # them too, so its exit hook flushes what is batched, and other code's tracers export alike.
    provider = TracerProvider(resource=resource, sampler=ALWAYS_ON)
    for processor in processors:
        provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    _recording, _sink, _sampler = True, SpanSink(processors, resource), Sampler.from_env()


def _exporter(name: str) -> SpanExporter | None:
    """The exporter `OTEL_TRACES_EXPORTER` names; None (and a warning) when it cannot be made."""
    if name in ("", "none"):
        return None
    if name == "natrium-null":
        return _null_exporter()
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if name == "otlp":
        return _otlp_exporter()
    log.warning("unknown OTEL_TRACES_EXPORTER %r; spans are not exported there", name)
    return None


def _otlp_exporter() -> SpanExporter | None:
    """OTLP over HTTP/protobuf (natrium's `otlp` extra) or gRPC, as `OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL`
    says; the exporter itself reads the endpoint, headers and timeout variables."""
    protocol = (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or ""
    ).strip().lower() or "http/protobuf"
    try:
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc

            return Grpc()
        if protocol == "http/protobuf":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Http

            return Http()
    except ImportError:
        package = "opentelemetry-exporter-otlp-proto-grpc" if protocol == "grpc" else "natrium[otlp]"
        log.warning("OTEL_TRACES_EXPORTER=otlp (%s) needs %s; spans are not exported there", protocol, package)
        return None
    log.warning("OTLP protocol %r is not supported (http/protobuf or grpc); spans are not exported there", protocol)
    return None


def _null_exporter() -> SpanExporter:
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class NullExporter(SpanExporter):
        """Takes finished spans and drops them: recording's cost without any export's."""

        def export(self, spans: object) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    return NullExporter()


def use_processor(processor: SpanProcessor | None, sampler: Sampler | None = None) -> None:
    """Test hook: record this process's sampled spans into `processor` (sampled by `sampler`, else
    as the environment says); None turns recording off again.

    The global provider can be set only once per process, so tests hand their processor in here.
    """
    global _recording, _sink, _sampler
    if processor is None:
        _recording, _sink, _sampler = False, None, Sampler()
    else:
        from opentelemetry.sdk.resources import Resource

        from kernel.spans import SpanSink

        resource = Resource.create({"service.name": "natrium"})
        _recording, _sink, _sampler = True, SpanSink([processor], resource), sampler or Sampler.from_env()


def recording() -> bool:
    """Whether sampled spans are recorded and exported in this process."""
    return _recording


H = TypeVar("H", bound=MutableMapping[str, str])


def inject(headers: H) -> H:
    """Write the current span's `traceparent`/`tracestate` into outgoing headers.

    Trace headers forwarded from an earlier hop (any letter case) go first: left in, a stale
    `Traceparent` beside the fresh `traceparent` could win at the next hop.
    """
    for key in [k for k in headers if k.lower() in _TRACE_HEADERS]:
        del headers[key]
    _propagator.inject(headers)
    return headers


def extract(headers: Mapping[str, str] | None) -> context.Context:
    """The trace context carried by incoming headers; fresh ids when there is none and no SDK.

    With the SDK installed an absent parent is left absent: `span` then samples a new trace.
    """
    carrier = {k.lower(): v for k, v in headers.items() if k.lower() in _TRACE_HEADERS} if headers else None
    if not carrier:  # most bus requests: no headers at all, so no parsing and nothing to check
        ctx = context.Context()
        return ctx if _recording else _with_fresh_ids(ctx, random.getrandbits(128) or 1)
    ctx = _propagator.extract(carrier)
    if _recording or trace.get_current_span(ctx).get_span_context().is_valid:
        return ctx
    return _with_fresh_ids(ctx, random.getrandbits(128) or 1)


_UNSAMPLED = trace.TraceFlags(0)


def _with_fresh_ids(ctx: context.Context, trace_id: int) -> context.Context:
    """`ctx` with a new, unsampled span context of `trace_id`: a trace id for logs and later hops."""
    fresh = trace.SpanContext(
        trace_id=trace_id,
        span_id=random.getrandbits(64) or 1,
        is_remote=False,
        trace_flags=_UNSAMPLED,
    )
    return trace.set_span_in_context(trace.NonRecordingSpan(fresh), ctx)


def fail(active: trace.Span, code: str) -> None:
    """Mark a span failed with a Dapr error code (or what stands for one); a no-op when not recording."""
    if active.is_recording():
        active.set_status(trace.Status(trace.StatusCode.ERROR, code))
        active.set_attribute("natrium.error_code", code)


def current_ids() -> tuple[str, str] | None:
    """(trace_id, span_id) of the active span as hex, for log lines."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"


def bus_attributes(subject: str, app_id: str | None = None) -> dict[str, AttributeValue]:
    """Semantic attributes of a block request on `<root>.<block>.<component>.<operation>`.

    Read from the right: the root may hold dots, the encoded component never does.
    """
    parts = subject.rsplit(".", 3)
    attributes: dict[str, AttributeValue] = {"messaging.system": "nats", "messaging.destination.name": subject}
    if len(parts) == 4:
        attributes["messaging.operation"] = parts[3]
        attributes["natrium.block"] = parts[1]
        attributes["natrium.component"] = decode_token(parts[2])
    if app_id:
        attributes["natrium.app_id"] = app_id
    return attributes


class SpanScope:
    """`with span(...) as active:` one hop. A class rather than a generator context manager: it is
    entered once per request on every hot path, and a generator costs more to enter and leave."""

    __slots__ = ("_name", "_parent", "_kind", "_attributes", "_token", "_span")

    def __init__(self, name: str, parent: context.Context | None, kind: trace.SpanKind, attributes: Attributes) -> None:
        self._name = name
        self._parent = parent
        self._kind = kind
        self._attributes = attributes
        self._token: Token[context.Context] | None = None
        self._span: trace.Span | None = None

    def __enter__(self) -> trace.Span:
        parent = self._parent
        if _recording:
            ctx = parent if parent is not None else context.get_current()
            above = trace.get_current_span(ctx).get_span_context()
            if above.is_valid:
                if _sampler.child(above):
                    return self._start(above, None)
            else:
                trace_id = random.getrandbits(128) or 1
                if _sampler.root(trace_id):
                    return self._start(above, trace_id)
                # Not sampled: fresh ids all the same, flagged 00 so later hops skip the trace too.
                parent = _with_fresh_ids(ctx, trace_id)
        if parent is None:
            return trace.get_current_span()
        # Unsampled or tracing off: the parent made current is all log ids and `inject` need.
        self._token = context.attach(parent)
        return trace.get_current_span(parent)

    def _start(self, parent: trace.SpanContext, root_trace_id: int | None) -> trace.Span:
        attributes = self._attributes
        if callable(attributes):
            attributes = attributes()
        assert _sink is not None  # set whenever _recording is
        active = _sink.start(self._name, parent, self._kind, attributes, root_trace_id)
        self._span = active
        self._token = context.attach(trace.set_span_in_context(active))
        return active

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        active = self._span
        if active is not None and isinstance(exc, Exception):
            code = getattr(exc, "code", None)
            fail(active, code if isinstance(code, str) else type(exc).__name__)
            active.record_exception(exc)
        if self._token is not None:
            context.detach(self._token)
        if active is not None:
            active.end()


def span(name: str, parent: context.Context | None, kind: trace.SpanKind, attributes: Attributes = None) -> SpanScope:
    """A span under `parent` (None: the current context) when sampled; else just `parent` made current.

    `attributes` may be a function: it is called only for a sampled span, so unsampled requests
    never build them. An exception leaving the span marks it failed, with `natrium.error_code`
    for a NatriumError.
    """
    return SpanScope(name, parent, kind, attributes)
