"""`natrium service lock` as a process: a held lock outlives a nats-server crash and restart."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from kernel.client import BusClient
from kernel.connection import ConnectionSettings, connect
from kernel.errors import NatriumError
from kernel.nats_server import EmbeddedNatsServer
from kernel.subjects import Subjects
from tests.conftest import NATRIUM, REPO, subprocess_env, unique, wait_until

pytestmark = pytest.mark.slow


async def start_lock_service(url: str, root: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *NATRIUM,
        "service",
        "lock",
        "--nats-url",
        url,
        "--root",
        root,
        cwd=REPO,
        env=subprocess_env(NATRIUM_LOG_LEVEL="warning"),
    )


async def test_a_held_lock_survives_a_nats_server_restart(tmp_path: Path) -> None:
    """Kill -9 the server and start it on the same store: the lease is still there, still a's."""
    server = await EmbeddedNatsServer(tmp_path / "nats", port=0).start()
    root = unique("root")
    service = await start_lock_service(server.url, root)
    nc = await connect(ConnectionSettings(url=server.url))
    try:
        client = BusClient(nc, timeout=2.0)
        lock = Subjects(root).block("lock", "lockstore", "lock")
        unlock = Subjects(root).block("lock", "lockstore", "unlock")

        async def answering() -> bool:
            try:
                await client.request(unlock, {"resourceId": "probe", "lockOwner": "probe"})
                return True
            except NatriumError:
                return False

        await wait_until(answering, timeout=30, interval=0.2)
        body = {"resourceId": "orders", "lockOwner": "a", "expiryInSeconds": 300}
        assert await client.request(lock, body) == {"success": True}

        await server.kill()
        await server.start()
        await wait_until(answering, timeout=30, interval=0.2)

        assert await client.request(lock, {**body, "lockOwner": "b"}) == {"success": False}
        assert await client.request(unlock, {"resourceId": "orders", "lockOwner": "b"}) == {"status": 2}
        assert await client.request(unlock, {"resourceId": "orders", "lockOwner": "a"}) == {"status": 0}
        assert await client.request(lock, {**body, "lockOwner": "b"}) == {"success": True}
    finally:
        service.terminate()
        await service.wait()
        await nc.close()
        await server.stop()
