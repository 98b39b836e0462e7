"""Distributed lock throughput: raw JetStream KV vs the natrium bus vs the HTTP gateway.

Run from the repository root:

    .venv/bin/python bench/lock.py            # ~1 minute
    .venv/bin/python bench/lock.py --quick    # ~20 seconds, fewer ops

One run starts an embedded nats-server, the lock service and the HTTP gateway (each its own
subprocess, as `natrium up` runs them), then measures, all in the same run on the same machine:

1. uncontended lock + unlock pairs (each pair on a resource nobody else touches), at concurrency
   1 and 16, for three paths:

    raw   nats-py `kv.create(key, owner, msg_ttl=30)` then `kv.delete(key)`: two KV ops, with no
          owner check on the delete (the baseline)
    bus   `BusClient.request` to `natrium.lock.lockstore.lock`, then `.unlock` (msgpack)
    http  aiohttp to the gateway: POST /v1.0-alpha1/lock/lockstore, POST /v1.0-alpha1/unlock/lockstore

2. contention: 16 workers fight over 4 resources; each worker tries to lock a resource, and when
   it wins, unlocks it at once and counts an acquisition; a refused attempt is retried at once.
   Acquisitions/s and attempts/s per path. Each path also checks that no two workers ever held one
   resource together (a violation fails the run).

It prints a table with each path's throughput over raw's in the same cell and a one-line JSON
summary. Nothing here asserts on timings; the exit status depends only on errors.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
import nats
from nats.aio.client import Client
from nats.js.api import KeyValueConfig
from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# Shared with the state benchmark next to this file: timing loop, percentiles, processes, environment.
from state import (  # noqa: E402
    environment,
    free_port,
    gateway_ready,
    percentile,
    run_op,
    start_natrium,
    stop_process,
    wait_until,
)

from kernel import eventloop  # noqa: E402
from kernel.client import BusClient  # noqa: E402
from kernel.nats_server import EmbeddedNatsServer  # noqa: E402
from kernel.subjects import Subjects  # noqa: E402

STORE = "lockstore"
RAW_BUCKET = "bench-raw-locks"
PATHS = ("raw", "bus", "http")
LEASE = 30
WORKERS = 16
RESOURCES = 4

Pair = Callable[[str, str], Awaitable[None]]
"""One uncontended lock + unlock of `resource` by `owner`."""
Attempt = Callable[[str, str], Awaitable[bool]]
"""Try to lock `resource` for `owner`; True if won (the caller then releases)."""
Release = Callable[[str, str], Awaitable[None]]


@dataclass(frozen=True)
class Settings:
    pairs: int
    """Lock + unlock pairs per (path, concurrency) cell."""
    acquisitions: int
    """Acquisitions per path in the contention cell."""
    warmup: int
    concurrency: tuple[int, ...]
    mode: str


NORMAL = Settings(pairs=3_000, acquisitions=2_000, warmup=300, concurrency=(1, 16), mode="normal")
QUICK = Settings(pairs=800, acquisitions=500, warmup=100, concurrency=(1, 16), mode="quick")


@dataclass(frozen=True)
class PairResult:
    path: str
    concurrency: int
    pairs: int
    seconds: float
    pairs_per_s: float
    p50_ms: float
    p99_ms: float


@dataclass(frozen=True)
class ContentionResult:
    path: str
    workers: int
    resources: int
    acquisitions: int
    attempts: int
    seconds: float
    acquisitions_per_s: float
    attempts_per_s: float


# -- the three paths ---------------------------------------------------------------------------


class RawLocks:
    """The baseline: what a client does with nats-py's KV alone (no owner check on release)."""

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    async def attempt(self, resource: str, owner: str) -> bool:
        try:
            await self.kv.create(resource, owner.encode(), msg_ttl=LEASE)
            return True
        except KeyWrongLastSequenceError:
            return False

    async def release(self, resource: str, owner: str) -> None:
        await self.kv.delete(resource)


class BusLocks:
    def __init__(self, bus: BusClient, subjects: Subjects) -> None:
        self.bus = bus
        self.lock_subject = subjects.block("lock", STORE, "lock")
        self.unlock_subject = subjects.block("lock", STORE, "unlock")

    async def attempt(self, resource: str, owner: str) -> bool:
        body = {"resourceId": resource, "lockOwner": owner, "expiryInSeconds": LEASE}
        return bool((await self.bus.request(self.lock_subject, body))["success"])

    async def release(self, resource: str, owner: str) -> None:
        reply = await self.bus.request(self.unlock_subject, {"resourceId": resource, "lockOwner": owner})
        if reply["status"] != 0:
            raise RuntimeError(f"bus unlock {resource}: status {reply['status']}")


