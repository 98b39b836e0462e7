"""Input bindings: events from real sources reach apps, are retried until accepted, and cron fires once."""

from __future__ import annotations

import json
from typing import Any

import aio_pika
import pytest
from nats.aio.client import Client

from adapters.bindings.inbox import BindingEvent
from adapters.sdk import Client as SdkClient
from kernel.client import BusClient
from kernel.components import Component
from kernel.nats_server import EmbeddedNatsServer
from kernel.subjects import Subjects
from tests.bindings_runtime import MOSQUITTO, RABBITMQ, binding, bindings_service, require
from tests.conftest import start_runtime, unique, wait_until
from tests.test_invoke import Run, http


class Received:
    """An SDK handler that refuses each event's first delivery when its body says `fail-once`."""

    def __init__(self) -> None:
        self.events: list[BindingEvent] = []

    async def __call__(self, event: BindingEvent) -> bool:
        self.events.append(event)
        return not (b"fail-once" in event.data and event.delivery == 1)

    async def wait(self, count: int, timeout: float = 15.0) -> list[BindingEvent]:
        async def enough() -> bool:
            return len(self.events) >= count

        await wait_until(enough, timeout=timeout)
        return self.events


async def test_mqtt_events_reach_an_sdk_handler_and_a_refused_one_comes_again(nc: Client, subjects: Subjects) -> None:
    require(MOSQUITTO, "Mosquitto")
    topic = unique("natrium/test/")
    component = binding(
        "mqtt",
        "mqtt3",
        url="tcp://127.0.0.1:1883",
        topic=topic,
        consumerID=unique("c"),
        direction="input, output",
        backOff="100ms",
    )
    async with bindings_service(nc, subjects, component):
        sdk = SdkClient(nc, app_id="mqtt-reader", subjects=subjects)
        inbox = Received()
        await sdk.subscribe_binding("mqtt", inbox)
        try:
            # The reader subscribes in the background: publish until the first event is through.
            async def through() -> bool:
                await sdk.invoke_binding("mqtt", "create", b"hello")
                return len(inbox.events) > 0

            await wait_until(through, timeout=15, interval=0.3)
            await sdk.invoke_binding("mqtt", "create", b"fail-once")
            events = await inbox.wait(2)

            async def redelivered() -> bool:
                return any(e.data == b"fail-once" and e.delivery == 2 for e in inbox.events)

            await wait_until(redelivered)
            first = events[0]
            assert first.metadata["topic"] == topic
            refused = [e for e in inbox.events if e.data == b"fail-once"]
            assert [e.delivery for e in refused] == [1, 2]
            assert refused[0].sequence == refused[1].sequence  # the same stored event, redelivered
        finally:
            for subscription in sdk._binding_inputs:
                await subscription.stop()


async def test_rabbitmq_queue_events_reach_an_sdk_handler_and_are_acked_after_storing(
    nc: Client, subjects: Subjects
) -> None:
    require(RABBITMQ, "RabbitMQ")
    queue = unique("natrium-test-")
    url = "amqp://guest:guest@127.0.0.1:5672/"
    component = binding("rabbit", "rabbitmq", host=url, queueName=queue, direction="input,output", backOff="100ms")
    try:
        async with bindings_service(nc, subjects, component):
            sdk = SdkClient(nc, app_id="rabbit-reader", subjects=subjects)
            inbox = Received()
            await sdk.subscribe_binding("rabbit", inbox)
            try:
                for body in (b"one", b"fail-once", b"three"):
                    await sdk.invoke_binding("rabbit", "create", body)
                await inbox.wait(4)
                accepted = [e.data for e in inbox.events if not (e.data == b"fail-once" and e.delivery == 1)]
                assert sorted(accepted) == [b"fail-once", b"one", b"three"]
                assert inbox.events[0].metadata["queueName"] == queue
            finally:
                for subscription in sdk._binding_inputs:
                    await subscription.stop()
        # Everything was taken from the queue: acked once stored in the stream.
        connection = await aio_pika.connect(url)
        async with connection:
            channel = await connection.channel()
            declared = await channel.declare_queue(queue, durable=True, passive=True)
            assert declared.declaration_result.message_count == 0
    finally:
        connection = await aio_pika.connect(url)
        async with connection:
            channel = await connection.channel()
            await channel.queue_delete(queue)


