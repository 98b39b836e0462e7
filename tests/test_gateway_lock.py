"""Dapr's lock HTTP API (`/v1.0-alpha1/lock|unlock/{store}`) through the gateway."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from nats.aio.client import Client

from adapters.gateway.context import GatewayConfig
from kernel.components import Component
from kernel.jetstream import component_bucket
from kernel.subjects import Subjects
from tests.conftest import GatewayClient, free_port, open_gateway, unique
from tests.test_lock import start_locks


class LockHttp:
    def __init__(self, client: GatewayClient, store: str) -> None:
        self.client = client
        self.store = store

    async def post(self, operation: str, body: Any, store: str | None = None) -> tuple[int, Any]:
        url = self.client.url(f"/v1.0-alpha1/{operation}/{store or self.store}")
        kwargs: dict[str, Any] = {"data": body} if isinstance(body, str | bytes) else {"json": body}
        async with self.client.session.post(url, **kwargs) as resp:
            assert resp.content_type == "application/json"
            return resp.status, await resp.json()

    async def lock(self, resource: str, owner: str, expiry: int = 30) -> tuple[int, Any]:
        return await self.post("lock", {"resourceId": resource, "lockOwner": owner, "expiryInSeconds": expiry})

    async def unlock(self, resource: str, owner: str) -> tuple[int, Any]:
        return await self.post("unlock", {"resourceId": resource, "lockOwner": owner})


@pytest.fixture
async def http(nc: Client, subjects: Subjects) -> AsyncIterator[LockHttp]:
    component = Component(name=unique("ls-"), type="lock.nats-kv")
    service = await start_locks(nc, subjects, [component])
    client, runner = await open_gateway(nc, subjects, GatewayConfig(http_port=free_port()))
    yield LockHttp(client, component.name)
    await client.session.close()
    await runner.cleanup()
    await service.stop()
    await nc.jetstream().delete_stream(f"KV_{component_bucket(component, 'lock')}")


async def test_lock_and_unlock_over_http(http: LockHttp) -> None:
    assert await http.lock("order-1", "a") == (200, {"success": True})
    assert await http.lock("order-1", "b") == (200, {"success": False})  # held: 200, not an error
    assert await http.unlock("order-1", "b") == (200, {"status": 2})
    assert await http.unlock("order-1", "a") == (200, {"status": 0})
    assert await http.unlock("order-1", "a") == (200, {"status": 1})
    assert await http.lock("order-1", "b") == (200, {"success": True})


async def test_unlock_status_is_a_json_number(http: LockHttp) -> None:
    await http.lock("r", "a")
    url = http.client.url(f"/v1.0-alpha1/unlock/{http.store}")
    async with http.client.session.post(url, json={"resourceId": "r", "lockOwner": "a"}) as resp:
        assert await resp.text() == '{"status": 0}'


async def test_a_store_name_with_dots_reaches_its_service(nc: Client, subjects: Subjects) -> None:
    component = Component(name=unique("locks.v1."), type="lock.nats-kv")
    service = await start_locks(nc, subjects, [component])
    client, runner = await open_gateway(nc, subjects, GatewayConfig(http_port=free_port()))
    try:
        assert await LockHttp(client, component.name).lock("r", "a") == (200, {"success": True})
    finally:
        await client.session.close()
        await runner.cleanup()
        await service.stop()
        await nc.jetstream().delete_stream(f"KV_{component_bucket(component, 'lock')}")


@pytest.mark.parametrize(
    ("operation", "body"),
    [
        ("lock", {"resourceId": "", "lockOwner": "a", "expiryInSeconds": 10}),
        ("lock", {"resourceId": "r", "lockOwner": "", "expiryInSeconds": 10}),
        ("lock", {"resourceId": "r", "lockOwner": "a", "expiryInSeconds": 0}),
        ("lock", {"resourceId": "r", "lockOwner": "a", "expiryInSeconds": -1}),
        ("lock", {"resourceId": "r", "lockOwner": "a"}),
        ("lock", {"resourceId": "r", "lockOwner": "a", "expiryInSeconds": "ten"}),
        ("unlock", {"lockOwner": "a"}),
        ("unlock", {"resourceId": "r"}),
        ("lock", "not json"),
        ("lock", b""),
        ("lock", ["resourceId"]),
        ("unlock", "[1]"),
    ],
)
async def test_bad_requests_are_400_malformed(http: LockHttp, operation: str, body: Any) -> None:
    status, reply = await http.post(operation, body)
    assert status == 400
    assert reply["errorCode"] == "ERR_MALFORMED_REQUEST"


async def test_unknown_store_is_400_lock_store_not_found(http: LockHttp) -> None:
    status, reply = await http.post("lock", {"resourceId": "r", "lockOwner": "a", "expiryInSeconds": 5}, store="nope")
    assert (status, reply["errorCode"]) == (400, "ERR_LOCK_STORE_NOT_FOUND")
    status, reply = await http.post("unlock", {"resourceId": "r", "lockOwner": "a"}, store="nope")
    assert (status, reply["errorCode"]) == (400, "ERR_LOCK_STORE_NOT_FOUND")


async def test_separator_in_resource_id_is_500_like_daprd(http: LockHttp) -> None:
    status, reply = await http.lock("a||b", "o")
    assert (status, reply["errorCode"]) == (500, "ERR_TRY_LOCK")
    status, reply = await http.unlock("a||b", "o")
    assert (status, reply["errorCode"]) == (500, "ERR_UNLOCK")


async def test_no_lock_service_is_500_lock_store_not_configured(nc: Client) -> None:
    client, runner = await open_gateway(nc, Subjects(unique("empty")), GatewayConfig(http_port=free_port()))
    try:
        http = LockHttp(client, "lockstore")
        status, reply = await http.lock("r", "a")
        assert (status, reply["errorCode"]) == (500, "ERR_LOCK_STORE_NOT_CONFIGURED")
        status, reply = await http.unlock("r", "a")
        assert (status, reply["errorCode"]) == (500, "ERR_LOCK_STORE_NOT_CONFIGURED")
    finally:
        await client.session.close()
        await runner.cleanup()


async def test_lock_routes_take_post_only(http: LockHttp) -> None:
    """Another verb is no lock route: as in daprd it falls through to service invocation."""
    url = http.client.url(f"/v1.0-alpha1/lock/{http.store}")
    async with http.client.session.put(url, json={"resourceId": "r", "lockOwner": "a", "expiryInSeconds": 5}) as resp:
        assert resp.status == 404
        assert (await resp.json())["errorCode"] == "ERR_DIRECT_INVOKE"
    assert await http.lock("r", "b") == (200, {"success": True})  # the PUT locked nothing
