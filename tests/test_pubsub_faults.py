"""Faults: a subscriber killed mid-stream, and a nats-server restart under the pubsub service."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from kernel.nats_server import EmbeddedNatsServer
from tests.conftest import NATRIUM, REPO, PubsubRuntime, subprocess_env, wait_until

pytestmark = pytest.mark.slow


async def start_subscriber(url: str, pubsub: PubsubRuntime, out: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *NATRIUM[:1],
        "-m",
        "tests.apps.subscriber",
        url,
        pubsub.subjects.root,
        pubsub.name,
        "orders",
        "billing",
        str(out),
        cwd=REPO,
        env=subprocess_env(NATRIUM_LOG_LEVEL="warning"),
    )


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


async def test_subscriber_killed_mid_stream_loses_nothing(
    nats_server: EmbeddedNatsServer, pubsub: PubsubRuntime, tmp_path: Path
) -> None:
    out = tmp_path / "received.txt"
    published = [(await pubsub.client.publish(pubsub.name, "orders", {"n": i})).id for i in range(300)]
    first = await start_subscriber(nats_server.url, pubsub, out)

    async def some_received() -> bool:
        return len(lines(out)) >= 60

    await wait_until(some_received, timeout=30)
    first.send_signal(signal.SIGKILL)
    await first.wait()
    received_before_kill = len(set(lines(out)))
    assert received_before_kill < len(published)

    second = await start_subscriber(nats_server.url, pubsub, out)
    try:

        async def all_received() -> bool:
            return set(lines(out)) >= set(published)

        await wait_until(all_received, timeout=60, interval=0.2)
    finally:
        second.terminate()
        await second.wait()
    assert set(lines(out)) == set(published)


async def test_publish_and_delivery_survive_a_nats_server_restart(tmp_path: Path) -> None:
    from adapters.sdk import Client
    from kernel.components import Component, ComponentSet
    from kernel.connection import ConnectionSettings, connect
    from kernel.subjects import Subjects
    from services.pubsub.service import PubsubService
    from tests.conftest import FAST_RETRIES, Inbox

    server = await EmbeddedNatsServer(tmp_path / "nats", port=0).start()
    nc = await connect(ConnectionSettings(url=server.url))
    subjects = Subjects("restart")
    component = Component(name="pubsub", type="pubsub.jetstream", metadata=FAST_RETRIES)
    service = PubsubService(nc, subjects=subjects, components=ComponentSet(components=[component]))
    await service.start()
    client = Client(nc, app_id="app", subjects=subjects)
    inbox = Inbox()
    try:
        await client.subscribe("pubsub", "t", inbox)
        await client.publish("pubsub", "t", "before")
        await inbox.wait(1)
        await server.kill()
        await server.start()

        async def published_after() -> bool:
            try:
                await client.publish("pubsub", "t", "after")
                return True
            except Exception:
                return False

        await wait_until(published_after, timeout=30, interval=0.3)
        events = await inbox.wait(2, timeout=30)
        assert [e.data for e in events][:2] == ["before", "after"]
    finally:
        await service.stop()
        await client.close()
        await server.stop()
