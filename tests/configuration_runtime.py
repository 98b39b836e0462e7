"""A configuration service on its own subject root and store, and an inbox for subscription updates."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from nats.aio.client import Client

from adapters.sdk import Client as SdkClient
from adapters.sdk.configuration import ConfigurationUpdate
from kernel.client import BusClient
from kernel.codec import Encoding
from kernel.components import Component, ComponentSet
from kernel.subjects import Subjects
from services.configuration import ConfigurationService
from services.configuration.subscriptions import subscriptions_bucket
from tests.conftest import unique, wait_until


class ConfigRuntime:
    """The service, its store name, bus clients (msgpack and JSON) and an SDK client."""

    def __init__(self, nc: Client, subjects: Subjects, service: ConfigurationService, store: str) -> None:
        self.nc = nc
        self.subjects = subjects
        self.service = service
        self.store = store
        self.bus = BusClient(nc, timeout=10)
        self.bus_json = BusClient(nc, encoding=Encoding.JSON, timeout=10)
        self.client = SdkClient(nc, app_id="cfg-app", subjects=subjects)

    def subject(self, operation: str, store: str | None = None) -> str:
        return self.subjects.block("configuration", store or self.store, operation)

    async def call(
        self, operation: str, body: dict[str, Any], *, json_body: bool = False, store: str | None = None
    ) -> Any:
        client = self.bus_json if json_body else self.bus
        return await client.request(self.subject(operation, store), body)

    async def set(self, values: dict[str, str], metadata: dict[str, str] | None = None) -> dict[str, str]:
        return await self.client.set_configuration(self.store, values, metadata)


@contextlib.asynccontextmanager
async def config_runtime(nc: Client, subjects: Subjects, **metadata: str) -> AsyncIterator[ConfigRuntime]:
    name = unique("cfg-")
    component = Component(name=name, type="configuration.nats-kv", metadata=metadata)
    service = ConfigurationService(nc, subjects=subjects, components=ComponentSet(components=[component]))
    await service.start()
    runtime = ConfigRuntime(nc, subjects, service, name)
    try:
        yield runtime
    finally:
        for subscription in list(runtime.client._config_subscriptions.values()):
            await subscription.stop()
        await service.stop()
        js = nc.jetstream()
        await js.delete_stream(service.stores[name].stream)
        await js.delete_stream(f"KV_{subscriptions_bucket(subjects)}")


class Updates:
    """Collects subscription updates; `wait(n)` returns once n have arrived."""

    def __init__(self) -> None:
        self.updates: list[ConfigurationUpdate] = []

    async def __call__(self, update: ConfigurationUpdate) -> None:
        self.updates.append(update)

    async def wait(self, count: int, timeout: float = 20.0) -> list[ConfigurationUpdate]:
        async def enough() -> bool:
            return len(self.updates) >= count

        await wait_until(enough, timeout=timeout, interval=0.02)
        return self.updates
