"""Pub/sub over the bus and HTTP: envelopes, groups, at-least-once, dead letters, TTL, dedupe."""

from __future__ import annotations

import asyncio
import base64
import json
import logging

import pytest

from adapters.gateway.context import GatewayConfig
from adapters.sdk import Drop, Event, Status
from kernel.errors import NatriumError
from tests.conftest import Inbox, PubsubRuntime, free_port, open_gateway


async def test_bus_publish_delivers_a_dapr_cloudevent(pubsub: PubsubRuntime) -> None:
    inbox = Inbox()
    await pubsub.sdk("orders").subscribe(pubsub.name, "new", inbox)
    reply = await pubsub.client.publish(pubsub.name, "new", {"id": 7})
    [event] = await inbox.wait(1)
    envelope = event.envelope
    assert event.id == reply.id == envelope["id"] and event.data == {"id": 7}
    assert envelope["source"] == "publisher" and envelope["type"] == "com.dapr.event.sent"
    assert envelope["specversion"] == "1.0" and envelope["datacontenttype"] == "application/json"
    assert (envelope["topic"], envelope["pubsubname"]) == ("new", pubsub.name)
    assert envelope["traceparent"].startswith("00-") and envelope["traceid"] == envelope["traceparent"]
    assert event.delivery == 1


async def test_odd_topic_names_work(pubsub: PubsubRuntime) -> None:
    inbox = Inbox()
    await pubsub.sdk("app").subscribe(pubsub.name, "orders.eu/west ü", inbox)
    await pubsub.client.publish(pubsub.name, "orders.eu/west ü", "x")
    assert (await inbox.wait(1))[0].topic == "orders.eu/west ü"


async def test_two_replicas_of_a_group_split_and_two_groups_each_get_all(pubsub: PubsubRuntime) -> None:
    replica_a, replica_b, other_group = Inbox(), Inbox(), Inbox()
    await pubsub.sdk("billing").subscribe(pubsub.name, "t", replica_a, concurrency=4)
    await pubsub.sdk("billing").subscribe(pubsub.name, "t", replica_b, concurrency=4)
    await pubsub.sdk("audit").subscribe(pubsub.name, "t", other_group)
    ids = [(await pubsub.client.publish(pubsub.name, "t", i)).id for i in range(60)]
    await other_group.wait(60)

    async def split_done() -> bool:
        return len(replica_a.events) + len(replica_b.events) >= 60

    from tests.conftest import wait_until

    await wait_until(split_done)
    billing = [e.id for e in replica_a.events + replica_b.events]
    assert sorted(billing) == sorted(ids) and replica_a.events and replica_b.events
    assert sorted(e.id for e in other_group.events) == sorted(ids)


async def test_retry_redelivers_with_backoff_then_success_acks(pubsub: PubsubRuntime) -> None:
    inbox = Inbox(answers=["RETRY"])
    await pubsub.sdk("app").subscribe(pubsub.name, "r", inbox)
    await pubsub.client.publish(pubsub.name, "r", "once")
    events = await inbox.wait(2)
    assert [e.delivery for e in events] == [1, 2] and events[0].id == events[1].id
    await asyncio.sleep(0.3)
    assert len(inbox.events) == 2


async def test_exceptions_and_unknown_statuses_count_as_retry(pubsub: PubsubRuntime) -> None:
    calls: list[int] = []

    async def flaky(event: Event) -> str | None:
        calls.append(event.delivery)
        if event.delivery == 1:
            raise RuntimeError("boom")
        if event.delivery == 2:
            return "success"  # statuses are case-sensitive in Dapr: this is RETRY
        return None

    await pubsub.sdk("app").subscribe(pubsub.name, "x", flaky)
    await pubsub.client.publish(pubsub.name, "x", 1)

    async def third() -> bool:
        return calls == [1, 2, 3]

    from tests.conftest import wait_until

    await wait_until(third)


async def test_drop_goes_to_the_dead_letter_topic_with_the_reason(pubsub: PubsubRuntime) -> None:
    dead = Inbox()
    await pubsub.sdk("ops").subscribe(pubsub.name, "dlq", dead)
    await pubsub.sdk("app").subscribe(pubsub.name, "d", Inbox(answers=["DROP"]), dead_letter_topic="dlq")
    reply = await pubsub.client.publish(pubsub.name, "d", {"bad": True})
    [event] = await dead.wait(1)
    assert event.id == reply.id and event.data == {"bad": True}
    assert event.envelope["deadletterreason"] == "dropped by the subscriber"
    assert event.envelope["deadletteroriginaltopic"] == "d"


