"""The configuration block over the bus and from the SDK: items, versions, subscriptions as KV watches."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client
from nats.js.errors import KeyNotFoundError

from adapters.sdk.configuration import ConfigurationUpdate
from kernel.components import Component, ComponentSet
from kernel.errors import NatriumError
from kernel.subjects import Subjects
from services.configuration import ConfigurationService
from services.configuration.subscriptions import subscriptions_bucket
from tests.configuration_runtime import ConfigRuntime, Updates, config_runtime
from tests.conftest import unique


@pytest.fixture
async def config(nc: Client, subjects: Subjects) -> AsyncIterator[ConfigRuntime]:
    async with config_runtime(nc, subjects) as runtime:
        yield runtime


# -- get / set / delete -----------------------------------------------------------------------------


async def test_set_then_get_specific_keys_over_msgpack_and_json(config: ConfigRuntime) -> None:
    await config.call("set", {"items": {"color": {"value": "blue"}, "size": {"value": "L", "metadata": {"a": "1"}}}})
    for json_body in (False, True):
        reply = await config.call("get", {"keys": ["color", "size"]}, json_body=json_body)
        items = reply["items"]
        assert set(items) == {"color", "size"}
        assert items["color"]["value"] == "blue" and items["color"]["metadata"] == {}
        assert items["size"] == {"value": "L", "version": items["size"]["version"], "metadata": {"a": "1"}}
        assert items["color"]["version"].isdigit()


async def test_get_without_keys_returns_every_item_but_not_deleted_ones(config: ConfigRuntime) -> None:
    await config.set({"a": "1", "b": "2", "c": "3"})
    await config.client.delete_configuration(config.store, ["b"])
    items = await config.client.get_configuration(config.store)
    assert {key: item.value for key, item in items.items()} == {"a": "1", "c": "3"}


async def test_get_all_of_an_empty_store_is_empty(config: ConfigRuntime) -> None:
    assert (await config.call("get", {}))["items"] == {}


async def test_missing_keys_are_left_out(config: ConfigRuntime) -> None:
    await config.set({"here": "yes"})
    items = await config.client.get_configuration(config.store, ["here", "nowhere"])
    assert list(items) == ["here"]


async def test_version_is_the_kv_revision_and_grows_on_every_update(config: ConfigRuntime) -> None:
    first = (await config.set({"k": "v1"}))["k"]
    second = (await config.set({"k": "v2"}))["k"]
    assert int(second) > int(first)
    item = (await config.client.get_configuration(config.store, ["k"]))["k"]
    assert (item.value, item.version) == ("v2", second)
    kv = await config.nc.jetstream().key_value(config.service.stores[config.store].bucket)
    assert str((await kv.get("k")).revision) == second


async def test_set_reply_gives_each_keys_new_version_in_order(config: ConfigRuntime) -> None:
    versions = await config.set({"x": "1", "y": "2", "z": "3"})
    assert list(versions) == ["x", "y", "z"]
    assert [int(v) for v in versions.values()] == sorted(int(v) for v in versions.values())


@pytest.mark.parametrize("key", ["a.b.c", "with space", "slash/and\\back", "ünï-ключ-鍵", "emoji-🚀", "*", ">", "=3D"])
async def test_odd_keys_round_trip(config: ConfigRuntime, key: str) -> None:
    await config.set({key: "v"})
    assert list(await config.client.get_configuration(config.store, [key])) == [key]
    assert list(await config.client.get_configuration(config.store)) == [key]


async def test_delete_returns_only_keys_that_existed(config: ConfigRuntime) -> None:
    await config.set({"gone": "1"})
    assert await config.client.delete_configuration(config.store, ["gone", "never"]) == ["gone"]
    assert await config.client.delete_configuration(config.store, ["gone"]) == []
    assert await config.client.get_configuration(config.store, ["gone"]) == {}


async def test_value_put_with_a_plain_kv_client_is_read_as_text(config: ConfigRuntime) -> None:
    kv = await config.nc.jetstream().key_value(config.service.stores[config.store].bucket)
    revision = await kv.put("raw", b"plain text")
    item = (await config.client.get_configuration(config.store, ["raw"]))["raw"]
    assert (item.value, item.version, item.metadata) == ("plain text", str(revision), {})


async def test_stored_value_is_the_item_as_json(config: ConfigRuntime) -> None:
    await config.set({"k": "v"}, {"m": "1"})
    kv = await config.nc.jetstream().key_value(config.service.stores[config.store].bucket)
    assert json.loads((await kv.get("k")).value or b"") == {"value": "v", "metadata": {"m": "1"}}


@pytest.mark.parametrize(
    ("operation", "body"),
    [
        ("set", {"items": {"k": {"value": 1}}}),
        ("set", {"items": {"": {"value": "v"}}}),
        ("set", {"items": {}}),
        ("get", {"keys": [""]}),
        ("delete", {"keys": ["ok", ""]}),
        ("subscribe", {"delivery": "email"}),
        ("unsubscribe", {"id": ""}),
    ],
)
async def test_bad_bodies_are_malformed_requests(
    config: ConfigRuntime, operation: str, body: dict[str, object]
) -> None:
    with pytest.raises(NatriumError) as caught:
        await config.call(operation, body, json_body=True)
    assert (caught.value.code, caught.value.status) == ("ERR_MALFORMED_REQUEST", 400)


async def test_value_over_max_value_size_is_refused(nc: Client, subjects: Subjects) -> None:
    async with config_runtime(nc, subjects, maxValueSize="64") as config:
        with pytest.raises(NatriumError) as caught:
            await config.set({"big": "x" * 200})
        assert caught.value.code == "ERR_CONFIGURATION_SET" and caught.value.status == 500
        assert await config.client.get_configuration(config.store) == {}


@pytest.mark.parametrize("operation", ["get", "set", "delete", "subscribe", "unsubscribe"])
async def test_unknown_store_is_store_not_found(config: ConfigRuntime, operation: str) -> None:
    body = {"get": {}, "set": {"items": {"k": {"value": "v"}}}, "delete": {"keys": ["k"]}, "subscribe": {}}
    with pytest.raises(NatriumError) as caught:
        await config.call(operation, body.get(operation, {"id": "x"}), store="no-such-store")
    assert (caught.value.code, caught.value.status) == ("ERR_CONFIGURATION_STORE_NOT_FOUND", 400)
    assert caught.value.message == "configuration store no-such-store not found"


# -- components -------------------------------------------------------------------------------------


async def test_unsupported_component_type_fails_startup_unless_ignore_errors(nc: Client, subjects: Subjects) -> None:
    bad = Component(name=unique("cfg-"), type="configuration.redis")
    service = ConfigurationService(nc, subjects=subjects, components=ComponentSet(components=[bad]))
    with pytest.raises(NatriumError) as caught:
        await service.start()
    assert caught.value.code == "ERR_COMPONENT_INVALID" and "configuration.redis" in caught.value.message

    ignored = bad.model_copy(update={"ignore_errors": True})
    good = Component(name=unique("cfg-"), type="configuration.jetstream")
    service = ConfigurationService(nc, subjects=subjects, components=ComponentSet(components=[ignored, good]))
    await service.start()
    try:
        assert list(service.stores) == [good.name]
        assert service.stores[good.name].bucket == f"config-{good.name}"
    finally:
        await service.stop()
        await nc.jetstream().delete_stream(service.stores[good.name].stream)
        await nc.jetstream().delete_stream(f"KV_{subscriptions_bucket(subjects)}")


async def test_default_store_is_configstore(nc: Client, subjects: Subjects) -> None:
    service = ConfigurationService(nc, subjects=subjects)
    assert [c.name for c in service.block_components()] == ["configstore"]
    assert service.block_components()[0].type == "configuration.nats-kv"


# -- subscriptions ----------------------------------------------------------------------------------


async def test_subscriber_sees_fifty_quick_updates_all_in_order(config: ConfigRuntime) -> None:
    updates = Updates()
    subscription = await config.client.subscribe_configuration(config.store, ["counter"], updates)
    versions = [(await config.set({"counter": str(n)}))["counter"] for n in range(50)]
    seen = await updates.wait(50)
    assert [u.item.value for u in seen if u.item] == [str(n) for n in range(50)]
    assert [u.version for u in seen] == versions
    assert all(u.id == subscription.id and u.store == config.store and u.key == "counter" for u in seen)


async def test_updates_of_many_keys_arrive_in_store_order(config: ConfigRuntime) -> None:
    updates = Updates()
    await config.client.subscribe_configuration(config.store, [], updates)
    written: list[tuple[str, str]] = []
    for n in range(30):
        key = f"k{n % 4}"
        written.append((key, (await config.set({key: str(n)}))[key]))
    seen = await updates.wait(30)
    assert [(u.key, u.version) for u in seen] == written


async def test_subscriber_sees_deletes(config: ConfigRuntime) -> None:
    await config.set({"flag": "on"})
    updates = Updates()
    await config.client.subscribe_configuration(config.store, ["flag"], updates)
    await config.client.delete_configuration(config.store, ["flag"])
    await config.set({"flag": "back"})
    first, second = await updates.wait(2)
    assert first.deleted and first.item is None and first.key == "flag" and first.version.isdigit()
    assert not second.deleted and second.item is not None and second.item.value == "back"


async def test_subscription_sees_only_changes_after_it_subscribed(config: ConfigRuntime) -> None:
    await config.set({"k": "before"})
    updates = Updates()
    await config.client.subscribe_configuration(config.store, ["k"], updates)
    await config.set({"k": "after"})
    [update] = await updates.wait(1)
    assert update.item is not None and update.item.value == "after"


async def test_subscription_to_some_keys_ignores_the_others(config: ConfigRuntime) -> None:
    updates = Updates()
    await config.client.subscribe_configuration(config.store, ["a", "b.c"], updates)
    for key in ("x", "a", "b", "b.c", "bb"):
        await config.set({key: key})
    await config.set({"a": "last"})
    seen = await updates.wait(3)
    assert [u.key for u in seen] == ["a", "b.c", "a"]


async def test_item_metadata_arrives_with_the_update(config: ConfigRuntime) -> None:
    updates = Updates()
    await config.client.subscribe_configuration(config.store, ["k"], updates)
    await config.set({"k": "v"}, {"owner": "ops"})
    [update] = await updates.wait(1)
    assert update.item is not None and update.item.metadata == {"owner": "ops"}


async def test_plain_function_callback_works_too(config: ConfigRuntime) -> None:
    updates = Updates()
    await config.client.subscribe_configuration(config.store, ["k"], updates.updates.append)
    await config.set({"k": "v"})
    [update] = await updates.wait(1)
    assert update.item is not None and update.item.value == "v"


async def test_failing_callback_does_not_end_the_subscription(
    config: ConfigRuntime, caplog: pytest.LogCaptureFixture
) -> None:
    updates = Updates()

    async def flaky(update: ConfigurationUpdate) -> None:
        await updates(update)
        if len(updates.updates) == 1:
            raise RuntimeError("boom")

    await config.client.subscribe_configuration(config.store, ["k"], flaky)
    await config.set({"k": "1"})
    await config.set({"k": "2"})
    assert [u.item.value for u in await updates.wait(2) if u.item] == ["1", "2"]
    assert "configuration callback failed" in caplog.text


async def test_stopped_subscription_gets_nothing_more(config: ConfigRuntime) -> None:
    stopped, running = Updates(), Updates()
    subscription = await config.client.subscribe_configuration(config.store, ["k"], stopped)
    await config.client.subscribe_configuration(config.store, ["k"], running)
    await config.set({"k": "seen"})
    await stopped.wait(1)
    await subscription.stop()
    for n in range(20):
        await config.set({"k": str(n)})
    await running.wait(21)
    assert len(stopped.updates) == 1


async def test_unsubscribe_by_id_stops_the_clients_subscription(config: ConfigRuntime) -> None:
    updates, witness = Updates(), Updates()
    subscription = await config.client.subscribe_configuration(config.store, [], updates)
    await config.client.subscribe_configuration(config.store, [], witness)
    await config.client.unsubscribe_configuration(config.store, subscription.id)
    for n in range(10):
        await config.set({"k": str(n)})
    await witness.wait(10)
    assert updates.updates == []


async def test_subscribe_reply_tells_a_plain_nats_client_what_to_watch(config: ConfigRuntime) -> None:
    await config.set({"k": "old"})
    plan = await config.call("subscribe", {"keys": ["k", "k", "ü"]}, json_body=True)
    bucket = f"config-{config.store}"
    assert plan["bucket"] == bucket and plan["stream"] == f"KV_{bucket}"
    assert plan["keyPrefix"] == f"$KV.{bucket}." and plan["subjects"] == [f"$KV.{bucket}.k", f"$KV.{bucket}.=C3=BC"]
    assert plan["startSequence"] == int((await config.set({"k": "new"}))["k"])
    assert plan["id"] and plan["id"] != (await config.call("subscribe", {}))["id"]


# -- app subscriptions (HTTP apps, delivered by the app channel) -------------------------------------


async def test_app_subscription_is_recorded_until_unsubscribed(config: ConfigRuntime) -> None:
    plan = await config.call("subscribe", {"keys": ["a"], "delivery": "app", "appId": "web"})
    kv = await config.nc.jetstream().key_value(subscriptions_bucket(config.subjects))
    record = json.loads((await kv.get(f"{config.store}.{plan['id']}")).value or b"")
    assert record["appId"] == "web" and record["keys"] == ["a"] and record["store"] == config.store
    assert record["startSequence"] == plan["startSequence"] and record["created"].endswith("Z")

    assert await config.call("unsubscribe", {"id": plan["id"]}) == {"ok": True}
    with pytest.raises(KeyNotFoundError):
        await kv.get(f"{config.store}.{plan['id']}")
    with pytest.raises(NatriumError) as again:
        await config.call("unsubscribe", {"id": plan["id"]})
    assert (again.value.code, again.value.status) == ("ERR_CONFIGURATION_UNSUBSCRIBE", 500)
    assert again.value.message.startswith(f"failed to unsubscribe to configuration request {plan['id']}")


async def test_watch_subscriptions_leave_no_record(config: ConfigRuntime) -> None:
    plan = await config.call("subscribe", {"keys": ["a"]})
    with pytest.raises(NatriumError) as caught:
        await config.call("unsubscribe", {"id": plan["id"]})
    assert caught.value.code == "ERR_CONFIGURATION_UNSUBSCRIBE"


async def test_app_subscription_without_an_app_is_app_channel_nil(config: ConfigRuntime) -> None:
    with pytest.raises(NatriumError) as caught:
        await config.call("subscribe", {"delivery": "app"})
    assert (caught.value.code, caught.value.status) == ("ERR_APP_CHANNEL_NIL", 500)
