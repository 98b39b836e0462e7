"""A reminder outlives a full restart: nats-server (same store), the actors service and the host."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from adapters.actors.client import ActorClient
from kernel.connection import ConnectionSettings, connect
from kernel.nats_server import EmbeddedNatsServer
from kernel.subjects import Subjects
from schemas.actors import ReminderRequest
from services.actors import ActorsService
from tests.conftest import unique, wait_until
from tests.test_actors_guarantees import HostProcess


async def test_reminder_set_before_a_full_restart_fires_after_it(tmp_path: Path) -> None:
    subjects = Subjects(unique("root"))
    server = await EmbeddedNatsServer(tmp_path / "nats", port=0).start()
    nc = await connect(ConnectionSettings(url=server.url, name="restart-test"))
    service = ActorsService(nc, subjects=subjects)
    await service.start()
    host = await HostProcess(server.url, subjects, "host-1").start()
    client = ActorClient(nc, subjects, timeout=20)
    try:
        await client.invoke("Counter", "r", "incr", b"1")  # active on the host before the restart
        request = ReminderRequest(dueTime="3s", period="R2/PT1S", data={"set": "before"})
        await client.create_reminder("Counter", "r", "survivor", request)
    finally:
        await client.close()
        await host.stop()
        await service.stop()
        await nc.close()
        await server.stop()

    server = await EmbeddedNatsServer(tmp_path / "nats", port=0).start()
    nc = await connect(ConnectionSettings(url=server.url, name="restart-test-2"))
    service = ActorsService(nc, subjects=subjects)
    await service.start()
    host = await HostProcess(server.url, subjects, "host-2").start()
    client = ActorClient(nc, subjects, timeout=20)
    try:

        async def fired_twice() -> bool:
            raw = await client.get_state("Counter", "r", "fired")
            return raw is not None and len(json.loads(raw)) >= 2

        await wait_until(fired_twice, timeout=20)
        await asyncio.sleep(1.5)  # a period more: a third fire would show now
        fired = json.loads(await client.get_state("Counter", "r", "fired") or b"[]")
        assert fired == [{"name": "survivor", "data": {"set": "before"}, "host": "host-2"}] * 2
        assert await client.get_state("Counter", "r", "n") == b"1"
    finally:
        await client.close()
        await host.stop()
        await service.stop()
        await nc.close()
        await server.stop()
