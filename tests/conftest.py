"""Fixtures: a real nats-server per test session, per-test subject roots, in-process runtime pieces.

Tests share one server and isolate themselves by subject root and bucket name; only tests that
kill or restart a server start their own.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from nats.aio.client import Client

from adapters.gateway.app import build_app
from adapters.gateway.context import Gateway, GatewayConfig
from kernel.client import BusClient
from kernel.codec import Encoding
from kernel.components import Component, ComponentSet
from kernel.connection import ConnectionSettings, connect
from kernel.nats_server import EmbeddedNatsServer
from kernel.subjects import Subjects
from services.state import StateService

REPO = Path(__file__).resolve().parent.parent
NATRIUM = [sys.executable, "-m", "adapters.cli.main"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def unique(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
async def nats_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EmbeddedNatsServer]:
    server = await EmbeddedNatsServer(tmp_path_factory.mktemp("nats"), port=0).start()
    yield server
    await server.stop()


@pytest.fixture(scope="session")
async def nc(nats_server: EmbeddedNatsServer) -> AsyncIterator[Client]:
    client = await connect(ConnectionSettings(url=nats_server.url, name="tests"))
    yield client
    await client.close()


@pytest.fixture
def subjects() -> Subjects:
    return Subjects(unique("root"))


@pytest.fixture
def store_name() -> str:
    return unique("store-")


class Runtime:
    """A state service on its own subject root, with msgpack and JSON bus clients."""

    def __init__(self, nc: Client, subjects: Subjects, service: StateService, store: str) -> None:
        self.nc = nc
        self.subjects = subjects
        self.service = service
        self.store = store
        self.bus = BusClient(nc, timeout=5)
        self.bus_json = BusClient(nc, encoding=Encoding.JSON, timeout=5)

    def subject(self, operation: str, store: str | None = None) -> str:
        return self.subjects.block("state", store or self.store, operation)

    async def call(
        self, operation: str, body: dict[str, Any], *, json_body: bool = False, store: str | None = None
    ) -> Any:
        client = self.bus_json if json_body else self.bus
        return await client.request(self.subject(operation, store), body)


async def start_runtime(nc: Client, subjects: Subjects, components: list[Component]) -> StateService:
    service = StateService(nc, subjects=subjects, components=ComponentSet(components=components))
    await service.start()
    return service


@pytest.fixture
async def runtime(nc: Client, subjects: Subjects, store_name: str) -> AsyncIterator[Runtime]:
    component = Component(name=store_name, type="state.nats-kv", metadata={"bucket": store_name})
    service = await start_runtime(nc, subjects, [component])
    yield Runtime(nc, subjects, service, store_name)
    await service.stop()
    await nc.jetstream().delete_stream(f"KV_{store_name}")


class GatewayClient:
    """An in-process gateway on a free port and an HTTP session to it."""

    def __init__(self, session: aiohttp.ClientSession, base: str, gateway: Gateway) -> None:
        self.session = session
        self.base = base
        self.gateway = gateway

    def url(self, path: str) -> str:
        return self.base + path


async def open_gateway(nc: Client, subjects: Subjects, config: GatewayConfig) -> tuple[GatewayClient, Any]:
    gateway = Gateway(nc, config, subjects)
    from aiohttp import web

    runner = web.AppRunner(build_app(gateway), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", config.http_port).start()
    session = aiohttp.ClientSession()
    return GatewayClient(session, f"http://127.0.0.1:{config.http_port}", gateway), runner


@pytest.fixture
async def http(nc: Client, runtime: Runtime) -> AsyncIterator[GatewayClient]:
    client, runner = await open_gateway(nc, runtime.subjects, GatewayConfig(http_port=free_port()))
    yield client
    await client.session.close()
    await runner.cleanup()


def subprocess_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NATS_", "NATRIUM_", "DAPR_"))}
    env.update(extra)
    env["PYTHONPATH"] = str(REPO)
    return env


async def wait_until(predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> None:
    """Poll an async predicate until it is true (tests never sleep a fixed time for readiness)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        if await predicate():
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


class PubsubRuntime:
    """A pubsub service on its own subject root, with an SDK client for that root."""

    def __init__(self, nc: Client, subjects: Subjects, service: Any, name: str) -> None:
        from adapters.sdk import Client as SdkClient

        self.nc = nc
        self.subjects = subjects
        self.service = service
        self.name = name
        self.client = SdkClient(nc, app_id="publisher", subjects=subjects)
        self.clients = [self.client]

    def sdk(self, app_id: str) -> Any:
        """An SDK client for `app_id`; its subscriptions stop with the fixture."""
        from adapters.sdk import Client as SdkClient

        client = SdkClient(self.nc, app_id=app_id, subjects=self.subjects)
        self.clients.append(client)
        return client


FAST_RETRIES = {"backOff": "50ms", "maxDeliver": "3", "ackWait": "2s"}


@pytest.fixture
async def pubsub(nc: Client, subjects: Subjects) -> AsyncIterator[PubsubRuntime]:
    from services.pubsub.service import PubsubService

    name = unique("ps-")
    component = Component(name=name, type="pubsub.jetstream", metadata=FAST_RETRIES)
    service = PubsubService(nc, subjects=subjects, components=ComponentSet(components=[component]))
    await service.start()
    runtime = PubsubRuntime(nc, subjects, service, name)
    yield runtime
    for client in runtime.clients:
        for sub in client._subscriptions:
            await sub.stop()
    await service.stop()
    await nc.jetstream().delete_stream(service.stores[name].name)


class Inbox:
    """Collects delivered events; `wait(n)` returns once n have arrived."""

    def __init__(self, answers: list[str] | None = None) -> None:
        self.events: list[Any] = []
        self.answers = answers or []
        self._changed = asyncio.Event()

    async def __call__(self, event: Any) -> Any:
        self.events.append(event)
        self._changed.set()
        return self.answers.pop(0) if self.answers else None

    async def wait(self, count: int, timeout: float = 10.0) -> list[Any]:
        async def enough() -> bool:
            return len(self.events) >= count

        await wait_until(enough, timeout=timeout, interval=0.02)
        return self.events
