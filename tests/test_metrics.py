"""Prometheus metrics recorded in-process: block requests and errors, pub/sub deliveries, gateway routes.

Samples are read the way Prometheus reads them: the registry's text exposition, parsed by
prometheus_client's parser. Block and route labels are shared by every test in the session, so
those assertions compare counts before and after.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Mapping
from typing import Any

import aiohttp
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from kernel.errors import NatriumError
from kernel.metrics import METRICS, Metrics, start_metrics_server
from tests.conftest import GatewayClient, Inbox, PubsubRuntime, Runtime, free_port, wait_until

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(metrics: Metrics = METRICS) -> Samples:
    return parse(generate_latest(metrics.registry).decode())


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


async def test_block_requests_errors_and_latency_are_counted_per_operation(runtime: Runtime) -> None:
    before = scrape()
    await runtime.call("save", {"items": [{"key": "a", "value": 1}]})
    await runtime.call("get", {"key": "a"})
    await runtime.call("get", {"key": "missing"})  # not found is a normal reply, not an error
    failures = []
    for call in (
        runtime.call("get", {"key": "a"}, store="no-such-store"),
        runtime.call("get", {"nokey": True}),
    ):
        try:
            await call
        except NatriumError as exc:
            failures.append(exc.code)
    after = scrape()

    assert failures == ["ERR_STATE_STORE_NOT_FOUND", "ERR_MALFORMED_REQUEST"]
    assert delta(before, after, "natrium_requests_total", block="state", operation="save") == 1
    assert delta(before, after, "natrium_requests_total", block="state", operation="get") == 4
    errors = "natrium_request_errors_total"
    assert delta(before, after, errors, block="state", operation="get", code="ERR_STATE_STORE_NOT_FOUND") == 1
    assert delta(before, after, errors, block="state", operation="get", code="ERR_MALFORMED_REQUEST") == 1
    assert delta(before, after, errors, block="state", operation="save", code="ERR_MALFORMED_REQUEST") == 0
    assert delta(before, after, "natrium_request_seconds_count", block="state", operation="get") == 4
    assert delta(before, after, "natrium_request_seconds_bucket", block="state", operation="get", le="+Inf") == 4
    assert delta(before, after, "natrium_request_seconds_sum", block="state", operation="get") > 0


async def test_pubsub_counts_publishes_deliveries_by_status_redeliveries_and_dead_letters(
    pubsub: PubsubRuntime,
) -> None:
    dead = Inbox()
    inbox = Inbox(answers=["RETRY", "SUCCESS", "DROP"])
    await pubsub.sdk("ops").subscribe(pubsub.name, "dlq", dead)
    await pubsub.sdk("app").subscribe(pubsub.name, "orders", inbox, dead_letter_topic="dlq")
    await pubsub.client.publish(pubsub.name, "orders", {"n": 1})
    await inbox.wait(2)  # RETRY, then SUCCESS on the redelivery
    await pubsub.client.publish_bulk(pubsub.name, "orders", {"e1": {"n": 2}})
    await inbox.wait(3)  # DROP: dead-lettered
    await dead.wait(1)

    async def dead_letter_counted() -> bool:
        labels = {"pubsub": pubsub.name, "topic": "orders", "group": "app"}
        return value(scrape(), "natrium_pubsub_deadlettered_total", **labels) == 1

    await wait_until(dead_letter_counted)
    samples = scrape()
    ps, group = pubsub.name, {"pubsub": pubsub.name, "topic": "orders", "group": "app"}
    assert value(samples, "natrium_pubsub_published_total", pubsub=ps, topic="orders") == 2
    assert value(samples, "natrium_pubsub_published_total", pubsub=ps, topic="dlq") == 0  # dead letters aside
    assert value(samples, "natrium_pubsub_delivered_total", status="SUCCESS", **group) == 1
    assert value(samples, "natrium_pubsub_delivered_total", status="RETRY", **group) == 1
    assert value(samples, "natrium_pubsub_delivered_total", status="DROP", **group) == 1
    assert value(samples, "natrium_pubsub_redelivered_total", **group) == 1
    dlq = {"pubsub": ps, "topic": "dlq", "group": "ops"}
    assert value(samples, "natrium_pubsub_delivered_total", status="SUCCESS", **dlq) == 1


async def test_consumer_lag_is_what_the_group_has_not_received_yet(pubsub: PubsubRuntime) -> None:
    for n in range(5):  # a backlog before the group's first subscriber starts
        await pubsub.client.publish(pubsub.name, "backlog", {"n": n})
    inbox, release = Inbox(), asyncio.Event()

    async def slow(event: Any) -> None:
        await inbox(event)
        await release.wait()

    labels = {"pubsub": pubsub.name, "topic": "backlog", "group": "lagging"}

    def lag_is(expected: float) -> Any:
        async def check() -> bool:
            return value(scrape(), "natrium_pubsub_consumer_lag", **labels) == expected

        return check

    await pubsub.sdk("lagging").subscribe(pubsub.name, "backlog", slow, concurrency=1)
    await inbox.wait(1)
    await wait_until(lag_is(4))  # one event taken, held by the handler; four still in the stream
    release.set()
    await inbox.wait(5)
    await wait_until(lag_is(0))


async def test_events_given_up_without_a_dead_letter_topic_are_counted_by_reason(pubsub: PubsubRuntime) -> None:
    async def handler(event: Any) -> str:
        return str(event.data["answer"])

    await pubsub.sdk("loser").subscribe(pubsub.name, "lost", handler)  # no dead-letter topic
    await pubsub.client.publish(pubsub.name, "lost", {"answer": "DROP"})
    await pubsub.client.publish(pubsub.name, "lost", {"answer": "RETRY"})  # until maxDeliver (3)
    # Straight into the stream: bytes that are no event, and an event already past its expiration.
    js, subject = pubsub.nc.jetstream(), pubsub.subjects.events(pubsub.name, "lost")
    await js.publish(subject, b"not json")
    stale = {"id": "stale", "specversion": "1.0", "source": "t", "type": "t", "expiration": "2000-01-01T00:00:00Z"}
    await js.publish(subject, json.dumps(stale).encode())
    labels = {"pubsub": pubsub.name, "topic": "lost", "group": "loser"}
    expected = {"drop": 1.0, "max_deliveries": 1.0, "undecodable": 1.0, "expired": 1.0}

    async def counted() -> bool:
        samples = scrape()
        return {r: value(samples, "natrium_pubsub_dropped_total", reason=r, **labels) for r in expected} == expected

    await wait_until(counted)
    assert value(scrape(), "natrium_pubsub_deadlettered_total", **labels) == 0


async def get(http: GatewayClient, path: str) -> int:
    async with http.session.get(http.url(path)) as response:
        return response.status


async def test_gateway_labels_calls_with_the_route_template_not_the_raw_path(
    http: GatewayClient, runtime: Runtime
) -> None:
    store = runtime.store
    before = scrape()
    async with http.session.post(http.url(f"/v1.0/state/{store}"), json=[{"key": "k1", "value": 1}]) as r:
        assert r.status == 204
    assert await get(http, f"/v1.0/state/{store}/k1") == 200
    assert await get(http, f"/v1.0/state/{store}/k2") == 204
    assert await get(http, "/v1.0/state/no-such-store/k1") == 400
    async with http.session.request("TRACE", http.url("/v1.0/healthz")) as r:
        trace_status = r.status
    after = scrape()

    calls = "natrium_http_requests_total"
    route = "/v1.0/state/{store}/{key}"
    assert delta(before, after, calls, route=route, method="GET", status="200") == 1
    assert delta(before, after, calls, route=route, method="GET", status="204") == 1
    assert delta(before, after, calls, route=route, method="GET", status="400") == 1
    assert delta(before, after, calls, route="/v1.0/state/{store}", method="POST", status="204") == 1
    assert delta(before, after, "natrium_http_request_seconds_count", route=route, method="GET") == 3
    assert delta(before, after, calls, route="/{tail}", method="OTHER", status=str(trace_status)) == 1
    # No label value anywhere carries a key or store name from a URL.
    new_labels: Mapping[str, str] = {k: v for (_, labels) in after for k, v in labels}
    assert not any(store in v or "k1" in v for v in new_labels.values())


async def test_metrics_server_serves_the_prometheus_text_format() -> None:
    metrics = Metrics()
    metrics.for_endpoint("state", "get").record(2_000_000, "ERR_STATE_GET")
    port = free_port()
    server = start_metrics_server(port, host="127.0.0.1", metrics=metrics)
    try:
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            samples = parse(await response.text())
    finally:
        await asyncio.to_thread(server.shutdown)
        server.server_close()
    assert value(samples, "natrium_requests_total", block="state", operation="get") == 1
    errors = value(samples, "natrium_request_errors_total", block="state", operation="get", code="ERR_STATE_GET")
    assert errors == 1
    assert value(samples, "natrium_request_seconds_bucket", block="state", operation="get", le="0.0025") == 1
    assert value(samples, "natrium_request_seconds_bucket", block="state", operation="get", le="0.001") == 0


async def test_taken_metrics_port_is_a_clear_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(NatriumError) as caught:
            start_metrics_server(port, host="127.0.0.1", metrics=Metrics())
    assert caught.value.code == "ERR_PORT_IN_USE"


async def test_invocations_are_counted_by_the_caller_and_by_the_callee(nc: Any, subjects: Any) -> None:
    from adapters.sdk import App, InvokeRequest
    from adapters.sdk import Client as SdkClient
    from tests.conftest import unique

    app_id = unique("metered-")
    app = App(app_id)

    @app.method("ok")
    async def ok(request: InvokeRequest) -> dict[str, bool]:
        return {"ok": True}

    await app.start(client=SdkClient(nc, app_id=app_id, subjects=subjects))
    caller = SdkClient(nc, app_id="meter-caller", subjects=subjects)
    before = scrape()
    try:
        for _ in range(3):
            assert (await caller.invoke(app_id, "ok")).status == 200
        assert (await caller.invoke(app_id, "missing")).status == 404
        nobody = unique("nobody-")
        with pytest.raises(NatriumError):
            await caller.invoke(nobody, "x", timeout=0.5)
    finally:
        await app.stop()
    after = scrape()
    assert delta(before, after, "natrium_invocations_sent_total", app_id=app_id, outcome="200") == 3
    assert delta(before, after, "natrium_invocations_sent_total", app_id=app_id, outcome="404") == 1
    assert delta(before, after, "natrium_invocations_served_total", app_id=app_id, status="200") == 3
    assert delta(before, after, "natrium_invocations_served_total", app_id=app_id, status="404") == 1
    assert delta(before, after, "natrium_invocation_served_seconds_count", app_id=app_id) == 4
    assert delta(before, after, "natrium_invocations_sent_total", app_id=nobody, outcome="ERR_DIRECT_INVOKE") == 1
