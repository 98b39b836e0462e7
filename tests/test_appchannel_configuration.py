"""Configuration callbacks to HTTP apps: `natrium run` POSTs each change of a subscription to the app."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from nats.aio.client import Client
from nats.js.errors import KeyNotFoundError

from adapters.appchannel.configuration import ConfigurationDelivery, DeliveryPolicy
from adapters.appchannel.http_app import HttpApp
from adapters.resiliency import RetryPolicy
from kernel.nats_server import EmbeddedNatsServer
from kernel.subjects import Subjects
from schemas.configuration import SubscriptionRecord, app_subscriptions_bucket
from services.configuration.subscriptions import SubscriptionBook
from tests.configuration_runtime import ConfigRuntime, config_runtime
from tests.conftest import free_port, wait_until
from tests.test_invoke import Run, http

pytestmark = pytest.mark.slow

StartApp = Callable[[str], Awaitable[Run]]


@pytest.fixture
async def config(nc: Client, subjects: Subjects) -> AsyncIterator[ConfigRuntime]:
    async with config_runtime(nc, subjects) as runtime:
        yield runtime


@pytest.fixture
async def start_app(
    nats_server: EmbeddedNatsServer, subjects: Subjects, config: ConfigRuntime
) -> AsyncIterator[StartApp]:
    """`natrium run` with tests/apps/config_app.py on this test's root; stopped before the store goes."""
    started: list[Run] = []

    async def start(app_id: str) -> Run:
        run = await Run(nats_server.url, subjects.root, app_id, "config_app").start()
        started.append(run)
        return run

    yield start
    for run in started:
        await run.stop()


async def callbacks(app: Run, subscription_id: str | None = None) -> list[dict[str, Any]]:
    """What the app received, in order (only one subscription's callbacks when given)."""
    status, received, _ = await http("GET", f"http://127.0.0.1:{app.app_port}/received")
    assert status == 200
    return [r for r in received if subscription_id is None or r["body"]["id"] == subscription_id]


async def wait_for_callbacks(app: Run, subscription_id: str, count: int) -> list[dict[str, Any]]:
    async def enough() -> bool:
        return len(await callbacks(app, subscription_id)) >= count

    await wait_until(enough, timeout=60, interval=0.1)
    return await callbacks(app, subscription_id)


async def subscribe(app: Run, store: str, *keys: str) -> str:
    query = "&".join(f"key={key}" for key in keys)
    status, body, _ = await http("GET", f"{app.api}/v1.0/configuration/{store}/subscribe?{query}")
    assert status == 200, body
    return str(body["id"])


async def test_http_app_gets_every_update_in_order_until_it_unsubscribes(
    config: ConfigRuntime, start_app: StartApp
) -> None:
    app = await start_app("cfg-web")
    subscription_id = await subscribe(app, config.store, "color")
    versions = []
    for n in range(20):
        versions.append((await config.set({"color": f"v{n}"}))["color"])
        if n == 10:
            await config.set({"size": "ignored: not subscribed"})

    received = await wait_for_callbacks(app, subscription_id, 20)
    assert [r["store"] for r in received] == [config.store] * 20
    assert [r["key"] for r in received] == ["color"] * 20
    assert {r["contentType"] for r in received} == {"application/json"}
    assert [r["body"] for r in received] == [
        {"id": subscription_id, "items": {"color": {"value": f"v{n}", "version": versions[n], "metadata": {}}}}
        for n in range(20)
    ]

    witness = await subscribe(app, config.store, "color")
    status, body, _ = await http("GET", f"{app.api}/v1.0/configuration/{config.store}/{subscription_id}/unsubscribe")
    assert (status, body) == (200, {"ok": True})
    for n in range(5):
        await config.set({"color": f"after-{n}"})
    assert [r["body"]["items"]["color"]["value"] for r in await wait_for_callbacks(app, witness, 5)] == [
        f"after-{n}" for n in range(5)
    ]
    assert len(await callbacks(app, subscription_id)) == 20
    assert len(await callbacks(app)) == 25