async def test_exhausted_retries_dead_letter_after_max_deliver(pubsub: PubsubRuntime) -> None:
    dead, failing = Inbox(), Inbox(answers=["RETRY"] * 10)
    await pubsub.sdk("ops").subscribe(pubsub.name, "dlq2", dead)
    await pubsub.sdk("app").subscribe(pubsub.name, "e", failing, dead_letter_topic="dlq2")
    await pubsub.client.publish(pubsub.name, "e", 1)
    [event] = await dead.wait(1)
    assert [e.delivery for e in failing.events] == [1, 2, 3]  # maxDeliver 3 in the fixture
    assert "maxDeliver" in event.envelope["deadletterreason"]


async def test_drop_without_dead_letter_topic_is_logged_not_silent(
    pubsub: PubsubRuntime, caplog: pytest.LogCaptureFixture
) -> None:
    async def drop(event: Event) -> None:
        raise Drop()

    caplog.set_level(logging.ERROR, logger="natrium.delivery")
    inbox_calls = Inbox()

    async def handler(event: Event) -> None:
        await inbox_calls(event)
        await drop(event)

    await pubsub.sdk("app").subscribe(pubsub.name, "n", handler)
    reply = await pubsub.client.publish(pubsub.name, "n", 1)
    await inbox_calls.wait(1)

    async def logged() -> bool:
        return any(getattr(r, "event_id", None) == reply.id for r in caplog.records)

    from tests.conftest import wait_until

    await wait_until(logged)
    await asyncio.sleep(0.3)
    assert len(inbox_calls.events) == 1  # terminated, not redelivered


async def test_handler_timeout_is_a_retry(pubsub: PubsubRuntime) -> None:
    deliveries: list[int] = []

    async def slow(event: Event) -> Status:
        deliveries.append(event.delivery)
        if event.delivery == 1:
            await asyncio.sleep(5)
        return Status.SUCCESS

    await pubsub.sdk("app").subscribe(pubsub.name, "slow", slow, handler_timeout=0.2)
    await pubsub.client.publish(pubsub.name, "slow", 1)

    async def redelivered() -> bool:
        return deliveries == [1, 2]

    from tests.conftest import wait_until

    await wait_until(redelivered)


async def test_a_handler_slower_than_ack_wait_keeps_its_event_and_runs_once(pubsub: PubsubRuntime) -> None:
    """ackWait is 2 s in the fixture: without "in progress" beats the server would redeliver the
    event to the second replica while the first still works on it."""
    deliveries: list[int] = []
    done = asyncio.Event()

    async def slow(event: Event) -> Status:
        deliveries.append(event.delivery)
        await asyncio.sleep(5)
        done.set()
        return Status.SUCCESS

    for _ in range(2):
        await pubsub.sdk("slowpoke").subscribe(pubsub.name, "long", slow, handler_timeout=10)
    await pubsub.client.publish(pubsub.name, "long", 1)
    await asyncio.wait_for(done.wait(), 10)
    await asyncio.sleep(2.5)  # past another ackWait: an unacked event would come back now
    assert deliveries == [1]


async def test_groups_whose_names_differ_only_around_underscores_stay_apart(pubsub: PubsubRuntime) -> None:
    left, right = Inbox(), Inbox()
    await pubsub.sdk("a_").subscribe(pubsub.name, "b", left)
    await pubsub.sdk("a").subscribe(pubsub.name, "_b", right)
    await pubsub.client.publish(pubsub.name, "b", "for a_")
    await pubsub.client.publish(pubsub.name, "_b", "for a")
    assert [e.data for e in await left.wait(1)] == ["for a_"]
    assert [e.data for e in await right.wait(1)] == ["for a"]


async def test_same_cloudevent_id_twice_is_stored_and_delivered_once(pubsub: PubsubRuntime) -> None:
    inbox = Inbox()
    await pubsub.sdk("app").subscribe(pubsub.name, "dup", inbox)
    event = json.dumps({"id": "order-42", "source": "shop", "type": "order.created", "specversion": "1.0", "data": 1})
    first = await pubsub.client.publish(pubsub.name, "dup", event.encode(), content_type="application/cloudevents+json")
    second = await pubsub.client.publish(
        pubsub.name, "dup", event.encode(), content_type="application/cloudevents+json"
    )
    assert (first.duplicate, second.duplicate) == (False, True) and first.sequence == second.sequence
    await pubsub.client.publish(pubsub.name, "dup", "after")
    events = await inbox.wait(2)
    assert [e.id for e in events].count("order-42") == 1
    assert events[0].envelope["type"] == "order.created" and events[0].envelope["source"] == "shop"