async def test_a_refused_source_event_is_kept_while_acked_ones_are_purged(nc: Client, subjects: Subjects) -> None:
    """The source forgot the events once stored: the stream must keep a refused one for as long
    as the app refuses it, and need not keep those the app took."""
    require(RABBITMQ, "RabbitMQ")
    queue = unique("natrium-test-")
    url = "amqp://guest:guest@127.0.0.1:5672/"
    metadata = {"queueName": queue, "direction": "input,output", "backOff": "100ms", "purgeInterval": "200ms"}
    component = binding("rabbit", "rabbitmq", host=url, **metadata)
    refused: list[int] = []

    async def handler(event: BindingEvent) -> bool:
        if event.data == b"never":
            refused.append(event.delivery)
            return False
        return True

    try:
        async with bindings_service(nc, subjects, component) as runtime:
            events = runtime.service.stores["rabbit"].events
            assert events is not None and events.stream_config().max_age in (0, None)
            sdk = SdkClient(nc, app_id="picky", subjects=subjects)
            await sdk.subscribe_binding("rabbit", handler)
            try:
                for body in (b"one", b"never", b"three"):
                    await sdk.invoke_binding("rabbit", "create", body)

                async def the_acked_head_is_gone() -> bool:
                    info = await nc.jetstream().stream_info(events.name, subjects_filter=events.subject)
                    return len(refused) >= 3 and (info.state.subjects or {}).get(events.subject) == 2

                # Purged up to the oldest unacked event: "one" goes, "never" and what follows stay.
                await wait_until(the_acked_head_is_gone, timeout=20)
                first = await nc.jetstream().get_msg(events.name, seq=1, subject=events.subject, next=True)
                assert first.data == b"never"
            finally:
                for subscription in sdk._binding_inputs:
                    await subscription.stop()
    finally:
        connection = await aio_pika.connect(url)
        async with connection:
            channel = await connection.channel()
            await channel.queue_delete(queue)


@pytest.mark.slow
async def test_http_app_under_natrium_run_gets_events_it_listens_to_and_a_refused_one_again(
    nats_server: EmbeddedNatsServer, nc: Client, subjects: Subjects
) -> None:
    prefix = unique("src.")
    components = [
        # no direction: the app channel asks OPTIONS /orders-in (200) before delivering
        binding("orders-in", "nats", subject=f"{prefix}.orders", backOff="200ms"),
        # no direction, and the app has no /not-listening: OPTIONS answers 404, nothing is delivered
        binding("not-listening", "nats", subject=f"{prefix}.ignored"),
        # declared input with its own route: no probe
        binding("routed", "nats", subject=f"{prefix}.routed", route="/custom/route", direction="input"),
        # where the app's answer to an event sends data (daprd's "to")
        binding("forward", "nats", subject=f"{prefix}.forwarded", direction="output"),
    ]
    store = unique("store-")
    state = await start_runtime(nc, subjects, [Component(name=store, type="state.nats-kv")])
    forwarded = await nc.subscribe(f"{prefix}.forwarded")
    async with bindings_service(nc, subjects, *components) as bindings:
        run = await Run(nats_server.url, subjects.root, "binding-web", "binding_app").start()
        try:
            # A request is answered once the event is stored: retry until the channel subscribed.
            async def stored(subject: str, body: bytes) -> None:
                async def answered() -> bool:
                    try:
                        await nc.request(subject, body, timeout=0.5)
                        return True
                    except Exception:
                        return False

                await wait_until(answered, timeout=30, interval=0.2)

            await stored(f"{prefix}.orders", b'{"order":1}')
            await stored(f"{prefix}.orders", b'"fail-once"')
            await stored(f"{prefix}.routed", b"routed-event")
            received = await _wait_received(run, 4)
            by_path: dict[str, list[str]] = {}
            for event in received:
                by_path.setdefault(event["path"], []).append(event["body"])
            assert by_path["/orders-in"] == ['{"order":1}', '"fail-once"', '"fail-once"']
            assert by_path["/custom/route"] == ["routed-event"]
            first = received[0]["headers"]
            assert first["subject"] == f"{prefix}.orders"
            assert first["Content-Type"] == "application/json"
            # the binding the app does not listen to has no consumer: its source is not even read
            assert bindings.service.stores["not-listening"].reader is None

            # An answer with work in it: the channel saves the state (as the app) and sends the data on.
            work = {"storeName": store, "state": [{"key": "k", "value": {"v": 1}}], "to": ["forward"], "data": "go"}
            await stored(f"{prefix}.orders", json.dumps({"reply": work}).encode())
            message = await forwarded.next_msg(timeout=15)
            assert message.data == b'"go"'
            saved = await BusClient(nc).request(
                subjects.block("state", store, "get"), {"key": "k", "appId": "binding-web"}
            )
            assert saved["found"] and json.loads(saved["data"]) == {"v": 1}
        finally:
            await run.stop()
            await forwarded.unsubscribe()
            await state.stop()
            await nc.jetstream().delete_stream(f"KV_state-{store}")


