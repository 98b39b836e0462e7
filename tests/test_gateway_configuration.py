"""Dapr's HTTP configuration API through the gateway: bodies, status codes and error codes as daprd's."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from nats.aio.client import Client
from nats.js.errors import KeyNotFoundError

from adapters.gateway.context import GatewayConfig
from kernel.subjects import Subjects
from services.configuration.subscriptions import subscriptions_bucket
from tests.configuration_runtime import ConfigRuntime, config_runtime
from tests.conftest import GatewayClient, free_port, open_gateway, unique

PREFIXES = ["/v1.0", "/v1.0-alpha1"]


@pytest.fixture
async def config(nc: Client, subjects: Subjects) -> AsyncIterator[ConfigRuntime]:
    async with config_runtime(nc, subjects) as runtime:
        yield runtime


@pytest.fixture
async def http(nc: Client, config: ConfigRuntime) -> AsyncIterator[GatewayClient]:
    client, runner = await open_gateway(nc, config.subjects, GatewayConfig(http_port=free_port(), app_id="web"))
    yield client
    await client.session.close()
    await runner.cleanup()


async def get(http: GatewayClient, path: str) -> tuple[int, Any]:
    async with http.session.get(http.url(path)) as r:
        raw = await r.read()
        return r.status, (json.loads(raw) if raw else raw)


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_get_specific_keys_returns_daprs_item_map(
    http: GatewayClient, config: ConfigRuntime, prefix: str
) -> None:
    versions = await config.set({"a": "1", "b": "2", "c": "3"})
    await config.set({"b": "two"}, {"owner": "ops"})
    status, body = await get(http, f"{prefix}/configuration/{config.store}?key=a&key=b&key=missing")
    assert status == 200
    assert body["a"] == {"value": "1", "version": versions["a"], "metadata": {}}
    assert body["b"]["value"] == "two" and body["b"]["metadata"] == {"owner": "ops"}
    assert int(body["b"]["version"]) > int(versions["b"])
    assert set(body) == {"a", "b"}


async def test_get_without_keys_returns_all(http: GatewayClient, config: ConfigRuntime) -> None:
    await config.set({"x": "1", "y": "2"})
    status, body = await get(http, f"/v1.0/configuration/{config.store}")
    assert status == 200 and {k: v["value"] for k, v in body.items()} == {"x": "1", "y": "2"}


async def test_nothing_found_is_204_with_empty_body(http: GatewayClient, config: ConfigRuntime) -> None:
    assert await get(http, f"/v1.0/configuration/{config.store}?key=nope") == (204, b"")
    assert await get(http, f"/v1.0/configuration/{config.store}") == (204, b"")


async def test_version_changes_when_the_value_changes(http: GatewayClient, config: ConfigRuntime) -> None:
    await config.set({"k": "old"})
    _, before = await get(http, f"/v1.0/configuration/{config.store}?key=k")
    await config.set({"k": "new"})
    _, after = await get(http, f"/v1.0/configuration/{config.store}?key=k")
    assert after["k"]["value"] == "new" and int(after["k"]["version"]) > int(before["k"]["version"])


async def test_url_encoded_key(http: GatewayClient, config: ConfigRuntime) -> None:
    await config.set({"a/b ü": "v"})
    status, body = await get(http, f"/v1.0/configuration/{config.store}?key=a%2Fb%20%C3%BC")
    assert status == 200 and list(body) == ["a/b ü"]


@pytest.mark.parametrize(
    "path",
    ["/v1.0/configuration/nope", "/v1.0/configuration/nope/subscribe", "/v1.0-alpha1/configuration/nope/x/unsubscribe"],
)
async def test_unknown_store_is_400(http: GatewayClient, config: ConfigRuntime, path: str) -> None:
    status, body = await get(http, path)
    assert status == 400
    assert body == {"errorCode": "ERR_CONFIGURATION_STORE_NOT_FOUND", "message": "configuration store nope not found"}


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_subscribe_records_the_app_subscription_and_unsubscribe_removes_it(
    http: GatewayClient, config: ConfigRuntime, prefix: str
) -> None:
    status, body = await get(http, f"{prefix}/configuration/{config.store}/subscribe?key=a&key=b")
    assert status == 200 and list(body) == ["id"]
    subscription_id = body["id"]
    kv = await config.nc.jetstream().key_value(subscriptions_bucket(config.subjects))
    record = json.loads((await kv.get(f"{config.store}.{subscription_id}")).value or b"")
    assert (record["appId"], record["keys"]) == ("web", ["a", "b"])

    assert await get(http, f"{prefix}/configuration/{config.store}/{subscription_id}/unsubscribe") == (
        200,
        {"ok": True},
    )
    with pytest.raises(KeyNotFoundError):
        await kv.get(f"{config.store}.{subscription_id}")
    status, body = await get(http, f"{prefix}/configuration/{config.store}/{subscription_id}/unsubscribe")
    assert status == 500 and body["ok"] is False
    assert body["message"].startswith(f"failed to unsubscribe to configuration request {subscription_id}")


async def test_subscribe_without_keys_subscribes_to_all(http: GatewayClient, config: ConfigRuntime) -> None:
    _, body = await get(http, f"/v1.0/configuration/{config.store}/subscribe")
    kv = await config.nc.jetstream().key_value(subscriptions_bucket(config.subjects))
    assert json.loads((await kv.get(f"{config.store}.{body['id']}")).value or b"")["keys"] == []


async def test_subscribe_on_a_gateway_without_an_app_is_app_channel_nil(nc: Client, config: ConfigRuntime) -> None:
    client, runner = await open_gateway(nc, config.subjects, GatewayConfig(http_port=free_port()))
    try:
        status, body = await get(client, f"/v1.0/configuration/{config.store}/subscribe?key=a")
    finally:
        await client.session.close()
        await runner.cleanup()
    assert status == 500 and body["errorCode"] == "ERR_APP_CHANNEL_NIL"


async def test_no_configuration_service_is_store_not_configured(nc: Client) -> None:
    client, runner = await open_gateway(nc, Subjects(unique("root")), GatewayConfig(http_port=free_port()))
    try:
        status, body = await get(client, "/v1.0/configuration/configstore?key=a")
        unsub_status, unsub_body = await get(client, "/v1.0/configuration/configstore/x/unsubscribe")
    finally:
        await client.session.close()
        await runner.cleanup()
    assert status == 500 and body["errorCode"] == "ERR_CONFIGURATION_STORE_NOT_CONFIGURED"
    assert unsub_status == 500 and unsub_body["errorCode"] == "ERR_CONFIGURATION_STORE_NOT_CONFIGURED"