async def test_ttl_expires_unread_messages(pubsub: PubsubRuntime) -> None:
    await pubsub.client.publish(pubsub.name, "ttl", "short", metadata={"ttlInSeconds": "1"})
    await pubsub.client.publish(pubsub.name, "ttl", "long")
    await asyncio.sleep(1.6)
    inbox = Inbox()
    await pubsub.sdk("late").subscribe(pubsub.name, "ttl", inbox)
    await inbox.wait(1)
    await asyncio.sleep(0.3)
    assert [e.data for e in inbox.events] == ["long"]


async def test_bulk_publish_over_the_bus_reports_failed_entries(pubsub: PubsubRuntime) -> None:
    reply = await pubsub.client.publish_bulk(pubsub.name, "b", {"a": 1, "b": {"x": 2}})
    assert reply.failed_entries == []


@pytest.mark.parametrize(
    "operation, body, code, status",
    [
        ("publish", {"topic": "", "data": b"x"}, "ERR_TOPIC_NAME_EMPTY", 404),
        ("bulkpublish", {"topic": "", "entries": []}, "ERR_TOPIC_NAME_EMPTY", 404),
        ("publish", {"data": b"x"}, "ERR_MALFORMED_REQUEST", 400),
        (
            "publish",
            {"topic": "t", "data": b"x", "metadata": {"ttlInSeconds": "soon"}},
            "ERR_PUBSUB_REQUEST_METADATA",
            400,
        ),
        (
            "publish",
            {"topic": "t", "data": b"{", "contentType": "application/cloudevents+json"},
            "ERR_PUBSUB_EVENTS_SER",
            400,
        ),
        (
            "publish",
            {"topic": "t", "data": b"[1]", "contentType": "application/cloudevents+json"},
            "ERR_PUBSUB_EVENTS_SER",
            400,
        ),
        ("bulkpublish", {"topic": "t", "entries": [{"entryId": "a"}, {"entryId": "a"}]}, "ERR_MALFORMED_REQUEST", 400),
        ("subscribe", {"topic": "t"}, "ERR_MALFORMED_REQUEST", 400),
    ],
)
async def test_bad_bus_requests_get_dapr_codes(
    pubsub: PubsubRuntime, operation: str, body: dict, code: str, status: int
) -> None:
    with pytest.raises(NatriumError) as err:
        await pubsub.client.bus.request(pubsub.subjects.block("pubsub", pubsub.name, operation), body)
    assert (err.value.code, err.value.status) == (code, status)


async def test_unknown_pubsub_is_404(pubsub: PubsubRuntime) -> None:
    with pytest.raises(NatriumError) as err:
        await pubsub.client.publish("no-such-pubsub", "t", 1)
    assert (err.value.code, err.value.status) == ("ERR_PUBSUB_NOT_FOUND", 404)


# -- HTTP ------------------------------------------------------------------------------------------


@pytest.fixture
async def http_pubsub(nc, pubsub: PubsubRuntime):  # type: ignore[no-untyped-def]
    client, runner = await open_gateway(nc, pubsub.subjects, GatewayConfig(http_port=free_port(), app_id="web"))
    yield client
    await client.session.close()
    await runner.cleanup()


@pytest.mark.parametrize(
    "content_type, body, expect",
    [
        ("application/json", b'{"qty": 3}', {"datacontenttype": "application/json", "data": {"qty": 3}}),
        ("application/json; charset=utf-8", b"[1,2]", {"data": [1, 2]}),
        ("text/plain", b"hello", {"datacontenttype": "text/plain", "data": "hello"}),
        ("application/octet-stream", b"\x00\xff", {"data_base64": base64.b64encode(b"\x00\xff").decode()}),
        ("application/xml", b"<a/>", {"datacontenttype": "application/xml", "data": "<a/>"}),
        ("application/json", b"{not json", {"data": "{not json"}),
    ],
)
async def test_http_publish_content_types(
    pubsub: PubsubRuntime,
    http_pubsub,
    content_type: str,
    body: bytes,
    expect: dict,  # type: ignore[no-untyped-def]
) -> None:
    inbox = Inbox()
    await pubsub.sdk("app").subscribe(pubsub.name, "h", inbox)
    url = http_pubsub.url(f"/v1.0/publish/{pubsub.name}/h")
    async with http_pubsub.session.post(url, data=body, headers={"Content-Type": content_type}) as r:
        assert (r.status, await r.read()) == (204, b"")
    [event] = await inbox.wait(1)
    assert expect.items() <= event.envelope.items()
    assert event.envelope["source"] == "web"