class HttpLocks:
    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.lock_url = f"{base}/v1.0-alpha1/lock/{STORE}"
        self.unlock_url = f"{base}/v1.0-alpha1/unlock/{STORE}"

    async def attempt(self, resource: str, owner: str) -> bool:
        body = {"resourceId": resource, "lockOwner": owner, "expiryInSeconds": LEASE}
        async with self.session.post(self.lock_url, json=body) as resp:
            reply = await resp.json()
            if resp.status != 200:
                raise RuntimeError(f"http lock {resource}: status {resp.status}, {reply}")
            return bool(reply["success"])

    async def release(self, resource: str, owner: str) -> None:
        async with self.session.post(self.unlock_url, json={"resourceId": resource, "lockOwner": owner}) as resp:
            reply = await resp.json()
            if resp.status != 200 or reply != {"status": 0}:
                raise RuntimeError(f"http unlock {resource}: status {resp.status}, {reply}")


Locks = RawLocks | BusLocks | HttpLocks


def pair_op(locks: Locks, cell: str) -> Callable[[int], Awaitable[None]]:
    """Lock + unlock of a resource used by this one op only (fresh names per cell)."""

    async def op(i: int) -> None:
        resource, owner = f"{cell}-r{i}", f"owner-{i}"
        if not await locks.attempt(resource, owner):
            raise RuntimeError(f"uncontended lock of {resource} refused")
        await locks.release(resource, owner)

    return op


# -- measuring ---------------------------------------------------------------------------------


async def measure_pairs(path: str, locks: Locks, settings: Settings, concurrency: int) -> PairResult:
    seconds, latencies = await run_op(pair_op(locks, f"{path}-c{concurrency}"), settings.pairs, concurrency)
    latencies.sort()
    return PairResult(
        path=path,
        concurrency=concurrency,
        pairs=settings.pairs,
        seconds=round(seconds, 3),
        pairs_per_s=round(settings.pairs / seconds, 1),
        p50_ms=round(statistics.median(latencies) * 1000, 3),
        p99_ms=round(percentile(latencies, 0.99) * 1000, 3),
    )


async def measure_contention(path: str, locks: Locks, acquisitions: int, tag: str) -> ContentionResult:
    """WORKERS workers on RESOURCES resources until `acquisitions` wins; checks mutual exclusion."""
    resources = [f"{tag}-{path}-hot{n}" for n in range(RESOURCES)]
    holders = dict.fromkeys(resources, 0)
    won = attempts = 0

    async def worker(w: int) -> None:
        nonlocal won, attempts
        owner = f"worker-{w}"
        turn = w
        while won < acquisitions:
            resource = resources[turn % RESOURCES]
            turn += 1
            attempts += 1
            if not await locks.attempt(resource, owner):
                continue
            holders[resource] += 1
            won += 1
            # Hold it while the other workers' replies are handled: a second winner would show here.
            await asyncio.sleep(0)
            if holders[resource] > 1:
                raise RuntimeError(f"{path}: two workers held {resource} at once")
            holders[resource] -= 1
            await locks.release(resource, owner)

    started = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(WORKERS)))
    seconds = time.perf_counter() - started
    return ContentionResult(
        path=path,
        workers=WORKERS,
        resources=RESOURCES,
        acquisitions=won,
        attempts=attempts,
        seconds=round(seconds, 3),
        acquisitions_per_s=round(won / seconds, 1),
        attempts_per_s=round(attempts / seconds, 1),
    )


async def warm_up(paths: dict[str, Locks], settings: Settings) -> None:
    for path, locks in paths.items():
        await run_op(pair_op(locks, f"warm-{path}"), settings.warmup, 16)


# -- the system under test -------------------------------------------------------------------


async def lock_service_ready(nc: Client) -> bool:
    await nc.request("$SRV.PING.natrium-lock", b"", timeout=0.5)
    return True


