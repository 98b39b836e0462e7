"""Two replicas of `natrium service state`: both serve, and killing one loses no retried request."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import pytest
from nats.aio.client import Client

from kernel.client import BusClient
from kernel.errors import NatriumError
from kernel.nats_server import EmbeddedNatsServer
from kernel.subjects import Subjects
from tests.conftest import NATRIUM, REPO, subprocess_env, unique, wait_until

pytestmark = pytest.mark.slow


async def start_replica(url: str, root: str, components: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *NATRIUM,
        "service",
        "state",
        "--nats-url",
        url,
        "--root",
        root,
        "--components",
        str(components),
        cwd=REPO,
        env=subprocess_env(NATRIUM_LOG_LEVEL="warning"),
    )


async def replica_stats(nc: Client) -> dict[str, int]:
    """service id -> requests served, from every replica answering `$SRV.STATS`."""
    from kernel.discovery import discover

    stats = {}
    for reply in await discover(nc, "STATS", "natrium-state", window=0.3):
        stats[reply["id"]] = sum(e["num_requests"] for e in reply["endpoints"])
    return stats


async def save_with_retries(client: BusClient, subject: str, key: str, value: int) -> int:
    """Save, retrying what the bus could not confirm; returns how many retries it took."""
    for attempt in range(20):
        try:
            await client.request(subject, {"items": [{"key": key, "value": value}]})
            return attempt
        except NatriumError as exc:
            if not exc.retryable:
                raise
            await asyncio.sleep(0.05)
    raise AssertionError(f"{key} never saved")


async def test_killing_a_replica_under_load_loses_no_retried_request(
    nats_server: EmbeddedNatsServer, nc: Client, tmp_path: Path
) -> None:
    root, store = unique("root"), unique("store-")
    (tmp_path / "store.yaml").write_text(
        f"apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {store}\n"
        f"spec:\n  type: state.nats-kv\n  version: v1\n  metadata:\n  - name: bucket\n    value: {store}\n"
    )
    replicas = [await start_replica(nats_server.url, root, tmp_path) for _ in range(2)]
    subjects = Subjects(root)
    try:

        async def both_up() -> bool:
            return len(await replica_stats(nc)) == 2

        await wait_until(both_up, timeout=30, interval=0.2)
        client = BusClient(nc, timeout=1.0)
        save = subjects.block("state", store, "save")
        total, workers = 600, 8
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(total):
            queue.put_nowait(i)
        retries = 0
        killed = asyncio.Event()

        async def worker() -> None:
            nonlocal retries
            while not queue.empty():
                i = queue.get_nowait()
                retries += await save_with_retries(client, save, f"k{i}", i)
                if i == total // 3 and not killed.is_set():
                    killed.set()
                    served = await replica_stats(nc)
                    assert len(served) == 2 and all(n > 0 for n in served.values()), served
                    replicas[0].send_signal(signal.SIGKILL)

        await asyncio.gather(*(worker() for _ in range(workers)))
        assert killed.is_set()
        assert await replicas[0].wait() == -signal.SIGKILL

        get = subjects.block("state", store, "bulkget")
        reply = await BusClient(nc, timeout=10).request(get, {"keys": [f"k{i}" for i in range(total)]})
        values = [int(item["data"]) for item in reply["items"]]
        assert values == list(range(total))
        assert len(await replica_stats(nc)) == 1
        print(f"retries after kill: {retries}")
    finally:
        for proc in replicas:
            if proc.returncode is None:
                proc.terminate()
                await proc.wait()
        await nc.jetstream().delete_stream(f"KV_{store}")


async def test_service_survives_a_nats_server_restart(tmp_path: Path) -> None:
    """Kill -9 the server; on restart with the same store the service reconnects and the data is there."""
    server = await EmbeddedNatsServer(tmp_path / "nats", port=0).start()
    root = unique("root")
    (tmp_path / "c").mkdir()
    replica = await start_replica(server.url, root, tmp_path / "c")
    from kernel.connection import ConnectionSettings, connect

    nc = await connect(ConnectionSettings(url=server.url))
    try:
        client = BusClient(nc, timeout=1.0)
        save = Subjects(root).block("state", "statestore", "save")
        get = Subjects(root).block("state", "statestore", "get")

        async def answering() -> bool:
            try:
                await client.request(get, {"key": "probe"})
                return True
            except NatriumError:
                return False

        await wait_until(answering, timeout=30, interval=0.2)
        await client.request(save, {"items": [{"key": "before", "value": 1}]})
        await server.kill()
        await server.start()
        await wait_until(answering, timeout=30, interval=0.2)
        reply = await client.request(get, {"key": "before"})
        assert reply["data"] == b"1"
        await client.request(save, {"items": [{"key": "after", "value": 2}]})
        assert (await client.request(get, {"key": "after"}))["data"] == b"2"
        info = json.loads((await nc.request("$SRV.PING.natrium-state", b"", timeout=2)).data)
        assert info["name"] == "natrium-state"
    finally:
        replica.terminate()
        await replica.wait()
        await nc.close()
        await server.stop()