async def test_http_cloudevent_body_passes_through(pubsub: PubsubRuntime, http_pubsub) -> None:  # type: ignore[no-untyped-def]
    inbox = Inbox()
    await pubsub.sdk("app").subscribe(pubsub.name, "ce", inbox)
    event = {"id": "e1", "source": "legacy", "type": "t.x", "specversion": "1.0", "subject": "s", "data": {"k": 1}}
    url = http_pubsub.url(f"/v1.0/publish/{pubsub.name}/ce")
    async with http_pubsub.session.post(url, json=event, headers={"Content-Type": "application/cloudevents+json"}) as r:
        assert r.status == 204
    [got] = await inbox.wait(1)
    assert {k: got.envelope[k] for k in event} == event
    assert got.envelope["topic"] == "ce" and got.envelope["pubsubname"] == pubsub.name


async def test_http_raw_payload_is_delivered_as_is(pubsub: PubsubRuntime, http_pubsub) -> None:  # type: ignore[no-untyped-def]
    inbox = Inbox()
    await pubsub.sdk("app").subscribe(pubsub.name, "raw", inbox)
    url = http_pubsub.url(f"/v1.0/publish/{pubsub.name}/raw?metadata.rawPayload=true")
    async with http_pubsub.session.post(
        url, data=b"\x01raw", headers={"Content-Type": "application/octet-stream"}
    ) as r:
        assert r.status == 204
    [event] = await inbox.wait(1)
    assert event.raw == b"\x01raw" and event.data == b"\x01raw"


async def test_http_bulk_publish(pubsub: PubsubRuntime, http_pubsub) -> None:  # type: ignore[no-untyped-def]
    inbox = Inbox()
    await pubsub.sdk("app").subscribe(pubsub.name, "bulk", inbox)
    url = http_pubsub.url(f"/v1.0-alpha1/publish/bulk/{pubsub.name}/bulk")
    entries = [
        {"entryId": "1", "event": {"n": 1}, "contentType": "application/json"},
        {"entryID": "2", "event": "two", "contentType": "text/plain"},
    ]
    async with http_pubsub.session.post(url, json=entries) as r:
        assert r.status == 204
    events = await inbox.wait(2)
    assert sorted(str(e.data) for e in events) == ["two", "{'n': 1}"]
    bad = [{"entryId": "ok", "event": 1}, {"entryId": "ttl", "event": 2, "metadata": {"ttlInSeconds": "x"}}]
    async with http_pubsub.session.post(url, json=bad) as r:
        assert r.status == 500
        body = await r.json()
    assert body["errorCode"] == "ERR_PUBSUB_PUBLISH_MESSAGE"
    assert [f["entryId"] for f in body["failedEntries"]] == ["ttl"]


@pytest.mark.parametrize(
    "path, headers, body, status, code",
    [
        ("/v1.0/publish/nope/t", {}, b"x", 404, "ERR_PUBSUB_NOT_FOUND"),
        ("/v1.0/publish/{ps}/t?metadata.ttlInSeconds=-3", {}, b"x", 400, "ERR_PUBSUB_REQUEST_METADATA"),
        ("/v1.0/publish/{ps}/t", {"Content-Type": "application/cloudevents+json"}, b"{", 400, "ERR_PUBSUB_EVENTS_SER"),
        ("/v1.0-alpha1/publish/bulk/{ps}/t", {}, b"{}", 400, "ERR_MALFORMED_REQUEST"),
        ("/v1.0/publish/{ps}", {}, b"x", 404, "ERR_TOPIC_NAME_EMPTY"),
        ("/v1.0/publish/{ps}/", {}, b"x", 404, "ERR_TOPIC_NAME_EMPTY"),
        ("/v1.0/publish//t", {}, b"x", 404, "ERR_PUBSUB_EMPTY"),
        ("/v1.0-alpha1/publish/bulk//t", {}, b"[]", 404, "ERR_PUBSUB_EMPTY"),
        ("/v1.0-alpha1/publish/bulk/{ps}", {}, b"[]", 404, "ERR_TOPIC_NAME_EMPTY"),
    ],
)
async def test_http_publish_errors(  # type: ignore[no-untyped-def]
    pubsub: PubsubRuntime, http_pubsub, path: str, headers: dict, body: bytes, status: int, code: str
) -> None:
    url = http_pubsub.url(path.format(ps=pubsub.name))
    async with http_pubsub.session.post(url, data=body, headers=headers) as r:
        assert r.status == status
        assert (await r.json())["errorCode"] == code


