"""Placement on KV: leases, compare-and-set claims and takeovers, release by revision, rendezvous."""

from __future__ import annotations

import asyncio

import pytest
from nats.aio.client import Client

from adapters.actors.placement import HostDirectory, HostLease, Placement, new_incarnation, rendezvous
from kernel.jetstream import JetStreamRejected
from kernel.subjects import Subjects
from tests.conftest import wait_until

TTL = 2.0


def lease(host_id: str, inc: str | None = None) -> HostLease:
    return HostLease(host_id, inc or new_incarnation(), ("T",), f"x.{host_id}")


async def join(placement: Placement, host: HostLease) -> int:
    return await placement.write_lease(host, TTL, None)


async def test_concurrent_claims_from_many_hosts_make_exactly_one_owner(nc: Client, subjects: Subjects) -> None:
    placement = Placement(nc, subjects)
    await placement.open()
    hosts = [lease(f"h{i}") for i in range(5)]
    for host in hosts:
        await join(placement, host)
    claims = await asyncio.gather(*(placement.claim("T", "one", hosts[i % 5]) for i in range(25)))
    owners = {hosts[i % 5].host_id for i, c in enumerate(claims) if c.owned}
    assert len(owners) == 1
    (owner,) = owners
    assert all(c.owner == owner for c in claims if not c.owned)
    assert await placement.owner("T", "one") == (owner, next(h.inc for h in hosts if h.host_id == owner))


async def test_a_record_is_taken_over_only_once_its_lease_is_gone(nc: Client, subjects: Subjects) -> None:
    placement = Placement(nc, subjects)
    await placement.open()
    old, other = lease("old"), lease("other")
    old_seq = await join(placement, old)
    await join(placement, other)
    first = await placement.claim("T", "a", old)
    assert first.owned
    assert (await placement.claim("T", "a", other)).owner == "old"  # live lease: no takeover
    await placement.delete_lease("old", old_seq)  # as if it lapsed
    taken = await placement.claim("T", "a", other)
    assert taken.owned
    # The old host's next incarnation does not own its old records: it finds the new owner.
    reborn = lease("old")
    await join(placement, reborn)
    assert (await placement.claim("T", "a", reborn)).owner == "other"
    # A release by a stale revision deletes nothing.
    await placement.release(first.sequence)
    assert await placement.owner("T", "a") == ("other", other.inc)
    await placement.release(taken.sequence)
    assert await placement.owner("T", "a") is None


async def test_a_second_process_cannot_use_a_live_host_id(nc: Client, subjects: Subjects) -> None:
    placement = Placement(nc, subjects)
    await placement.open()
    await join(placement, lease("dup"))
    with pytest.raises(JetStreamRejected, match="in use"):
        await join(placement, lease("dup"))


async def test_lease_lapses_by_itself_at_the_server(nc: Client) -> None:
    placement = Placement(nc, Subjects("lapse" + new_incarnation()))
    await placement.open()
    host = lease("h")
    await placement.write_lease(host, 1, None)
    assert await placement.lease_alive("h", host.inc)
    deadline = asyncio.get_running_loop().time() + 5
    while await placement.lease_alive("h", host.inc):
        assert asyncio.get_running_loop().time() < deadline, "the TTL did not end the lease"
        await asyncio.sleep(0.1)


def test_rendezvous_moves_only_the_new_hosts_share() -> None:
    ids = [f"id{i}" for i in range(2000)]
    before = {i: rendezvous("T", i, ["a", "b", "c"]) for i in ids}
    after = {i: rendezvous("T", i, ["a", "b", "c", "d"]) for i in ids}
    moved = [i for i in ids if before[i] != after[i]]
    assert all(after[i] == "d" for i in moved)
    assert 350 < len(moved) < 650  # about a quarter


async def test_watchers_see_a_host_join_leave_and_lapse(nc: Client, subjects: Subjects) -> None:
    placement = Placement(nc, subjects)
    directory = HostDirectory(nc, placement)
    await directory.start()
    try:
        stays, leaves, lapses = lease("stays"), lease("leaves"), lease("lapses")
        await placement.write_lease(stays, 30, None)
        leaving = await join(placement, leaves)
        await placement.write_lease(lapses, 1, None)

        async def listed(expected: list[str]) -> bool:
            return directory.hosts_for("T") == expected

        await wait_until(lambda: listed(["lapses", "leaves", "stays"]))
        await placement.delete_lease("leaves", leaving)  # a graceful stop
        await wait_until(lambda: listed(["lapses", "stays"]))
        await wait_until(lambda: listed(["stays"]), timeout=5)  # the 1 s TTL ran out
    finally:
        await directory.stop()
