"""Resiliency targets beyond apps: a component's outbound policy and an actor type's policy,
applied by the gateway to the calls it makes for them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from nats.aio.client import Client

from adapters import resiliency
from adapters.gateway.app import build_app
from adapters.gateway.context import Gateway, GatewayConfig
from adapters.sdk import Actor, App
from adapters.sdk import Client as SdkClient
from kernel.components import Component
from kernel.errors import Codes, NatriumError
from kernel.subjects import Subjects
from services.actors import ActorsService
from tests.conftest import free_port, start_runtime, unique


def policy_resource(component: str, actor_type: str) -> dict[str, Any]:
    return {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Resiliency",
        "metadata": {"name": "targets"},
        "spec": {
            "policies": {
                "timeouts": {"short": "2s"},
                "retries": {"patient": {"policy": "constant", "duration": "100ms", "maxRetries": 40}},
            },
            "targets": {
                "components": {component: {"outbound": {"timeout": "short", "retry": "patient"}}},
                "actors": {actor_type: {"timeout": "short", "retry": "patient"}},
            },
        },
    }


@pytest.fixture
async def gateway(nc: Client, subjects: Subjects) -> AsyncIterator[tuple[str, str, str]]:
    store, actor_type = unique("store-"), "Moody"
    policies = resiliency.from_resources([policy_resource(store, actor_type)])
    gw = Gateway(nc, GatewayConfig(http_port=free_port(), request_timeout=1), subjects, resiliency=policies)
    runner = web.AppRunner(build_app(gw), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", gw.config.http_port).start()
    yield f"http://127.0.0.1:{gw.config.http_port}", store, actor_type
    await runner.cleanup()


async def test_a_component_outbound_retry_waits_out_a_store_that_is_not_up_yet(
    nc: Client, subjects: Subjects, gateway: tuple[str, str, str]
) -> None:
    base, store, _ = gateway
    async with aiohttp.ClientSession() as session:
        save = asyncio.ensure_future(session.post(f"{base}/v1.0/state/{store}", json=[{"key": "k", "value": 1}]))
        await asyncio.sleep(1.0)  # the gateway retries while no state service answers
        service = await start_runtime(nc, subjects, [Component(name=store, type="state.nats-kv")])
        try:
            response = await save
            assert response.status == 204, await response.text()
            async with session.get(f"{base}/v1.0/state/{store}/k") as got:
                assert (got.status, await got.json()) == (200, 1)
            # An answer about the request itself is not retried: a wrong ETag is a 409 at once.
            stale = [{"key": "k", "value": 2, "etag": "999"}]
            async with session.post(f"{base}/v1.0/state/{store}", json=stale) as conflict:
                assert conflict.status == 409
        finally:
            await service.stop()
            await nc.jetstream().delete_stream(f"KV_state-{store}")


def test_only_errors_that_may_pass_are_retried() -> None:
    may_pass = resiliency.retriable_block_error
    assert may_pass(NatriumError(Codes.NO_RESPONDERS, "nobody", retryable=True))
    assert may_pass(NatriumError(Codes.STATE_SAVE, "the store failed", status=500))
    assert not may_pass(NatriumError(Codes.MALFORMED_REQUEST, "bad", status=400))
    assert not may_pass(NatriumError(Codes.STATE_SAVE, "possible etag mismatch", status=409))


class Moody(Actor):
    """Fails its first two calls with an app error, then answers."""

    calls = 0

    async def mood(self) -> str:
        Moody.calls += 1
        if Moody.calls <= 2:
            raise RuntimeError("not yet")
        return "fine"


async def test_an_actor_type_retry_policy_repeats_app_errors(
    nc: Client, subjects: Subjects, gateway: tuple[str, str, str]
) -> None:
    base, _, actor_type = gateway
    service = ActorsService(nc, subjects=subjects)
    await service.start()
    app = App("moody")
    app.register_actor(Moody)
    await app.start(client=SdkClient(nc, subjects=subjects))
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{base}/v1.0/actors/{actor_type}/m1/method/mood") as r:
                assert (r.status, await r.json()) == (200, "fine")
        assert Moody.calls == 3
    finally:
        await app.stop()
        if app.client is not None:
            await app.client.actors.close()
        await service.stop()