async def test_record_made_before_the_channel_started_is_delivered_from_its_start_sequence(
    config: ConfigRuntime, start_app: StartApp
) -> None:
    # Subscriptions recorded on the bus before `natrium run` starts: one for this app, one for another.
    mine = await config.call("subscribe", {"keys": [], "delivery": "app", "appId": "cfg-early"})
    theirs = await config.call("subscribe", {"keys": [], "delivery": "app", "appId": "cfg-someone-else"})
    early = await config.set({"a": "1", "b": "2"})
    app = await start_app("cfg-early")
    later = await config.set({"a": "fail-once"}, {"owner": "ops"})
    await config.client.delete_configuration(config.store, ["b"])
    await config.set({"c/d e?": "3"})

    received = await wait_for_callbacks(app, mine["id"], 6)
    # the refused callback came again, and nothing overtook it
    assert [(r["key"], r["body"]["items"][r["key"]]["value"]) for r in received] == [
        ("a", "1"),
        ("b", "2"),
        ("a", "fail-once"),
        ("a", "fail-once"),
        ("b", ""),
        ("c/d e?", "3"),
    ]
    assert received[0]["body"]["items"] == {"a": {"value": "1", "version": early["a"], "metadata": {}}}
    assert received[3]["body"]["items"] == {
        "a": {"value": "fail-once", "version": later["a"], "metadata": {"owner": "ops"}}
    }
    # a delete is an empty item, as daprd sends it
    assert received[4]["body"] == {"id": mine["id"], "items": {"b": {"value": "", "version": "", "metadata": {}}}}
    assert await callbacks(app, theirs["id"]) == []


async def test_only_the_run_that_subscribed_gets_the_updates_and_its_record_ends_with_it(
    nc: Client, subjects: Subjects, config: ConfigRuntime, start_app: StartApp
) -> None:
    subscriber = await start_app("cfg-replicated")
    replica = await start_app("cfg-replicated")
    subscription_id = await subscribe(subscriber, config.store, "color")
    kv = await nc.jetstream().key_value(app_subscriptions_bucket(subjects.root))
    key = SubscriptionBook.key(config.store, subscription_id)
    record = SubscriptionRecord.model_validate_json((await kv.get(key)).value or b"")
    assert record.app_id == "cfg-replicated" and record.channel_id

    for n in range(5):
        await config.set({"color": f"v{n}"})
    received = await wait_for_callbacks(subscriber, subscription_id, 5)
    assert [r["body"]["items"]["color"]["value"] for r in received] == [f"v{n}" for n in range(5)]
    assert await callbacks(replica) == []

    await subscriber.stop()
    with pytest.raises(KeyNotFoundError):
        await kv.get(key)


# -- in process, with quick retries: the channel's delivery against a small aiohttp app -------------


class CallbackApp:
    """Records the value of each callback; answers 503 to the value `refused`."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.values: list[str] = []
        self.runner: web.AppRunner | None = None

    async def callback(self, request: web.Request) -> web.Response:
        value = (await request.json())["items"]["k"]["value"]
        self.values.append(value)
        return web.Response(status=503 if value == "refused" else 200)

    async def start(self) -> None:
        server = web.Application()
        server.router.add_post("/configuration/{store}/{key}", self.callback)
        self.runner = web.AppRunner(server)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def got(self, value: str) -> None:
        async def arrived() -> bool:
            return value in self.values

        await wait_until(arrived, timeout=30)


@pytest.fixture
async def channel(nc: Client, subjects: Subjects, config: ConfigRuntime) -> AsyncIterator[tuple[CallbackApp, Any]]:
    """A `ConfigurationDelivery` for app `cfg-inproc` (2 retries 50 ms apart) and its app, not started."""
    target = CallbackApp(free_port())
    app = HttpApp("cfg-inproc", target.port)
    await app.open()
    quick = DeliveryPolicy(retry=RetryPolicy(policy="constant", duration=0.05, max_retries=2))
    delivery = ConfigurationDelivery(nc, subjects, "cfg-inproc", app, quick)
    await delivery.start()
    yield target, delivery
    await delivery.stop()
    assert delivery.following == {}
    await app.close()
    if target.runner is not None:
        await target.runner.cleanup()


async def test_update_the_app_keeps_refusing_is_given_up_loudly_and_the_next_one_follows(
    config: ConfigRuntime, channel: tuple[CallbackApp, Any], caplog: pytest.LogCaptureFixture
) -> None:
    target, _ = channel
    await target.start()
    await config.call("subscribe", {"keys": ["k"], "delivery": "app", "appId": "cfg-inproc"})
    await config.set({"k": "refused"})
    await config.set({"k": "fine"})
    await target.got("fine")
    assert target.values == ["refused", "refused", "refused", "fine"]
    assert "configuration update not delivered, given up after 3 tries: app cfg-inproc answered 503" in caplog.text


async def test_update_waits_for_an_app_that_is_not_listening_yet(
    config: ConfigRuntime, channel: tuple[CallbackApp, Any], caplog: pytest.LogCaptureFixture
) -> None:
    target, delivery = channel
    delivery.policy = DeliveryPolicy(retry=RetryPolicy(policy="constant", duration=0.1, max_retries=300))
    await config.call("subscribe", {"keys": ["k"], "delivery": "app", "appId": "cfg-inproc"})
    await config.set({"k": "first"})
    await config.set({"k": "second"})

    async def refused_once() -> bool:
        return "not reachable" in caplog.text

    await wait_until(refused_once, timeout=30)
    await target.start()
    await target.got("second")
    assert target.values == ["first", "second"]
