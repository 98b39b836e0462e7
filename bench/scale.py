"""Scale-out: state saves and publishes with 1, 2 and 3 replicas of the block services, on one
nats-server and on a 3-node JetStream cluster (R3 streams and buckets, fsync always).

Run from the repository root:

    .venv/bin/python bench/scale.py            # ~2 minutes
    .venv/bin/python bench/scale.py --quick    # ~1 minute

For each topology it starts the servers, then for n = 1, 2, 3 starts n replicas of
`natrium service state` and of `natrium service pubsub` (subprocesses, as in production) and
measures, at a fixed concurrency, bus saves (`natrium.state.statestore.save`) and bus publishes
(`natrium.pubsub.pubsub.publish`). The baseline in the same run is raw nats-py on the same
topology: `kv.put` on an R1/R3 bucket and `js.publish` on an R1/R3 stream. It prints a table, the
ratios, and a one-line JSON summary; nothing asserts on timings.

On this 2-core machine the replicas, the servers and the load generator share two cores, so more
replicas cannot add throughput once the cores are busy: the table shows where that happens.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client
from nats.js.api import KeyValueConfig, StreamConfig

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.state import environment, run_op, start_natrium, stop_process  # noqa: E402
from deploy.local_cluster import LocalCluster  # noqa: E402
from kernel import eventloop  # noqa: E402
from kernel.client import BusClient  # noqa: E402
from kernel.errors import NatriumError  # noqa: E402
from kernel.nats_server import EmbeddedNatsServer  # noqa: E402
from kernel.subjects import Subjects  # noqa: E402

CONCURRENCY = 64
REPLICAS = (1, 2, 3)
COMPONENTS = """\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {{name: statestore}}
spec: {{type: state.nats-kv, version: v1, metadata: [{{name: replicas, value: "{r}"}}]}}
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {{name: pubsub}}
spec: {{type: pubsub.jetstream, version: v1, metadata: [{{name: replicas, value: "{r}"}}]}}
"""

Op = Callable[[int], Awaitable[Any]]


@dataclass(frozen=True)
class Row:
    topology: str
    op: str
    path: str
    replicas: int
    ops_per_s: float


@dataclass
class Topology:
    name: str
    url: str
    stream_replicas: int
    env: dict[str, str]
    connect: Callable[[], Awaitable[Client]]


@contextlib.asynccontextmanager
async def single_server(workdir: Path) -> AsyncIterator[Topology]:
    server = await EmbeddedNatsServer(workdir / "single", port=0).start()
    try:
        yield Topology("1 node", server.url, 1, {}, lambda: nats.connect(server.url))
    finally:
        await server.stop()


@contextlib.asynccontextmanager
async def three_node_cluster(workdir: Path) -> AsyncIterator[Topology]:
    cluster = await LocalCluster(workdir / "cluster").start()
    env = {"NATS_USER": cluster.user, "NATS_PASSWORD": cluster.password}
    try:
        yield Topology("3 nodes", cluster.url, 3, env, cluster.connect)
    finally:
        await cluster.stop()


async def raw_ops(nc: Client, replicas: int) -> dict[str, Op]:
    js = nc.jetstream()
    kv = await js.create_key_value(KeyValueConfig(bucket="scale-raw", replicas=replicas, direct=True))
    await js.add_stream(StreamConfig(name="SCALE_RAW", subjects=["scale.raw.>"], num_replicas=replicas))
    payload = json.dumps({"n": 1}).encode()

    async def save(i: int) -> None:
        await kv.put(f"k{i % 1000}", payload)

    async def publish(i: int) -> None:
        await js.publish("scale.raw.orders", payload)

    return {"save": save, "publish": publish}


def bus_ops(bus: BusClient, subjects: Subjects) -> dict[str, Op]:
    save_subject = subjects.block("state", "statestore", "save")
    publish_subject = subjects.block("pubsub", "pubsub", "publish")

    async def save(i: int) -> None:
        await bus.request(save_subject, {"items": [{"key": f"k{i % 1000}", "value": {"n": i}}]})

    async def publish(i: int) -> None:
        await bus.request(publish_subject, {"topic": "orders", "data": {"n": i}})

    return {"save": save, "publish": publish}


async def wait_for_replicas(nc: Client, count: int, timeout: float = 60.0) -> None:
    from kernel.discovery import discover

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = {
            block: len(await discover(nc, "PING", f"natrium-{block}", window=0.3)) for block in ("state", "pubsub")
        }
        if all(n >= count for n in found.values()):
            return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"{count} replicas of state and pubsub not up after {timeout:g}s")


async def measure(op: Op, ops: int) -> float:
    await run_op(op, min(200, ops), 16)  # warm-up: connections, caches, stream creation
    seconds, _ = await run_op(op, ops, CONCURRENCY)
    return round(ops / seconds, 1)


async def bench_topology(topology: Topology, workdir: Path, ops: int) -> list[Row]:
    rows: list[Row] = []
    components = workdir / f"components-{topology.stream_replicas}"
    components.mkdir(exist_ok=True)
    (components / "components.yaml").write_text(COMPONENTS.format(r=topology.stream_replicas))
    nc = await topology.connect()
    procs: list[asyncio.subprocess.Process] = []
    try:
        raw = await raw_ops(nc, topology.stream_replicas)
        for op, fn in raw.items():
            rows.append(Row(topology.name, op, "raw", 0, await measure(fn, ops)))
            print_row(rows[-1], rows)
        bus = bus_ops(BusClient(nc, timeout=30), Subjects())
        args = ["--nats-url", topology.url, "--components", str(components)]
        for n in REPLICAS:
            while len(procs) < 2 * n:
                block = ("state", "pubsub")[len(procs) % 2]
                log = workdir / f"{topology.stream_replicas}-{block}-{len(procs)}.log"
                procs.append(await start_natrium(["service", block, *args], log, extra_env=topology.env))
            await wait_for_replicas(nc, n)
            for op, fn in bus.items():
                rows.append(Row(topology.name, op, "bus", n, await measure(fn, ops)))
                print_row(rows[-1], rows)
    finally:
        await asyncio.gather(*(stop_process(p) for p in procs))
        await nc.close()
    return rows


def raw_of(row: Row, rows: list[Row]) -> Row | None:
    return next((r for r in rows if r.topology == row.topology and r.op == row.op and r.path == "raw"), None)


def print_row(row: Row, rows: list[Row]) -> None:
    raw = raw_of(row, rows)
    ratio = f"{row.ops_per_s / raw.ops_per_s:6.2f}" if raw and row.path != "raw" else ""
    replicas = str(row.replicas) if row.path != "raw" else "-"
    print(f"{row.topology:<8} {row.op:<8} {row.path:<4} {replicas:>8} {row.ops_per_s:>9.0f} {ratio:>6}", flush=True)


async def bench(ops: int) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="natrium-scale-"))
    rows: list[Row] = []
    env: dict[str, Any] = {}
    try:
        print(f"natrium scale bench: {ops} ops per cell at concurrency {CONCURRENCY}, replicas {list(REPLICAS)}")
        print(f"{'servers':<8} {'op':<8} {'path':<4} {'replicas':>8} {'ops/s':>9} {'x raw':>6}")
        for topology_of in (single_server, three_node_cluster):
            async with topology_of(workdir) as topology:
                if not env:
                    nc = await topology.connect()
                    env = environment(nc)
                    await nc.close()
                rows += await bench_topology(topology, workdir, ops)
    except (NatriumError, RuntimeError) as exc:
        print(f"bench failed: {exc}; logs in {workdir}", file=sys.stderr)
        raise SystemExit(1) from None
    summary = {"bench": "natrium-scale", "ops_per_cell": ops, "concurrency": CONCURRENCY, "env": env}
    summary["results"] = [asdict(r) for r in rows]
    print("\n" + json.dumps(summary, separators=(",", ":")))
    shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer ops per cell")
    args = parser.parse_args()
    os.environ.setdefault("NATRIUM_LOG_LEVEL", "warning")
    eventloop.run(bench(1000 if args.quick else 4000))


if __name__ == "__main__":
    main()
