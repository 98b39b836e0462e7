"""The distributed lock block over the bus: leases, owners, expiry, key rules and contention."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from nats.aio.client import Client

from kernel.client import BusClient
from kernel.codec import Encoding
from kernel.components import Component, ComponentSet
from kernel.errors import NatriumError
from kernel.jetstream import component_bucket
from kernel.subjects import Subjects
from services.lock import LockService
from tests.conftest import unique, wait_until


class Locks:
    """A lock service on its own subject root and store, with msgpack and JSON bus clients."""

    def __init__(self, nc: Client, subjects: Subjects, service: LockService, store: str) -> None:
        self.nc = nc
        self.subjects = subjects
        self.service = service
        self.store = store
        self.bus = BusClient(nc, timeout=10)
        self.bus_json = BusClient(nc, encoding=Encoding.JSON, timeout=10)

    async def lock(self, resource: str, owner: str, expiry: int = 30, **extra: Any) -> bool:
        body = {"resourceId": resource, "lockOwner": owner, "expiryInSeconds": expiry, **extra}
        reply = await self.bus.request(self.subjects.block("lock", self.store, "lock"), body)
        return bool(reply["success"])

    async def unlock(self, resource: str, owner: str, **extra: Any) -> int:
        body = {"resourceId": resource, "lockOwner": owner, **extra}
        reply = await self.bus.request(self.subjects.block("lock", self.store, "unlock"), body)
        return int(reply["status"])

    async def call(self, operation: str, body: dict[str, Any], store: str | None = None) -> Any:
        return await self.bus.request(self.subjects.block("lock", store or self.store, operation), body)

    async def messages(self) -> int:
        info = await self.nc.jetstream().stream_info(self.service.stores[self.store].stream)
        return int(info.state.messages)


async def start_locks(nc: Client, subjects: Subjects, components: list[Component]) -> LockService:
    service = LockService(nc, subjects=subjects, components=ComponentSet(components=components))
    await service.start()
    return service


@pytest.fixture
async def locks(nc: Client, subjects: Subjects) -> AsyncIterator[Locks]:
    component = Component(name=unique("ls-"), type="lock.nats-kv")
    service = await start_locks(nc, subjects, [component])
    yield Locks(nc, subjects, service, component.name)
    await service.stop()
    await nc.jetstream().delete_stream(f"KV_{component_bucket(component, 'lock')}")


# -- acquire and release ----------------------------------------------------------------------


async def test_lock_then_unlock_round_trip(locks: Locks) -> None:
    assert await locks.lock("order-1", "worker-a") is True
    assert await locks.unlock("order-1", "worker-a") == 0
    assert await locks.lock("order-1", "worker-b") is True


async def test_lock_and_unlock_over_json(locks: Locks) -> None:
    lock = locks.subjects.block("lock", locks.store, "lock")
    unlock = locks.subjects.block("lock", locks.store, "unlock")
    body = {"resourceId": "r", "lockOwner": "o", "expiryInSeconds": 10}
    assert await locks.bus_json.request(lock, body) == {"success": True}
    assert await locks.bus_json.request(lock, body) == {"success": False}
    assert await locks.bus_json.request(unlock, {"resourceId": "r", "lockOwner": "o"}) == {"status": 0}


async def test_a_held_lock_is_refused_to_everyone_including_its_owner(locks: Locks) -> None:
    assert await locks.lock("r", "a") is True
    assert await locks.lock("r", "b") is False
    assert await locks.lock("r", "a") is False


async def test_only_the_owner_can_unlock(locks: Locks) -> None:
    assert await locks.lock("r", "a") is True
    assert await locks.unlock("r", "b") == 2  # LOCK_BELONGS_TO_OTHERS
    assert await locks.lock("r", "b") is False  # still held by a
    assert await locks.unlock("r", "a") == 0


async def test_unlock_of_a_lock_nobody_holds_is_status_1(locks: Locks) -> None:
    assert await locks.unlock("never-locked", "a") == 1
    assert await locks.lock("r", "a") is True
    assert await locks.unlock("r", "a") == 0
    assert await locks.unlock("r", "a") == 1


async def test_a_released_lock_leaves_nothing_in_the_bucket(locks: Locks) -> None:
    for i in range(5):
        assert await locks.lock(f"r{i}", "a") is True
    assert await locks.messages() == 5
    for i in range(5):
        assert await locks.unlock(f"r{i}", "a") == 0
    assert await locks.messages() == 0


@pytest.mark.parametrize("resource", ["a.b.c", "with space", "slash/x", "ünïcödé-鍵", "emoji-🚀", "*", ">", "=3D"])
async def test_any_string_is_a_resource_id(locks: Locks, resource: str) -> None:
    assert await locks.lock(resource, "a") is True
    assert await locks.lock(resource, "b") is False
    assert await locks.unlock(resource, "a") == 0


# -- leases -----------------------------------------------------------------------------------


async def test_an_expired_lease_lets_another_owner_take_the_lock(locks: Locks) -> None:
    assert await locks.lock("r", "a", expiry=1) is True
    assert await locks.lock("r", "b", expiry=30) is False
    started = time.monotonic()

    async def b_gets_it() -> bool:
        return await locks.lock("r", "b", expiry=30)

    await wait_until(b_gets_it, timeout=15, interval=0.05)
    assert time.monotonic() - started < 10
    assert await locks.unlock("r", "a") == 2  # a's lease is over; the lock is b's now
    assert await locks.unlock("r", "b") == 0


async def test_unlock_after_the_lease_ran_out_is_status_1(locks: Locks) -> None:
    assert await locks.lock("r", "a", expiry=1) is True

    async def gone() -> bool:
        return await locks.unlock("r", "a") == 1

    await wait_until(gone, timeout=15, interval=0.1)
    assert await locks.lock("r", "a") is True


async def test_a_lease_ends_when_the_server_removes_it_at_its_ttl(locks: Locks) -> None:
    """The server's clock ends a lease, not this process's: another owner gets the lock once the
    message is gone, never before its TTL."""
    loop = asyncio.get_running_loop()
    taken = loop.time()
    assert await locks.lock("r", "a", expiry=1) is True
    assert await locks.lock("r", "b") is False

    async def b_has_it() -> bool:
        return bool(await locks.lock("r", "b"))

    await wait_until(b_has_it, timeout=5, interval=0.05)
    assert loop.time() - taken >= 0.95
    now = await locks.service.stores[locks.store]._read("r", "ERR_TRY_LOCK")
    assert now is not None and now.owner == "b"


async def test_a_kv_delete_marker_counts_as_free(locks: Locks, nc: Client) -> None:
    """A marker (left by `nats kv del`) is taken over by its revision, like a lease past its end."""
    kv = await nc.jetstream().key_value(component_bucket(Component(name=locks.store, type="lock.nats-kv"), "lock"))
    await kv.put("r", b"someone")
    await kv.delete("r")
    assert await locks.unlock("r", "someone") == 1
    assert await locks.lock("r", "a") is True
    assert await locks.unlock("r", "a") == 0


async def test_leader_reads_see_leases_as_direct_gets_do(locks: Locks) -> None:
    """Replicated buckets read from the stream leader; the same rules hold on that path."""
    locks.service.stores[locks.store].replicas = 3  # the bucket is R1; only the read path changes
    assert await locks.lock("r", "a") is True
    assert await locks.lock("r", "b") is False
    assert await locks.unlock("r", "b") == 2
    assert await locks.unlock("r", "a") == 0
    assert await locks.unlock("r", "a") == 1


# -- keys -------------------------------------------------------------------------------------


async def test_locks_are_per_app_by_default(locks: Locks) -> None:
    assert await locks.lock("r", "o", appId="app-a") is True
    assert await locks.lock("r", "o", appId="app-b") is True
    assert await locks.lock("r", "o") is True  # no app id: the bare resource id
    assert await locks.lock("r", "o", appId="app-a") is False
    assert await locks.unlock("r", "o", appId="app-b") == 0


async def test_key_prefix_none_shares_locks_across_apps(nc: Client, subjects: Subjects) -> None:
    component = Component(name=unique("ls-"), type="lock.nats-kv", metadata={"keyPrefix": "none"})
    service = await start_locks(nc, subjects, [component])
    try:
        locks = Locks(nc, subjects, service, component.name)
        assert await locks.lock("r", "o", appId="app-a") is True
        assert await locks.lock("r", "o", appId="app-b") is False
        assert await locks.unlock("r", "o", appId="app-b") == 0
    finally:
        await service.stop()
        await nc.jetstream().delete_stream(f"KV_{component_bucket(component, 'lock')}")


# -- contention -------------------------------------------------------------------------------


async def test_fifty_contenders_on_two_replicas_never_hold_the_lock_together(nc: Client, subjects: Subjects) -> None:
    component = Component(name=unique("ls-"), type="lock.nats-kv")
    replicas = [await start_locks(nc, subjects, [component]) for _ in range(2)]
    locks = Locks(nc, subjects, replicas[0], component.name)
    intervals: list[tuple[float, float]] = []
    holders = 0
    most_holders = 0
    attempts = 0

    async def contender(owner: str) -> None:
        nonlocal holders, most_holders, attempts
        while True:
            attempts += 1
            if await locks.lock("the-resource", owner, expiry=60):
                break
            await asyncio.sleep(random.uniform(0.001, 0.02))  # back off, as a real client would
        start = time.monotonic()
        holders += 1
        most_holders = max(most_holders, holders)
        await asyncio.sleep(0.002)  # hold it across a few round trips of the others
        holders -= 1
        intervals.append((start, time.monotonic()))
        assert await locks.unlock("the-resource", owner) == 0

    try:
        await asyncio.wait_for(asyncio.gather(*(contender(f"owner-{i}") for i in range(50))), timeout=120)
        served = [r._micro_endpoints["lock"]._num_requests for r in replicas]
    finally:
        for replica in replicas:
            await replica.stop()
        await nc.jetstream().delete_stream(f"KV_{component_bucket(component, 'lock')}")
    assert len(intervals) == 50
    assert most_holders == 1
    intervals.sort()
    for (_, end), (start, _) in zip(intervals, intervals[1:], strict=False):
        assert start >= end, "two owners held the lock at the same time"
    assert attempts > 50  # there was contention to resolve
    assert all(n > 0 for n in served), served  # both replicas took lock requests


# -- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"lockOwner": "o", "expiryInSeconds": 10}, "ResourceId is empty in lock store {store}"),
        ({"resourceId": "", "lockOwner": "o", "expiryInSeconds": 10}, "ResourceId is empty in lock store {store}"),
        ({"resourceId": "r", "expiryInSeconds": 10}, "LockOwner is empty in lock store {store}"),
        ({"resourceId": "r", "lockOwner": "o"}, "ExpiryInSeconds is not positive in lock store {store}"),
        (
            {"resourceId": "r", "lockOwner": "o", "expiryInSeconds": 0},
            "ExpiryInSeconds is not positive in lock store {store}",
        ),
        (
            {"resourceId": "r", "lockOwner": "o", "expiryInSeconds": -5},
            "ExpiryInSeconds is not positive in lock store {store}",
        ),
    ],
)
async def test_bad_lock_requests_get_dapr_messages(locks: Locks, body: dict[str, Any], message: str) -> None:
    with pytest.raises(NatriumError) as caught:
        await locks.call("lock", body)
    assert (caught.value.code, caught.value.status) == ("ERR_MALFORMED_REQUEST", 400)
    assert caught.value.message == message.format(store=locks.store)


@pytest.mark.parametrize(
    "body",
    [
        {"resourceId": "r", "lockOwner": "o", "expiryInSeconds": True},
        {"resourceId": "r", "lockOwner": "o", "expiryInSeconds": 1.5},
        {"resourceId": "r", "lockOwner": "o", "expiryInSeconds": 2**31},
        {"resourceId": 5, "lockOwner": "o", "expiryInSeconds": 10},
        {"resourceId": "r", "lockOwner": ["o"], "expiryInSeconds": 10},
    ],
)
async def test_wrongly_typed_fields_are_malformed(locks: Locks, body: dict[str, Any]) -> None:
    with pytest.raises(NatriumError) as caught:
        await locks.call("lock", body)
    assert (caught.value.code, caught.value.status) == ("ERR_MALFORMED_REQUEST", 400)


async def test_bad_unlock_requests_get_dapr_messages(locks: Locks) -> None:
    with pytest.raises(NatriumError) as caught:
        await locks.call("unlock", {"lockOwner": "o"})
    assert caught.value.message == f"ResourceId is empty in lock store {locks.store}"
    with pytest.raises(NatriumError) as caught:
        await locks.call("unlock", {"resourceId": "r"})
    assert caught.value.message == f"LockOwner is empty in lock store {locks.store}"


async def test_unknown_store_is_lock_store_not_found(locks: Locks) -> None:
    for operation in ("lock", "unlock"):
        with pytest.raises(NatriumError) as caught:
            await locks.call(operation, {"resourceId": "r", "lockOwner": "o", "expiryInSeconds": 5}, store="nope")
        assert (caught.value.code, caught.value.status) == ("ERR_LOCK_STORE_NOT_FOUND", 400)
        assert caught.value.message == "lock store nope not found"


async def test_a_resource_id_with_the_key_separator_fails_as_in_daprd(locks: Locks) -> None:
    with pytest.raises(NatriumError) as caught:
        await locks.lock("a||b", "o")
    assert (caught.value.code, caught.value.status) == ("ERR_TRY_LOCK", 500)
    assert "can't contain '||'" in caught.value.message
    with pytest.raises(NatriumError) as caught:
        await locks.unlock("a||b", "o")
    assert (caught.value.code, caught.value.status) == ("ERR_UNLOCK", 500)


async def test_an_overlong_resource_id_is_malformed(locks: Locks) -> None:
    with pytest.raises(NatriumError) as caught:
        await locks.lock("x" * 2000, "o")
    assert (caught.value.code, caught.value.status) == ("ERR_MALFORMED_REQUEST", 400)


# -- components -------------------------------------------------------------------------------


async def test_unsupported_lock_type_stops_startup(nc: Client, subjects: Subjects) -> None:
    service = LockService(
        nc, subjects=subjects, components=ComponentSet(components=[Component(name="r", type="lock.redis")])
    )
    with pytest.raises(NatriumError) as caught:
        await service.start()
    assert caught.value.code == "ERR_COMPONENT_INVALID"
    assert "lock.redis" in caught.value.message


async def test_ignore_errors_skips_an_unsupported_component(nc: Client, subjects: Subjects) -> None:
    good = Component(name=unique("ls-"), type="lock.jetstream")
    bad = Component(name="r", type="lock.redis", ignore_errors=True)
    service = await start_locks(nc, subjects, [good, bad])
    try:
        assert sorted(service.stores) == [good.name]
        assert await Locks(nc, subjects, service, good.name).lock("r", "o") is True
    finally:
        await service.stop()
        await nc.jetstream().delete_stream(f"KV_{component_bucket(good, 'lock')}")


async def test_key_prefix_with_the_separator_stops_startup(nc: Client, subjects: Subjects) -> None:
    component = Component(name=unique("ls-"), type="lock.nats-kv", metadata={"keyPrefix": "a||b"})
    service = LockService(nc, subjects=subjects, components=ComponentSet(components=[component]))
    with pytest.raises(NatriumError) as caught:
        await service.start()
    assert caught.value.code == "ERR_COMPONENT_INVALID"


async def test_default_store_is_lockstore_in_bucket_lock_lockstore(nc: Client, subjects: Subjects) -> None:
    service = LockService(nc, subjects=subjects)
    assert [c.name for c in service.block_components()] == ["lockstore"]
    assert component_bucket(service.block_components()[0], "lock") == "lock-lockstore"
