"""One trace across hops: HTTP -> gateway -> bus -> block service -> event -> subscriber, and invoke -> app.

Spans go to an in-memory exporter through `kernel.tracing.use_processor`; the fixture turns recording
off again, so every other test runs with tracing off as production does without an exporter.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import re
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from aiohttp import web
from nats.aio.client import Client
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision, TraceIdRatioBased

from adapters.appchannel.http_app import HttpApp
from adapters.appchannel.run import AppChannel, RunConfig
from adapters.gateway.context import GatewayConfig
from adapters.invocation import InvocationServer
from adapters.sdk import App, Event, InvokeRequest
from adapters.sdk import Client as SdkClient
from kernel.logs import JsonFormatter
from kernel.subjects import Subjects
from kernel.tracing import Sampler, inject, use_processor
from tests.conftest import REPO, GatewayClient, Inbox, PubsubRuntime, free_port, open_gateway, wait_until

TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
CALLER_SPAN = 0x00F067AA0BA902B7
TRACEPARENT = f"00-{TRACE_ID:032x}-{CALLER_SPAN:016x}-01"


Recorder = Callable[[Sampler], InMemorySpanExporter]


@pytest.fixture
def record() -> Iterator[Recorder]:
    """`record(sampler)`: record this test's spans in memory, sampled as natrium decides with
    `sampler`; recording is off again afterwards."""
    processors: list[SimpleSpanProcessor] = []

    def start(sampler: Sampler) -> InMemorySpanExporter:
        exporter = InMemorySpanExporter()
        processors.append(SimpleSpanProcessor(exporter))
        use_processor(processors[-1], sampler)
        return exporter

    try:
        yield start
    finally:
        use_processor(None)
        for processor in processors:
            processor.shutdown()


@pytest.fixture
def spans(record: Recorder) -> InMemorySpanExporter:
    """Every span of this test, recorded in memory (OpenTelemetry's default sampler)."""
    return record(Sampler())


def named(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    [found] = [s for s in exporter.get_finished_spans() if s.name == name]
    return found


def gateway_span(exporter: InMemorySpanExporter, prefix: str) -> ReadableSpan:
    """The gateway's span, named `<method> <route template>`."""
    [found] = [s for s in exporter.get_finished_spans() if s.name.startswith(prefix)]
    return found


async def ended(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    """The span `name` once it has ended (a consumer span ends after the reply went out)."""

    async def present() -> bool:
        return any(s.name == name for s in exporter.get_finished_spans())

    await wait_until(present, timeout=15)
    return named(exporter, name)


def assert_child(child: ReadableSpan, parent: ReadableSpan) -> None:
    assert child.parent is not None and parent.context is not None and child.context is not None
    assert child.parent.span_id == parent.context.span_id
    assert child.context.trace_id == parent.context.trace_id == TRACE_ID


async def gateway_for(nc: Client, subjects: Subjects, app_id: str = "web") -> tuple[GatewayClient, Any]:
    return await open_gateway(nc, subjects, GatewayConfig(http_port=free_port(), app_id=app_id))


async def test_http_publish_is_one_trace_down_to_the_subscribers_handler(
    nc: Client, pubsub: PubsubRuntime, spans: InMemorySpanExporter
) -> None:
    seen: list[trace.SpanContext] = []
    inbox = Inbox()

    async def handler(event: Event) -> None:
        seen.append(trace.get_current_span().get_span_context())
        await inbox(event)

    await pubsub.sdk("orders").subscribe(pubsub.name, "new", handler)
    client, runner = await gateway_for(nc, pubsub.subjects)
    try:
        url = client.url(f"/v1.0/publish/{pubsub.name}/new")
        async with client.session.post(url, json={"id": 1}, headers={"traceparent": TRACEPARENT}) as response:
            assert response.status == 204
        [event] = await inbox.wait(1)
        subject = pubsub.subjects.block("pubsub", pubsub.name, "publish")
        delivery = await ended(spans, "deliver new")
        gateway = gateway_span(spans, "POST /v1.0/publish/")
        bus = named(spans, subject)
        service = named(spans, "pubsub.publish")
    finally:
        await client.session.close()
        await runner.cleanup()

    assert gateway.parent is not None and gateway.parent.span_id == CALLER_SPAN and gateway.parent.is_remote
    assert_child(bus, gateway)
    assert_child(service, bus)
    assert_child(delivery, service)
    assert delivery.parent is not None and delivery.parent.is_remote  # continued from the event, not a new root
    assert service.context is not None and delivery.context is not None
    assert event.envelope["traceparent"] == f"00-{TRACE_ID:032x}-{service.context.span_id:016x}-01"
    assert [s.span_id for s in seen] == [delivery.context.span_id]  # the handler runs inside the delivery span

    assert (gateway.kind, bus.kind, service.kind, delivery.kind) == (
        trace.SpanKind.SERVER,
        trace.SpanKind.CLIENT,
        trace.SpanKind.SERVER,
        trace.SpanKind.CONSUMER,
    )
    assert gateway.attributes is not None and bus.attributes is not None
    assert service.attributes is not None and delivery.attributes is not None
    assert gateway.attributes["natrium.app_id"] == "web" and gateway.attributes["http.response.status_code"] == 204
    for hop in (bus, service):
        assert hop.attributes is not None
        assert dict(hop.attributes) == {
            "messaging.system": "nats",
            "messaging.destination.name": subject,
            "messaging.operation": "publish",
            "natrium.block": "pubsub",
            "natrium.component": pubsub.name,
            "natrium.app_id": "web",
        }
    assert delivery.attributes["messaging.system"] == "nats"
    assert delivery.attributes["messaging.destination.name"] == pubsub.subjects.events(pubsub.name, "new")
    assert delivery.attributes["messaging.operation"] == "process"
    assert delivery.attributes["natrium.component"] == pubsub.name
    assert delivery.attributes["natrium.app_id"] == "orders"
    assert delivery.attributes["messaging.message.id"] == event.id
    assert delivery.attributes["natrium.delivery_status"] == "SUCCESS"
    assert all(s.status.status_code is trace.StatusCode.UNSET for s in (gateway, bus, service, delivery))


async def test_raw_payload_delivery_continues_the_publishers_trace(
    nc: Client, pubsub: PubsubRuntime, spans: InMemorySpanExporter
) -> None:
    inbox = Inbox()
    await pubsub.sdk("raw").subscribe(pubsub.name, "raw", inbox)
    client, runner = await gateway_for(nc, pubsub.subjects)
    try:
        url = client.url(f"/v1.0/publish/{pubsub.name}/raw?metadata.rawPayload=true")
        async with client.session.post(url, data=b"bytes", headers={"traceparent": TRACEPARENT}) as response:
            assert response.status == 204
        await inbox.wait(1)
        delivery = await ended(spans, "deliver raw")
        service = named(spans, "pubsub.publish")
    finally:
        await client.session.close()
        await runner.cleanup()
    assert "traceparent" not in inbox.events[0].envelope  # no CloudEvent: the message headers carry it
    assert_child(delivery, service)


async def test_a_failed_state_call_marks_its_spans_with_the_error_code(
    http: GatewayClient, spans: InMemorySpanExporter
) -> None:
    async with http.session.get(http.url("/v1.0/state/nostore/k"), headers={"traceparent": TRACEPARENT}) as response:
        assert response.status == 400
        assert (await response.json())["errorCode"] == "ERR_STATE_STORE_NOT_FOUND"
    subject = http.gateway.subjects.block("state", "nostore", "get")
    service = await ended(spans, "state.get")
    bus = named(spans, subject)
    gateway = gateway_span(spans, "GET /v1.0/state/")
    assert_child(bus, gateway)
    assert_child(service, bus)
    for hop in (bus, service):
        assert hop.status.status_code is trace.StatusCode.ERROR
        assert hop.status.description == "ERR_STATE_STORE_NOT_FOUND"
        assert hop.attributes is not None and hop.attributes["natrium.error_code"] == "ERR_STATE_STORE_NOT_FOUND"
        assert hop.attributes["natrium.block"] == "state" and hop.attributes["natrium.component"] == "nostore"
        assert hop.attributes["messaging.operation"] == "get"
    assert gateway.status.status_code is trace.StatusCode.UNSET  # a 4xx is the caller's, not the server's, failure


async def test_a_grpc_call_continues_the_callers_trace_through_the_bus_to_the_service(
    http: GatewayClient, runtime: Any, spans: InMemorySpanExporter
) -> None:
    import grpc
    from dapr.proto.common.v1 import common_pb2
    from dapr.proto.runtime.v1 import dapr_pb2_grpc, state_pb2

    from adapters.grpc.server import start_grpc_server, stop_grpc_server

    server, port = await start_grpc_server(http.gateway, 0, host="127.0.0.1")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = dapr_pb2_grpc.DaprStub(channel)
            metadata = (("traceparent", TRACEPARENT),)
            item = common_pb2.StateItem(key="traced", value=b"1")
            await stub.SaveState(state_pb2.SaveStateRequest(store_name=runtime.store, states=[item]), metadata=metadata)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.GetState(state_pb2.GetStateRequest(store_name="nostore", key="k"), metadata=metadata)
    finally:
        await stop_grpc_server(server, 0)

    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    save = named(spans, "/dapr.proto.runtime.v1.Dapr/SaveState")
    assert save.kind is trace.SpanKind.SERVER and save.parent is not None and save.parent.span_id == CALLER_SPAN
    assert save.context is not None and save.context.trace_id == TRACE_ID
    assert save.attributes is not None and save.attributes["rpc.system"] == "grpc"
    bus = named(spans, runtime.subject("save"))
    assert_child(bus, save)
    assert_child(await ended(spans, "state.save"), bus)
    get = named(spans, "/dapr.proto.runtime.v1.Dapr/GetState")
    assert (
        get.attributes is not None
        and get.attributes["rpc.grpc.status_code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    )
    assert get.attributes["natrium.error_code"] == "ERR_STATE_STORE_NOT_FOUND"
    assert get.status.status_code is trace.StatusCode.UNSET  # the caller's fault, as a 4xx over HTTP
    assert_child(named(spans, runtime.subject("get", "nostore")), get)


async def test_http_invoke_reaches_the_app_with_a_traceparent_of_the_same_trace(
    nc: Client, subjects: Subjects, spans: InMemorySpanExporter
) -> None:
    received: list[str] = []

    async def items(request: web.Request) -> web.Response:
        received.append(request.headers.get("traceparent", ""))
        return web.json_response({"ok": True})

    app_runner = web.AppRunner(web.Application())
    app_runner.app.router.add_post("/items", items)
    await app_runner.setup()
    port = free_port()
    await web.TCPSite(app_runner, "127.0.0.1", port).start()
    app = HttpApp("shop", port)
    await app.open()
    server = InvocationServer(nc, subjects, "shop", app.forward)
    await server.start()
    client, runner = await gateway_for(nc, subjects)
    try:
        url = client.url("/v1.0/invoke/shop/method/items")
        async with client.session.post(url, json={}, headers={"traceparent": TRACEPARENT}) as response:
            assert response.status == 200 and await response.json() == {"ok": True}
        serve = await ended(spans, "serve /items")
        call = named(spans, "invoke shop/items")
        gateway = gateway_span(spans, "POST /v1.0/invoke/")
    finally:
        await client.session.close()
        await runner.cleanup()
        await server.stop()
        await app.close()
        await app_runner.cleanup()

    assert_child(call, gateway)
    assert_child(serve, call)
    assert serve.context is not None
    assert received == [f"00-{TRACE_ID:032x}-{serve.context.span_id:016x}-01"]
    assert call.attributes is not None and serve.attributes is not None
    assert call.attributes["messaging.system"] == serve.attributes["messaging.system"] == "nats"
    assert call.attributes["messaging.destination.name"] == subjects.invoke("shop", "/items")
    assert call.attributes["natrium.app_id"] == "web" and call.attributes["natrium.target_app_id"] == "shop"
    assert serve.attributes["natrium.app_id"] == "shop" and serve.attributes["http.response.status_code"] == 200


async def test_sdk_method_invoke_runs_the_handler_inside_the_servers_span(
    nc: Client, subjects: Subjects, spans: InMemorySpanExporter
) -> None:
    seen: list[trace.SpanContext] = []
    app = App("calc")

    @app.method("echo")
    async def echo(request: InvokeRequest) -> Any:
        seen.append(trace.get_current_span().get_span_context())
        return {"missing": True}

    await app.start(client=SdkClient(nc, app_id="calc", subjects=subjects))
    try:
        caller = SdkClient(nc, app_id="py-caller", subjects=subjects)
        ok = await caller.invoke("calc", "echo")
        missing = await caller.invoke("calc", "nope")
        assert ok.status == 200 and missing.status == 404
        served = await ended(spans, "serve /echo")
        await ended(spans, "serve /nope")
    finally:
        await app.stop()
    call = named(spans, "invoke calc/echo")
    assert call.parent is None  # no current span: the caller starts the trace
    assert served.parent is not None and call.context is not None and served.context is not None
    assert served.parent.span_id == call.context.span_id and served.context.trace_id == call.context.trace_id
    assert [s.span_id for s in seen] == [served.context.span_id]
    assert call.attributes is not None and call.attributes["natrium.app_id"] == "py-caller"
    not_found = named(spans, "invoke calc/nope")
    assert not_found.status.status_code is trace.StatusCode.ERROR and not_found.status.description == "HTTP 404"


class JsonLines(logging.Handler):
    """Formats each record as the services do, at emit time (inside the handler's context)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter("test"))
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


@pytest.mark.parametrize("recorded", [False, True], ids=["tracing-off", "tracing-on"])
async def test_a_handlers_log_line_carries_the_requests_trace_id(
    nc: Client, subjects: Subjects, recorded: bool, request: pytest.FixtureRequest
) -> None:
    exporter: InMemorySpanExporter | None = request.getfixturevalue("spans") if recorded else None
    logger = logging.getLogger("tests.tracing.handler")
    lines = JsonLines()
    logger.addHandler(lines)
    app = App("logger")

    @app.method("work")
    async def work(_: InvokeRequest) -> None:
        logger.warning("working")

    await app.start(client=SdkClient(nc, app_id="logger", subjects=subjects))
    client, runner = await gateway_for(nc, subjects)
    try:
        url = client.url("/v1.0/invoke/logger/method/work")
        async with client.session.post(url, headers={"traceparent": TRACEPARENT}) as response:
            assert response.status == 200
    finally:
        logger.removeHandler(lines)
        await client.session.close()
        await runner.cleanup()
        await app.stop()
    [line] = lines.lines
    assert line["msg"] == "working" and line["trace_id"] == f"{TRACE_ID:032x}"
    if exporter is not None:
        serve = await ended(exporter, "serve /work")
        assert serve.context is not None and line["span_id"] == f"{serve.context.span_id:016x}"


def test_inject_replaces_forwarded_trace_headers_of_any_case() -> None:
    headers = inject({"Traceparent": TRACEPARENT, "TRACESTATE": "old=1", "other": "kept"})
    assert headers == {"other": "kept"}  # no current span: nothing stale survives


@pytest.mark.slow
async def test_null_exporter_records_spans_and_exports_nowhere() -> None:
    import asyncio

    code = (
        "from opentelemetry import trace\n"
        "from kernel.tracing import recording, setup_tracing, span\n"
        "setup_tracing('bench')\n"
        "assert recording()\n"
        "with span('x', None, trace.SpanKind.INTERNAL, {'a': 1}) as s:\n"
        "    assert s.is_recording() and s.get_span_context().is_valid\n"
        "print('ok')\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "OTEL_TRACES_EXPORTER": "natrium-null"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert out.decode() == "ok\n"  # nothing printed: the spans went nowhere


async def test_otlp_and_console_exporters_together_send_spans_over_otlp_http() -> None:
    """`OTEL_TRACES_EXPORTER=console,otlp`: the span is printed and reaches an OTLP/HTTP receiver."""
    import asyncio

    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    bodies: list[bytes] = []

    async def traces(request: web.Request) -> web.Response:
        bodies.append(await request.read())
        return web.Response(status=200, content_type="application/x-protobuf", body=b"")

    receiver = web.AppRunner(web.Application())
    receiver.app.router.add_post("/v1/traces", traces)
    await receiver.setup()
    port = free_port()
    await web.TCPSite(receiver, "127.0.0.1", port).start()
    code = (
        "from opentelemetry import trace\n"
        "from kernel.tracing import setup_tracing, span\n"
        "setup_tracing('exporter-test')\n"
        "with span('exported-span', None, trace.SpanKind.INTERNAL, {'a': 1}):\n"
        "    pass\n"
        "trace.get_tracer_provider().shutdown()\n"
    )
    env = {
        "PYTHONPATH": str(REPO),
        "OTEL_TRACES_EXPORTER": "console,otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
    }
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            code,
            cwd=REPO,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        await receiver.cleanup()
    assert proc.returncode == 0, err.decode()
    assert "exported-span" in out.decode()  # console
    assert bodies, err.decode()
    request = ExportTraceServiceRequest.FromString(bodies[0])
    [resource_spans] = request.resource_spans
    attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
    assert attributes["service.name"] == "exporter-test"
    assert [s.name for scope in resource_spans.scope_spans for s in scope.spans] == ["exported-span"]


# -- head sampling ---------------------------------------------------------------------------

TRACEPARENT_RE = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


class Shop:
    """An HTTP app `shop` behind an InvocationServer, and a gateway to call it through."""

    def __init__(self, client: GatewayClient, server: InvocationServer) -> None:
        self.client = client
        self.server = server
        self.received: list[str] = []
        """The `traceparent` of every request the app received."""

    async def call(self, headers: dict[str, str] | None = None) -> None:
        url = self.client.url("/v1.0/invoke/shop/method/items")
        async with self.client.session.post(url, json={}, headers=headers or {}) as response:
            assert response.status == 200

    async def settled(self) -> None:
        """Every call has been answered and its server span has ended."""

        async def idle() -> bool:
            return not self.server._tasks

        await wait_until(idle)


@contextlib.asynccontextmanager
async def shop(nc: Client, subjects: Subjects) -> AsyncIterator[Shop]:
    async def items(request: web.Request) -> web.Response:
        chain.received.append(request.headers.get("traceparent", ""))
        return web.json_response({"ok": True})

    app_runner = web.AppRunner(web.Application())
    app_runner.app.router.add_post("/items", items)
    await app_runner.setup()
    port = free_port()
    await web.TCPSite(app_runner, "127.0.0.1", port).start()
    app = HttpApp("shop", port)
    await app.open()
    server = InvocationServer(nc, subjects, "shop", app.forward)
    await server.start()
    client, runner = await gateway_for(nc, subjects)
    chain = Shop(client, server)
    try:
        yield chain
    finally:
        await client.session.close()
        await runner.cleanup()
        await server.stop()
        await app.close()
        await app_runner.cleanup()


@pytest.mark.parametrize(
    "sampler",
    [Sampler("always_off"), Sampler("parentbased_traceidratio", 0.0), Sampler("traceidratio", 0.0)],
    ids=lambda s: s.name,
)
async def test_an_unsampled_root_records_nothing_but_passes_on_a_traceparent_flagged_00(
    nc: Client, subjects: Subjects, record: Recorder, sampler: Sampler
) -> None:
    exporter = record(sampler)
    async with shop(nc, subjects) as chain:
        await chain.call()
        await chain.call()
        await chain.settled()
    assert exporter.get_finished_spans() == ()
    found = [TRACEPARENT_RE.match(value) for value in chain.received]
    assert all(found), chain.received
    ids = [(m.group(1), m.group(3)) for m in found if m]
    assert [flags for _, flags in ids] == ["00", "00"]  # so the next hops skip the trace too
    assert ids[0][0] != ids[1][0] and "0" * 32 not in (ids[0][0], ids[1][0])  # a fresh trace id per request


async def test_a_sampled_parent_makes_its_children_recorded_when_new_traces_are_not(
    nc: Client, subjects: Subjects, record: Recorder
) -> None:
    exporter = record(Sampler("parentbased_traceidratio", 0.0))
    async with shop(nc, subjects) as chain:
        await chain.call({"traceparent": TRACEPARENT})
        await chain.settled()
        serve = named(exporter, "serve /items")
        call = named(exporter, "invoke shop/items")
        gateway = gateway_span(exporter, "POST /v1.0/invoke/")
        unsampled = f"00-{TRACE_ID:032x}-{CALLER_SPAN:016x}-00"
        await chain.call({"traceparent": unsampled})
        await chain.settled()
    assert gateway.parent is not None and gateway.parent.span_id == CALLER_SPAN
    assert_child(call, gateway)
    assert_child(serve, call)
    assert serve.context is not None
    assert chain.received[0] == f"00-{TRACE_ID:032x}-{serve.context.span_id:016x}-01"
    # A parent flagged 00 is followed too: nothing recorded, its context passed on as it came.
    assert len(exporter.get_finished_spans()) == 3
    assert chain.received[1] == unsampled


def test_ratio_samplers_decide_a_trace_id_as_opentelemetry_does_at_every_hop() -> None:
    ratio = 0.25
    sdk = TraceIdRatioBased(ratio)
    plain, parent_based = Sampler("traceidratio", ratio), Sampler("parentbased_traceidratio", ratio)
    ids = [random.getrandbits(128) or 1 for _ in range(2000)]
    decisions = [plain.root(trace_id) for trace_id in ids]
    assert decisions == [sdk.should_sample(None, t, "x").decision is Decision.RECORD_AND_SAMPLE for t in ids]
    assert decisions == [parent_based.root(trace_id) for trace_id in ids] == [plain.root(t) for t in ids]
    assert 0.2 < sum(decisions) / len(ids) < 0.3
    for trace_id, sampled in zip(ids[:200], decisions, strict=False):
        for flags in (0, 1):
            parent = trace.SpanContext(trace_id, 1, is_remote=True, trace_flags=trace.TraceFlags(flags))
            assert plain.child(parent) is sampled  # not parent-based: the trace id alone decides
            assert parent_based.child(parent) is bool(flags)


def test_sampler_from_the_standard_environment_variables() -> None:
    assert Sampler.from_env({}) == Sampler("parentbased_always_on")
    env = {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}
    assert Sampler.from_env(env) == Sampler("parentbased_traceidratio", 0.1)
    assert Sampler.from_env({"OTEL_TRACES_SAMPLER": "ALWAYS_OFF"}) == Sampler("always_off")
    assert Sampler.from_env({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "lots"}).ratio == 1.0
    assert Sampler.from_env({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"}).ratio == 1.0
    assert Sampler.from_env({"OTEL_TRACES_SAMPLER": "jaeger_remote"}) == Sampler("parentbased_always_on")
    with pytest.raises(ValueError):
        Sampler("sometimes")


async def test_a_ratio_sampled_trace_is_recorded_whole_across_hops(
    nc: Client, subjects: Subjects, record: Recorder
) -> None:
    exporter = record(Sampler("traceidratio", 0.5))  # each hop decides again, from the trace id
    app = App("calc")

    @app.method("echo")
    async def echo(request: InvokeRequest) -> Any:
        return {"ok": True}

    await app.start(client=SdkClient(nc, app_id="calc", subjects=subjects))
    try:
        caller = SdkClient(nc, app_id="py-caller", subjects=subjects)
        for _ in range(24):
            assert (await caller.invoke("calc", "echo")).status == 200
    finally:
        await app.stop()  # waits for the calls in flight: every server span has ended
    finished = exporter.get_finished_spans()
    calls = {s.context.span_id: s.context.trace_id for s in finished if s.name == "invoke calc/echo" and s.context}
    served = [s for s in finished if s.name == "serve /echo"]
    assert 0 < len(calls) < 24  # 2 in a million to fail by chance
    assert len(served) == len(calls)
    for serve in served:  # each recorded server span is the child of a recorded call span
        assert serve.parent is not None and serve.context is not None
        assert calls[serve.parent.span_id] == serve.context.trace_id


# -- through the app channel to an HTTP app's subscription ------------------------------------


async def test_an_http_apps_event_request_carries_the_publishers_trace(
    nc: Client, pubsub: PubsubRuntime, spans: InMemorySpanExporter
) -> None:
    received: list[tuple[str, dict[str, Any]]] = []
    arrived = asyncio.Event()

    async def subscribe(_: web.Request) -> web.Response:
        return web.json_response([{"pubsubname": pubsub.name, "topic": "orders", "route": "/orders"}])

    async def orders(request: web.Request) -> web.Response:
        received.append((request.headers.get("traceparent", ""), await request.json()))
        arrived.set()
        return web.json_response({"status": "SUCCESS"})

    app_runner = web.AppRunner(web.Application())
    app_runner.app.router.add_get("/dapr/subscribe", subscribe)
    app_runner.app.router.add_post("/orders", orders)
    await app_runner.setup()
    port = free_port()
    await web.TCPSite(app_runner, "127.0.0.1", port).start()
    channel = AppChannel(RunConfig("shop", [], app_port=port, root=pubsub.subjects.root), nc)
    client, runner = await gateway_for(nc, pubsub.subjects)
    try:
        await channel.connect_app(asyncio.Event())
        url = client.url(f"/v1.0/publish/{pubsub.name}/orders")
        async with client.session.post(url, json={"id": 7}, headers={"traceparent": TRACEPARENT}) as response:
            assert response.status == 204
        await asyncio.wait_for(arrived.wait(), 15)
        delivery = await ended(spans, "deliver orders")
        service = named(spans, "pubsub.publish")
        gateway = gateway_span(spans, "POST /v1.0/publish/")
    finally:
        await client.session.close()
        await runner.cleanup()
        await channel.close()
        await app_runner.cleanup()

    assert_child(named(spans, pubsub.subjects.block("pubsub", pubsub.name, "publish")), gateway)
    assert_child(delivery, service)
    assert delivery.parent is not None and delivery.parent.is_remote  # continued from the event
    assert delivery.attributes is not None and delivery.attributes["natrium.app_id"] == "shop"
    assert delivery.attributes["natrium.delivery_status"] == "SUCCESS"
    [(traceparent, envelope)] = received
    assert envelope["data"] == {"id": 7}
    assert service.context is not None and delivery.context is not None
    assert envelope["traceparent"] == f"00-{TRACE_ID:032x}-{service.context.span_id:016x}-01"
    # The app's request is a child of the delivery span, in the publisher's trace.
    assert traceparent == f"00-{TRACE_ID:032x}-{delivery.context.span_id:016x}-01"


async def test_a_nested_invoke_from_the_app_stays_in_the_callers_trace(
    nc: Client, subjects: Subjects, spans: InMemorySpanExporter
) -> None:
    """invoke -> shop -> (shop calls the gateway with the traceparent it got) -> stock: one trace, each
    hop the child of the one before."""
    client, runner = await gateway_for(nc, subjects)
    stock_saw: list[str] = []

    async def items(request: web.Request) -> web.Response:
        url = client.url("/v1.0/invoke/stock/method/count")
        headers = {"traceparent": request.headers["traceparent"]}
        async with client.session.post(url, json={}, headers=headers) as nested:
            return web.json_response({"stock": await nested.json()})

    async def count(request: web.Request) -> web.Response:
        stock_saw.append(request.headers.get("traceparent", ""))
        return web.json_response(7)

    apps: list[tuple[web.AppRunner, HttpApp, InvocationServer]] = []
    for app_id, path, handler in (("shop", "/items", items), ("stock", "/count", count)):
        app_runner = web.AppRunner(web.Application())
        app_runner.app.router.add_post(path, handler)
        await app_runner.setup()
        port = free_port()
        await web.TCPSite(app_runner, "127.0.0.1", port).start()
        channel = HttpApp(app_id, port)
        await channel.open()
        server = InvocationServer(nc, subjects, app_id, channel.forward)
        await server.start()
        apps.append((app_runner, channel, server))
    try:
        url = client.url("/v1.0/invoke/shop/method/items")
        async with client.session.post(url, json={}, headers={"traceparent": TRACEPARENT}) as response:
            assert response.status == 200 and await response.json() == {"stock": 7}
        serve_items = await ended(spans, "serve /items")
        serve_count = named(spans, "serve /count")
        call_shop = named(spans, "invoke shop/items")
        call_stock = named(spans, "invoke stock/count")
        outer, inner = sorted(
            (s for s in spans.get_finished_spans() if s.name.startswith("POST /v1.0/invoke/")),
            key=lambda s: s.start_time or 0,
        )
    finally:
        await client.session.close()
        await runner.cleanup()
        for app_runner, channel, server in apps:
            await server.stop()
            await channel.close()
            await app_runner.cleanup()

    assert_child(call_shop, outer)
    assert_child(serve_items, call_shop)
    assert_child(inner, serve_items)  # the app's own request continues the span it was handed
    assert_child(call_stock, inner)
    assert_child(serve_count, call_stock)
    assert serve_count.context is not None
    assert stock_saw == [f"00-{TRACE_ID:032x}-{serve_count.context.span_id:016x}-01"]
