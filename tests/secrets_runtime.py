"""A secrets service in-process on its own subject root, with sealed-store components on unique buckets."""

from __future__ import annotations

import base64
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from nats.aio.client import Client
from nats.js.errors import NotFoundError

from kernel.client import BusClient
from kernel.components import Component, ComponentSet
from kernel.jetstream import component_bucket
from kernel.subjects import Subjects
from services.secrets import SecretsService
from services.secrets.store import SEALED_TYPE, SealedStore
from tests.conftest import unique


def write_key(folder: Path, name: str = "secrets.key") -> Path:
    """A fresh random 32-byte key in base64, mode 0600."""
    path = folder / name
    path.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    path.chmod(0o600)
    return path


def sealed_component(key_file: Path, name: str | None = None, **metadata: str) -> Component:
    name = name or unique("vault-")
    return Component(name=name, type=SEALED_TYPE, metadata={"keyFile": str(key_file), **metadata})


class SecretsRuntime:
    def __init__(self, nc: Client, subjects: Subjects, service: SecretsService) -> None:
        self.nc = nc
        self.subjects = subjects
        self.service = service
        self.bus = BusClient(nc, timeout=10)

    async def call(self, store: str, operation: str, body: dict[str, Any]) -> Any:
        return await self.bus.request(self.subjects.block("secrets", store, operation), body)

    def bucket_stream(self, store: str) -> str:
        sealed = self.service.stores[store]
        assert isinstance(sealed, SealedStore)
        return sealed.stream


async def start_secrets(
    nc: Client, subjects: Subjects, components: list[Component], resources: list[dict[str, Any]] | None = None
) -> SecretsService:
    service = SecretsService(nc, subjects=subjects, components=ComponentSet(components, resources or []))
    await service.start()
    return service


async def drop_buckets(nc: Client, components: list[Component]) -> None:
    js = nc.jetstream()
    for component in components:
        if component.type == SEALED_TYPE:
            with contextlib.suppress(NotFoundError):
                await js.delete_stream(f"OBJ_{component_bucket(component, 'secrets')}")


@contextlib.asynccontextmanager
async def secrets_runtime(
    nc: Client, subjects: Subjects, components: list[Component], resources: list[dict[str, Any]] | None = None
) -> AsyncIterator[SecretsRuntime]:
    service = await start_secrets(nc, subjects, components, resources)
    try:
        yield SecretsRuntime(nc, subjects, service)
    finally:
        await service.stop()
        await drop_buckets(nc, components)


def scopes_config(store: str) -> list[dict[str, object]]:
    return [
        {
            "apiVersion": "dapr.io/v1alpha1",
            "kind": "Configuration",
            "metadata": {"name": "checkout-config"},
            "scopes": ["checkout"],
            "spec": {
                "secrets": {"scopes": [{"storeName": store, "defaultAccess": "deny", "allowedSecrets": ["api-key"]}]}
            },
        },
        {
            "apiVersion": "dapr.io/v1alpha1",
            "kind": "Configuration",
            "metadata": {"name": "everyone"},
            "spec": {"secrets": {"scopes": [{"storeName": store, "deniedSecrets": ["root-pass"]}]}},
        },
    ]