async def test_cron_fires_once_per_tick_across_two_service_replicas(nc: Client, subjects: Subjects) -> None:
    component = binding("tick", "cron", schedule="@every 1s")
    async with bindings_service(nc, subjects, component) as first, bindings_service(nc, subjects, component):
        sdk = SdkClient(nc, app_id="ticker", subjects=subjects)
        inbox = Received()
        await sdk.subscribe_binding("tick", inbox)
        try:
            events = list(await inbox.wait(3, timeout=10))
        finally:
            for subscription in sdk._binding_inputs:
                await subscription.stop()
        stream = first.service.stores["tick"].events
        assert stream is not None
        info = await nc.jetstream().stream_info(stream.name, subjects_filter=">")
        assert (info.state.subjects or {}).get(stream.schedule_subject) == 1  # one schedule for both replicas
        ticks = [e.metadata["readTimeUTC"][:19] for e in events]
        assert len(set(ticks)) == len(ticks), ticks  # never two firings of one second
        assert {e.metadata["schedule"] for e in events} == {"@every 1s"}
        assert all(e.data == json.dumps({"schedule": "@every 1s"}).encode() for e in events)


async def test_cron_with_six_fields_fires_every_second(nc: Client, subjects: Subjects) -> None:
    """Dapr's cron has a seconds field first: `* * * * * *` is once a second."""
    component = binding("sixfields", "cron", schedule="* * * * * *")
    async with bindings_service(nc, subjects, component):
        sdk = SdkClient(nc, app_id="sixer", subjects=subjects)
        inbox = Received()
        await sdk.subscribe_binding("sixfields", inbox)
        try:
            events = list(await inbox.wait(2, timeout=10))
        finally:
            for subscription in sdk._binding_inputs:
                await subscription.stop()
    seconds = [e.metadata["readTimeUTC"][:19] for e in events]
    assert len(set(seconds)) == len(seconds) and {e.metadata["schedule"] for e in events} == {"* * * * * *"}


async def _wait_received(run: Run, count: int) -> list[dict[str, Any]]:
    async def enough() -> bool:
        status, body, _ = await http("GET", f"http://127.0.0.1:{run.app_port}/received")
        return status == 200 and len(body) >= count

    await wait_until(enough, timeout=30, interval=0.1)
    _, body, _ = await http("GET", f"http://127.0.0.1:{run.app_port}/received")
    return list(body)


async def test_mqtt_input_is_read_by_one_replica_at_a_time_and_moves_when_it_stops(
    nc: Client, subjects: Subjects
) -> None:
    """One MQTT session per consumerID: replicas take turns under a lease instead of stealing it."""
    require(MOSQUITTO, "Mosquitto")
    topic = unique("natrium/lease/")
    component = binding(
        "mq",
        "mqtt3",
        url="tcp://127.0.0.1:1883",
        topic=topic,
        consumerID=unique("c"),
        direction="input, output",
        backOff="100ms",
        readerLeaseTTL="2s",
    )
    sdk = SdkClient(nc, app_id="mq-reader", subjects=subjects)
    inbox = Received()
    async with bindings_service(nc, subjects, component) as first:
        await sdk.subscribe_binding("mq", inbox)
        events = first.service.stores["mq"].events
        assert events is not None

        async def leased() -> bool:
            try:
                await nc.jetstream().get_last_msg(events.name, events.lease_subject)
                return True
            except Exception:
                return False

        await wait_until(leased, timeout=10)
        async with bindings_service(nc, subjects, component) as second:
            try:

                async def through(prefix: str) -> bool:
                    await second.invoke("mq", "create", f"{prefix}-probe".encode())
                    return any(e.data.startswith(prefix.encode()) for e in inbox.events)

                await wait_until(lambda: through("a"), timeout=15, interval=0.3)
                for n in range(10):
                    await second.invoke("mq", "create", f"a{n}".encode())
                await first.service.stop()  # the lease holder goes; the second replica takes over
                for n in range(10):
                    await second.invoke("mq", "create", f"b{n}".encode())
                wanted = {f"a{n}".encode() for n in range(10)} | {f"b{n}".encode() for n in range(10)}

                async def all_there() -> bool:
                    return wanted <= {e.data for e in inbox.events}

                await wait_until(all_there, timeout=30, interval=0.2)
                counted = [e.data for e in inbox.events if e.data in wanted]
                # Under the lease no event is read twice while both replicas run; a handover may
                # repeat what the first took but had not acked (at least once), never lose one.
                assert len([d for d in counted if d.startswith(b"a")]) == 10
            finally:
                for subscription in sdk._binding_inputs:
                    await subscription.stop()
