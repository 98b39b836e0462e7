"""Single activation and turn-based concurrency, with hosts and callers as real processes.

Hosts are tests/apps/actor_host.py (the bus-native SDK), callers tests/apps/actor_caller.py; the
actors service runs in the test process. Leases are 2 s so a dead host's actors move quickly.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
from nats.aio.client import Client
from nats.errors import NoRespondersError

from adapters.actors.client import ActorClient
from adapters.actors.placement import host_subject
from kernel.errors import NatriumError
from kernel.nats_server import EmbeddedNatsServer
from kernel.subjects import Subjects
from services.actors import ActorsService
from tests.conftest import subprocess_env, wait_until

LEASE_TTL = "2"


class HostProcess:
    """One actor host process; `start()` returns once it hosts its actors."""

    def __init__(self, url: str, subjects: Subjects, host_id: str, **env: str) -> None:
        self.env = subprocess_env(
            NATS_URL=url, NATRIUM_ROOT=subjects.root, NATRIUM_ACTOR_LEASE_TTL=LEASE_TTL, HOST_ID=host_id, **env
        )
        self.host_id = host_id
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> HostProcess:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.apps.actor_host", env=self.env, stdout=asyncio.subprocess.PIPE
        )
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 30)
        assert line.decode().strip() == f"ready {self.host_id}", line
        return self

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                await self.kill()


@pytest.fixture
async def actors(nc: Client, subjects: Subjects) -> AsyncIterator[ActorClient]:
    service = ActorsService(nc, subjects=subjects)
    await service.start()
    client = ActorClient(nc, subjects, timeout=20)
    yield client
    await client.close()
    await service.stop()


@pytest.fixture
async def hosts(nats_server: EmbeddedNatsServer, subjects: Subjects) -> AsyncIterator[list[HostProcess]]:
    started: list[HostProcess] = []
    try:
        started = list(
            await asyncio.gather(
                HostProcess(nats_server.url, subjects, "host-a").start(),
                HostProcess(nats_server.url, subjects, "host-b").start(),
            )
        )
        yield started
    finally:
        await asyncio.gather(*(h.stop() for h in started))


async def incr(client: ActorClient, actor_id: str) -> dict[str, Any]:
    reply = await client.invoke("Counter", actor_id, "incr", b"1", {"Content-Type": "application/json"})
    assert reply.ok, reply
    result: dict[str, Any] = json.loads(reply.body)
    return result


async def test_counter_with_slow_read_modify_write_ends_exact_under_two_caller_processes(
    nats_server: EmbeddedNatsServer, subjects: Subjects, actors: ActorClient, hosts: list[HostProcess]
) -> None:
    env = subprocess_env(NATS_URL=nats_server.url, NATRIUM_ROOT=subjects.root)
    callers = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.apps.actor_caller", "Counter", "shared", "150", "40",
            env=env, stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(2)
    ]  # fmt: skip
    outputs = await asyncio.gather(*(asyncio.wait_for(c.communicate(), 60) for c in callers))
    assert [c.returncode for c in callers] == [0, 0]
    values = [n for out, _ in outputs for n in json.loads(out)]
    # Every increment saw the previous one: one turn at a time, on one activation.
    assert sorted(values) == list(range(1, 301))
    assert await actors.get_state("Counter", "shared", "n") == b"300"


async def test_killed_host_actors_come_back_on_the_other_host_with_their_state(
    actors: ActorClient, hosts: list[HostProcess]
) -> None:
    ids = [f"k{i}" for i in range(16)]
    owners: dict[str, str] = {}
    for _ in range(3):
        for actor_id in ids:
            owners[actor_id] = (await incr(actors, actor_id))["host"]
    assert set(owners.values()) == {"host-a", "host-b"}  # rendezvous spreads them
    victim = next(h for h in hosts if h.host_id == owners["k0"])
    await victim.kill()  # kill -9: no drain, no release, the lease just stops being renewed

    # The server drops a dead client's subscriptions when it reads the closed socket, a moment
    # after the kill. A call sent inside that moment is delivered to the dead host and lost: its
    # caller times out, as any caller whose host dies mid-call does (ambiguous, so not retried).
    # What this test proves is the failover after that, so it starts once the host is gone.
    async def gone() -> bool:
        try:
            await actors.nc.request(host_subject(actors.subjects, victim.host_id), b"", timeout=0.2)
        except NoRespondersError:
            return True
        except Exception:
            return False
        return False

    await wait_until(gone, timeout=10)
    survivor = next(h.host_id for h in hosts if h is not victim)
    results = await asyncio.gather(*(incr(actors, actor_id) for actor_id in ids))
    assert {r["host"] for r in results} == {survivor}
    assert [r["n"] for r in results] == [4] * len(ids)  # state carried over, nothing lost or doubled


async def test_frozen_host_that_lost_its_lease_never_serves_again(
    actors: ActorClient, hosts: list[HostProcess]
) -> None:
    """SIGSTOP a host past its lease (it keeps its NATS connection), SIGCONT it: its actor has moved,
    and the woken host must not finish or serve turns for it. Every acknowledged increment counts once."""
    actor_id = next(f"f{i}" for i in range(100) if _winner(f"f{i}") == "host-a")
    assert (await incr(actors, actor_id))["host"] == "host-a"
    frozen = hosts[0]
    quick = ActorClient(actors.nc, actors.subjects, timeout=1.0)
    acknowledged = 1
    on_b_while_frozen = after_resume = 0
    try:
        frozen.signal(signal.SIGSTOP)
        while after_resume < 20:
            try:
                result = await incr(quick, actor_id)
            except NatriumError:
                continue  # a timeout while the owner is frozen: ambiguous, so not counted
            acknowledged += 1
            assert result["n"] == acknowledged  # strictly serial: no increment lost or doubled
            if on_b_while_frozen < 10:
                assert result["host"] == "host-b"
                on_b_while_frozen += 1
                if on_b_while_frozen == 10:
                    frozen.signal(signal.SIGCONT)  # its lease lapsed long ago
            else:
                after_resume += 1
    finally:
        frozen.signal(signal.SIGCONT)
        await quick.close()
    assert json.loads(await actors.get_state("Counter", actor_id, "n") or b"0") == acknowledged


def _winner(actor_id: str) -> str:
    from adapters.actors.placement import rendezvous

    return rendezvous("Counter", actor_id, ["host-a", "host-b"])