async def test_http_publish_without_pubsub_service_is_not_configured(nc, subjects) -> None:  # type: ignore[no-untyped-def]
    client, runner = await open_gateway(nc, subjects, GatewayConfig(http_port=free_port()))
    client.gateway.bus.no_responder_retries = 0
    try:
        async with client.session.post(client.url("/v1.0/publish/pubsub/t"), data=b"x") as r:
            assert r.status == 400 and (await r.json())["errorCode"] == "ERR_PUBSUB_NOT_CONFIGURED"
    finally:
        await client.session.close()
        await runner.cleanup()


async def test_fast_path_straight_into_the_stream_is_delivered_the_same(pubsub: PubsubRuntime) -> None:
    """Any JetStream client can skip the service: the envelope on `<root>.events.<pubsub>.<topic>`."""
    inbox = Inbox()
    await pubsub.sdk("app").subscribe(pubsub.name, "fast", inbox)
    envelope = {"id": "f-1", "source": "edge", "type": "t", "specversion": "1.0", "topic": "fast", "data": [1]}
    headers = {"Nats-Msg-Id": "f-1", "Content-Type": "application/cloudevents+json"}
    subject = pubsub.subjects.events(pubsub.name, "fast")
    ack = await pubsub.nc.jetstream().publish(subject, json.dumps(envelope).encode(), headers=headers)
    assert ack.stream == pubsub.service.stores[pubsub.name].name
    [event] = await inbox.wait(1)
    assert event.id == "f-1" and event.data == [1]


async def test_the_stream_is_made_from_the_components_metadata(nc, subjects) -> None:  # type: ignore[no-untyped-def]
    """Retention, max age, max bytes, dedupe window and storage read back from the server as set."""
    from nats.js import api

    from kernel.components import Component, ComponentSet
    from services.pubsub.service import PubsubService
    from tests.conftest import unique

    name = unique("cfg-")
    metadata = {
        "retention": "interest",
        "maxAge": "90m",
        "maxBytes": "1048576",
        "duplicateWindow": "30s",
        "storage": "memory",
        "replicas": "1",
    }
    component = Component(name=name, type="pubsub.jetstream", metadata=metadata)
    service = PubsubService(nc, subjects=subjects, components=ComponentSet(components=[component]))
    await service.start()
    try:
        config = (await nc.jetstream().stream_info(service.stores[name].name)).config
        assert (config.retention, config.storage) == (api.RetentionPolicy.INTEREST, api.StorageType.MEMORY)
        assert (config.max_age, config.max_bytes, config.duplicate_window) == (5400.0, 1048576, 30.0)
        assert config.num_replicas == 1 and config.subjects == [subjects.events_wildcard(name)]
    finally:
        await service.stop()
        await nc.jetstream().delete_stream(service.stores[name].name)


async def test_message_over_the_component_size_limit_is_refused(nc, subjects) -> None:  # type: ignore[no-untyped-def]
    from adapters.sdk import Client
    from kernel.components import Component, ComponentSet
    from services.pubsub.service import PubsubService
    from tests.conftest import unique

    name = unique("small-")
    component = Component(name=name, type="pubsub.jetstream", metadata={"maxMessageSize": "2048"})
    service = PubsubService(nc, subjects=subjects, components=ComponentSet(components=[component]))
    await service.start()
    try:
        client = Client(nc, app_id="a", subjects=subjects)
        await client.publish(name, "t", "x" * 100)
        with pytest.raises(NatriumError) as err:
            await client.publish(name, "t", "x" * 5000)
        assert err.value.code == "ERR_PUBSUB_PUBLISH_MESSAGE" and "maximum" in err.value.message.lower()
    finally:
        await service.stop()
        await nc.jetstream().delete_stream(service.stores[name].name)


async def test_unsupported_pubsub_type_fails_startup(nc, subjects) -> None:  # type: ignore[no-untyped-def]
    from kernel.components import Component, ComponentSet
    from services.pubsub.service import PubsubService

    bad = Component(name="kafka", type="pubsub.kafka")
    service = PubsubService(nc, subjects=subjects, components=ComponentSet(components=[bad]))
    with pytest.raises(NatriumError, match="not supported"):
        await service.start()


@pytest.mark.parametrize("metadata", [{"maxAge": "forever"}, {"retention": "workqueue"}, {"maxDeliver": "0"}])
async def test_bad_pubsub_metadata_is_a_component_error(nc, metadata: dict) -> None:  # type: ignore[no-untyped-def]
    from kernel.components import Component
    from kernel.subjects import Subjects
    from services.pubsub.stream import EventStream

    with pytest.raises(NatriumError) as err:
        EventStream(nc, Component(name="p", type="pubsub.jetstream", metadata=metadata), Subjects())
    assert err.value.code == "ERR_COMPONENT_INVALID"