@contextlib.asynccontextmanager
async def natrium_processes(url: str, nc: Client, session: aiohttp.ClientSession, workdir: Path) -> AsyncIterator[str]:
    """The lock service and the gateway as subprocesses; yields the gateway's base URL."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    procs: list[asyncio.subprocess.Process] = []
    try:
        service_log, gateway_log = workdir / "lock.log", workdir / "gateway.log"
        procs.append(await start_natrium(["service", "lock", "--nats-url", url], service_log))
        procs.append(await start_natrium(["gateway", "--nats-url", url, "--http-port", str(port)], gateway_log))
        await wait_until(lambda: lock_service_ready(nc), procs[0], "lock service", service_log)
        await wait_until(lambda: gateway_ready(session, base), procs[1], "gateway", gateway_log)
        yield base
    finally:
        await asyncio.gather(*(stop_process(p) for p in procs))


# -- output ------------------------------------------------------------------------------------


def print_pair(result: PairResult, earlier: list[PairResult]) -> None:
    raw = next((r for r in earlier if r.path == "raw" and r.concurrency == result.concurrency), None)
    ratio = f"{result.pairs_per_s / raw.pairs_per_s:6.2f}" if raw and result.path != "raw" else f"{'':6}"
    print(
        f"{result.concurrency:>4}  {result.path:<5} {result.pairs:>6} {result.pairs_per_s:>9.0f} "
        f"{result.p50_ms:>8.2f} {result.p99_ms:>8.2f} {ratio}",
        flush=True,
    )


def print_contention(result: ContentionResult, earlier: list[ContentionResult]) -> None:
    raw = next((r for r in earlier if r.path == "raw"), None)
    ratio = f"{result.acquisitions_per_s / raw.acquisitions_per_s:6.2f}" if raw and result.path != "raw" else ""
    won = result.acquisitions / result.attempts
    print(
        f"{result.path:<5} {result.acquisitions:>6} {result.acquisitions_per_s:>9.0f} "
        f"{result.attempts_per_s:>10.0f} {won:>8.1%} {ratio:>6}",
        flush=True,
    )


def ratio_rows(pairs: list[PairResult], contention: list[ContentionResult]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for raw in (r for r in pairs if r.path == "raw"):
        row: dict[str, Any] = {"cell": f"pairs c{raw.concurrency}"}
        for r in pairs:
            if r.path != "raw" and r.concurrency == raw.concurrency:
                row[f"{r.path}_raw"] = round(r.pairs_per_s / raw.pairs_per_s, 3)
        rows.append(row)
    raw_c = next(c for c in contention if c.path == "raw")
    row = {"cell": f"contention {WORKERS}x{RESOURCES}"}
    for c in contention:
        if c.path != "raw":
            row[f"{c.path}_raw"] = round(c.acquisitions_per_s / raw_c.acquisitions_per_s, 3)
    rows.append(row)
    return rows


def print_ratios(rows: list[dict[str, Any]]) -> None:
    print("\nthroughput ratios against raw KV (informational only)")
    print(f"{'cell':<18} {'bus/raw':>8} {'http/raw':>9}")
    for row in rows:
        print(f"{row['cell']:<18} {row['bus_raw']:>8.2f} {row['http_raw']:>9.2f}")


# -- main --------------------------------------------------------------------------------------


async def bench(settings: Settings) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="natrium-bench-lock-"))
    server = await EmbeddedNatsServer(workdir / "nats", port=0).start()
    nc: Client | None = None
    try:
        nc = await nats.connect(server.url, name="natrium-bench")
        # Direct gets, like the lock store's bucket: both paths read the same way.
        kv = await nc.jetstream().create_key_value(KeyValueConfig(bucket=RAW_BUCKET, direct=True))
        connector = aiohttp.TCPConnector(limit=max(WORKERS, *settings.concurrency))
        async with aiohttp.ClientSession(connector=connector) as session:
            async with natrium_processes(server.url, nc, session, workdir) as base:
                env = environment(nc)
                print(
                    f"natrium lock bench ({settings.mode}): {settings.pairs} pairs per cell, "
                    f"concurrency {list(settings.concurrency)}, contention {WORKERS} workers x {RESOURCES} "
                    f"resources to {settings.acquisitions} acquisitions; {json.dumps(env)}"
                )
                paths: dict[str, Locks] = {
                    "raw": RawLocks(kv),
                    "bus": BusLocks(BusClient(nc), Subjects()),
                    "http": HttpLocks(session, base),
                }
                await warm_up(paths, settings)
                started = time.perf_counter()
                print(
                    f"\nuncontended lock+unlock pairs\n{'conc':>4}  {'path':<5} {'pairs':>6} {'pairs/s':>9} "
                    f"{'p50 ms':>8} {'p99 ms':>8} {'x raw':>6}",
                    flush=True,
                )
                pairs: list[PairResult] = []
                for concurrency in settings.concurrency:
                    for path in PATHS:
                        result = await measure_pairs(path, paths[path], settings, concurrency)
                        print_pair(result, pairs)
                        pairs.append(result)
                print(
                    f"\ncontention: {WORKERS} workers, {RESOURCES} resources\n{'path':<5} {'acq':>6} "
                    f"{'acq/s':>9} {'attempts/s':>10} {'won':>8} {'x raw':>6}",
                    flush=True,
                )
                contention: list[ContentionResult] = []
                tag = f"t{int(time.time())}"
                for path in PATHS:
                    fight = await measure_contention(path, paths[path], settings.acquisitions, tag)
                    print_contention(fight, contention)
                    contention.append(fight)
                elapsed = time.perf_counter() - started
        rows = ratio_rows(pairs, contention)
        print_ratios(rows)
        summary = {
            "bench": "natrium-lock",
            "mode": settings.mode,
            "measured_seconds": round(elapsed, 1),
            "env": env,
            "ratios": rows,
            "pairs": [asdict(r) for r in pairs],
            "contention": [asdict(r) for r in contention],
        }
        print("\n" + json.dumps(summary, separators=(",", ":")))
    finally:
        if nc is not None:
            await nc.close()
        await server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer ops per cell (~20 s instead of ~1 min)")
    args = parser.parse_args()
    eventloop.run(bench(QUICK if args.quick else NORMAL))


if __name__ == "__main__":
    main()
