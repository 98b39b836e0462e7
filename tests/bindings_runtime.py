"""Helpers for the bindings tests: the service in-process, and the external servers they need.

A test that needs PostgreSQL, Redis, Mosquitto or RabbitMQ skips when the server is not
reachable on its standard port, and fails instead under `CI=true`: CI must not go green without them.
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from nats.aio.client import Client

from kernel.client import BusClient
from kernel.components import Component, ComponentSet
from kernel.subjects import Subjects
from services.bindings import BindingsService

POSTGRES = ("127.0.0.1", 5432)
REDIS = ("127.0.0.1", 6379)
RABBITMQ = ("127.0.0.1", 5672)
MOSQUITTO = ("127.0.0.1", 1883)


def require(server: tuple[str, int], what: str) -> None:
    """Skip the test when `server` is down; under CI=true fail it instead."""
    try:
        with socket.create_connection(server, timeout=1):
            return
    except OSError as exc:
        message = f"{what} is not reachable at {server[0]}:{server[1]}: {exc}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + " (CI=true: the bindings tests need it)")
    pytest.skip(message)


def binding(name: str, kind: str, **metadata: str) -> Component:
    return Component(name=name, type=f"bindings.{kind}", metadata=metadata)


class Bindings:
    """A running bindings service and a bus client that calls it."""

    def __init__(self, service: BindingsService, subjects: Subjects, bus: BusClient) -> None:
        self.service = service
        self.subjects = subjects
        self.bus = bus

    async def invoke(self, name: str, operation: str, data: bytes = b"", timeout: float = 10.0, **metadata: str) -> Any:
        body = {"operation": operation, "data": data, "metadata": metadata}
        return await self.bus.request(self.subjects.block("bindings", name, "invoke"), body, timeout=timeout)


@asynccontextmanager
async def bindings_service(nc: Client, subjects: Subjects, *components: Component) -> AsyncIterator[Bindings]:
    service = BindingsService(nc, subjects=subjects, components=ComponentSet(components=list(components)))
    await service.start()
    try:
        yield Bindings(service, subjects, BusClient(nc, timeout=10))
    finally:
        await service.stop()
        for b in service.stores.values():
            if b.events is not None:
                try:
                    await nc.jetstream().delete_stream(b.events.name)
                except Exception:
                    pass
