"""Pub/sub throughput and latency: raw JetStream publish vs the natrium bus vs the HTTP gateway, and delivery.

Run from the repository root:

    .venv/bin/python bench/pubsub.py            # ~1 minute
    .venv/bin/python bench/pubsub.py --quick    # ~25 seconds, shorter cells, fewer events

One run starts an embedded nats-server, the pubsub service and the HTTP gateway (each its own
subprocess, as `natrium up` runs them), then measures, all in the same run on the same machine:

1. publish at several concurrency levels, for three paths:

    raw      nats-py `js.publish` to a stream of our own (the baseline), with a payload the size
             of the CloudEvent the service stores
    service  the SDK's `Client.publish("pubsub", "orders", {"n": i})`: a bus request to
             `natrium.pubsub.pubsub.publish`, which wraps the data in a CloudEvent and stores it
    http     aiohttp to the gateway: POST /v1.0/publish/pubsub/orders, JSON body, 204 expected

2. end-to-end delivery to one consumer group (`Client.subscribe(..., concurrency=64)` on a fresh
   topic), events published through the service with a `time.time_ns()` stamp in their data:
   delivered events/s, publish-to-handler latency, and a check that every published id reached the
   handler (duplicates counted). Three phases: `light` (one publisher, subscribed first: latency
   without queueing), `loaded` (64 publishers, subscribed first), `backlog` (everything published
   first, then drained: delivery throughput alone).

It prints a table, the service/raw and http/raw throughput ratios with the goal they are read
against (service >= 0.5 x raw), the delivery figures, and a one-line JSON summary. The goal is
only reported: nothing here asserts on timings. The exit status is 1 only when an operation fails
or a published event never reaches the handler.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import nats
from nats.aio.client import Client as Nats
from nats.js.api import StorageType, StreamConfig
from nats.js.client import JetStreamContext

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# Shared with the state benchmark next to this file: timing loop, percentiles, processes, environment.
from state import (  # noqa: E402
    Result,
    environment,
    free_port,
    gateway_ready,
    percentile,
    run_op,
    start_natrium,
    stop_process,
    wait_until,
)

from adapters.sdk import Client, Event  # noqa: E402
from kernel import eventloop  # noqa: E402
from kernel.cloudevents import new_envelope  # noqa: E402
from kernel.nats_server import EmbeddedNatsServer  # noqa: E402

PUBSUB = "pubsub"
TOPIC = "orders"
RAW_STREAM = "BENCH_RAW"
RAW_SUBJECT = "bench.raw.orders"
APP_ID = "bench"
PATHS = ("raw", "service", "http")
GOALS = {"service": 0.5}
"""The issue's goal; http/raw is printed alongside with no goal of its own."""

Op = Callable[[int], Awaitable[None]]
"""One publish of event number i."""


@dataclass(frozen=True)
class Settings:
    seconds: float
    """Length of each (path, concurrency) publish cell: the paths differ ~10x in speed, so cells
    are timed rather than counted, and the raw baseline is not measured over a few milliseconds."""
    warmup: int
    """Unmeasured publishes per path before the first cell."""
    concurrency: tuple[int, ...]
    events: int
    """Events published and delivered in the loaded and backlog delivery phases."""
    light_events: int
    """Events in the light delivery phase (one publisher, so ~1 ms each)."""
    publishers: int
    """Concurrent publishers in the loaded and backlog delivery phases."""
    subscriber_concurrency: int
    delivery_timeout: float
    """How long to wait, after the last publish, for the remaining events to arrive."""
    mode: str


NORMAL = Settings(
    seconds=5.0,
    warmup=500,
    concurrency=(1, 16, 64),
    events=20_000,
    light_events=1_000,
    publishers=64,
    subscriber_concurrency=64,
    delivery_timeout=30.0,
    mode="normal",
)
QUICK = Settings(
    seconds=2.0,
    warmup=200,
    concurrency=(1, 16, 64),
    events=2_000,
    light_events=200,
    publishers=64,
    subscriber_concurrency=64,
    delivery_timeout=15.0,
    mode="quick",
)


# -- the three publish paths -------------------------------------------------------------------


def data(i: int) -> dict[str, int]:
    return {"n": i}


def stored_event_bytes() -> bytes:
    """A CloudEvent like the one the service stores for `data(i)`: the raw path publishes this many bytes."""
    envelope = new_envelope(
        json.dumps(data(0), separators=(",", ":")).encode(),
        "application/json",
        topic=TOPIC,
        pubsub=PUBSUB,
        source=APP_ID,
        metadata={},
        traceparent=f"00-{'1' * 32}-{'2' * 16}-00",  # the service always has a trace context
    )
    return json.dumps(envelope, separators=(",", ":")).encode()


async def create_raw_stream(js: JetStreamContext) -> None:
    """File storage, as the service's default stream, so both paths ask the server for the same work."""
    await js.add_stream(StreamConfig(name=RAW_STREAM, subjects=["bench.raw.>"], storage=StorageType.FILE))


def raw_publish(js: JetStreamContext) -> Op:
    payload = stored_event_bytes()

    async def publish(i: int) -> None:
        await js.publish(RAW_SUBJECT, payload)

    return publish


def service_publish(client: Client) -> Op:
    async def publish(i: int) -> None:
        await client.publish(PUBSUB, TOPIC, data(i))

    return publish


def http_publish(session: aiohttp.ClientSession, base: str) -> Op:
    url = f"{base}/v1.0/publish/{PUBSUB}/{TOPIC}"
    json_type = {"Content-Type": "application/json"}

    async def publish(i: int) -> None:
        body = json.dumps(data(i)).encode()
        async with session.post(url, data=body, headers=json_type) as resp:
            await resp.read()
            if resp.status != 204:
                raise RuntimeError(f"http publish {i}: status {resp.status}")

    return publish


async def run_for(op: Op, seconds: float, concurrency: int) -> tuple[int, float, list[float]]:
    """`concurrency` workers publish until `seconds` are up; (ops, wall seconds, latencies)."""
    counter = itertools.count()
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        while (started := time.perf_counter()) < deadline:
            await op(next(counter))
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(latencies), time.perf_counter() - started, latencies


async def measure(path: str, op: Op, seconds: float, concurrency: int) -> Result:
    ops, wall, latencies = await run_for(op, seconds, concurrency)
    latencies.sort()
    return Result(
        op="publish",
        concurrency=concurrency,
        path=path,
        ops=ops,
        seconds=round(wall, 3),
        ops_per_s=round(ops / wall, 1),
        p50_ms=round(statistics.median(latencies) * 1000, 3),
        p99_ms=round(percentile(latencies, 0.99) * 1000, 3),
    )


async def warm_up(paths: dict[str, Op], settings: Settings) -> None:
    for op in paths.values():
        await run_op(op, settings.warmup, 16)


async def run_publish_cells(paths: dict[str, Op], settings: Settings) -> list[Result]:
    """Paths interleaved per concurrency level, so each ratio compares runs taken moments apart."""
    results: list[Result] = []
    for concurrency in settings.concurrency:
        for path in PATHS:
            result = await measure(path, paths[path], settings.seconds, concurrency)
            print_row(result, results)
            results.append(result)
    return results


# -- end-to-end delivery -----------------------------------------------------------------------


@dataclass
class Inbox:
    """What the handler saw: ids in arrival order and publish-to-handler latencies."""

    expected: int
    ids: list[str] = field(default_factory=list)
    unique: set[str] = field(default_factory=set)
    latencies_ns: list[int] = field(default_factory=list)
    redeliveries: int = 0
    last_ns: int = 0
    complete: asyncio.Event = field(default_factory=asyncio.Event)

    async def handler(self, event: Event) -> None:
        now = time.time_ns()
        self.ids.append(event.id)
        self.unique.add(event.id)
        self.latencies_ns.append(now - int(event.data["t"]))
        self.last_ns = now
        if event.delivery > 1:
            self.redeliveries += 1
        if len(self.unique) >= self.expected:
            self.complete.set()


@dataclass(frozen=True)
class Phase:
    name: str
    events: int
    publishers: int
    subscribe_first: bool
    """True: consume while publishing (latency); False: publish everything, then drain the backlog."""


def delivery_phases(settings: Settings) -> list[Phase]:
    return [
        # One publisher: the publish-to-handler latency of an event that does not queue behind others.
        Phase("light", settings.light_events, 1, subscribe_first=True),
        # Publishers at full speed: throughput, and latency including the queueing that causes.
        Phase("loaded", settings.events, settings.publishers, subscribe_first=True),
        # Delivery alone, from a stream that already holds every event.
        Phase("backlog", settings.events, settings.publishers, subscribe_first=False),
    ]


@dataclass(frozen=True)
class DeliveryResult:
    phase: str
    events: int
    publishers: int
    subscriber_concurrency: int
    published_per_s: float
    delivered: int
    """Handler calls, duplicates included."""
    seconds: float
    """First publish (backlog: the subscribe call) to the last handler call."""
    delivered_per_s: float
    """Distinct published events delivered, per `seconds`."""
    p50_ms: float
    p99_ms: float
    max_ms: float
    """Publish to handler; in the backlog phase this is mostly time spent waiting in the stream."""
    missing: int
    duplicates: int
    unexpected: int
    redeliveries: int


async def publish_timestamped(client: Client, topic: str, events: int, publishers: int) -> tuple[list[str], float]:
    """Publish `{"n": i, "t": time_ns}` through the service; (their CloudEvent ids, publishes/s)."""
    counter = iter(range(events))
    ids: list[str] = []

    async def worker() -> None:
        for i in counter:
            reply = await client.publish(PUBSUB, topic, {"n": i, "t": time.time_ns()})
            ids.append(reply.id)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(publishers)))
    return ids, len(ids) / (time.perf_counter() - started)


async def run_delivery(url: str, publisher: Client, settings: Settings, phase: Phase) -> DeliveryResult:
    """One consumer group on a fresh topic, subscribed before or after the events are published."""
    topic = f"e2e-{phase.name}-{uuid.uuid4().hex[:8]}"
    inbox = Inbox(expected=phase.events)
    # The subscriber has its own connection, as a separate app would; it shares this process's CPU.
    subscriber = Client(await nats.connect(url, name="natrium-bench-sub"), app_id=APP_ID)

    async def subscribe() -> None:
        await subscriber.subscribe(PUBSUB, topic, inbox.handler, concurrency=settings.subscriber_concurrency)

    try:
        if phase.subscribe_first:
            await subscribe()
        started_ns = time.time_ns()
        published, published_per_s = await publish_timestamped(publisher, topic, phase.events, phase.publishers)
        if not phase.subscribe_first:
            started_ns = time.time_ns()
            await subscribe()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(inbox.complete.wait(), settings.delivery_timeout)
    finally:
        await subscriber.close()
    return delivery_result(phase, settings, inbox, published, published_per_s, started_ns)


async def run_deliveries(url: str, publisher: Client, settings: Settings) -> list[DeliveryResult]:
    print_delivery_header(settings)
    deliveries = []
    for phase in delivery_phases(settings):
        deliveries.append(await run_delivery(url, publisher, settings, phase))
        print_delivery(deliveries[-1])
    return deliveries


def delivery_result(
    phase: Phase, settings: Settings, inbox: Inbox, published: list[str], published_per_s: float, started_ns: int
) -> DeliveryResult:
    expected = set(published)
    latencies = sorted(ns / 1e6 for ns in inbox.latencies_ns)  # ms
    seconds = max(inbox.last_ns - started_ns, 1) / 1e9
    return DeliveryResult(
        phase=phase.name,
        events=phase.events,
        publishers=phase.publishers,
        subscriber_concurrency=settings.subscriber_concurrency,
        published_per_s=round(published_per_s, 1),
        delivered=len(inbox.ids),
        seconds=round(seconds, 3),
        delivered_per_s=round(len(inbox.unique & expected) / seconds, 1),
        p50_ms=round(statistics.median(latencies), 3) if latencies else 0.0,
        p99_ms=round(percentile(latencies, 0.99), 3) if latencies else 0.0,
        max_ms=round(latencies[-1], 3) if latencies else 0.0,
        missing=len(expected - inbox.unique),
        duplicates=len(inbox.ids) - len(inbox.unique),
        unexpected=len(inbox.unique - expected),
        redeliveries=inbox.redeliveries,
    )


# -- the system under test ---------------------------------------------------------------------


async def pubsub_service_ready(nc: Nats) -> bool:
    await nc.request("$SRV.PING.natrium-pubsub", b"", timeout=0.5)
    return True


@contextlib.asynccontextmanager
async def natrium_processes(url: str, nc: Nats, session: aiohttp.ClientSession, workdir: Path) -> AsyncIterator[str]:
    """The pubsub service and the gateway as subprocesses; yields the gateway's base URL."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    procs: list[asyncio.subprocess.Process] = []
    try:
        service_log, gateway_log = workdir / "pubsub.log", workdir / "gateway.log"
        procs.append(await start_natrium(["service", "pubsub", "--nats-url", url], service_log))
        procs.append(await start_natrium(["gateway", "--nats-url", url, "--http-port", str(port)], gateway_log))
        await wait_until(lambda: pubsub_service_ready(nc), procs[0], "pubsub service", service_log)
        await wait_until(lambda: gateway_ready(session, base), procs[1], "gateway", gateway_log)
        yield base
    finally:
        await asyncio.gather(*(stop_process(p) for p in procs))


# -- output ------------------------------------------------------------------------------------

HEADER = f"{'conc':>4}  {'path':<7} {'ops':>6} {'ops/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'x raw':>6}"


def print_row(result: Result, earlier: list[Result]) -> None:
    raw = next((r for r in earlier if r.path == "raw" and r.concurrency == result.concurrency), None)
    ratio = f"{result.ops_per_s / raw.ops_per_s:6.2f}" if raw and result.path != "raw" else f"{'':6}"
    print(
        f"{result.concurrency:>4}  {result.path:<7} {result.ops:>6} {result.ops_per_s:>9.0f} "
        f"{result.p50_ms:>8.2f} {result.p99_ms:>8.2f} {ratio}",
        flush=True,
    )


def ratios(results: list[Result]) -> list[dict[str, Any]]:
    rows = []
    for raw in (r for r in results if r.path == "raw"):
        row: dict[str, Any] = {"concurrency": raw.concurrency}
        for path in ("service", "http"):
            other = next(x for x in results if x.path == path and x.concurrency == raw.concurrency)
            row[f"{path}_raw"] = round(other.ops_per_s / raw.ops_per_s, 3)
        rows.append(row)
    return rows


def print_goals(rows: list[dict[str, Any]]) -> dict[str, bool]:
    print("\nthroughput ratios against raw JetStream publish (goal: service >= 0.5; informational only)")
    print(f"{'conc':>4}  {'service/raw':>11} {'':4} {'http/raw':>8}")
    for row in rows:
        mark = "ok" if row["service_raw"] >= GOALS["service"] else "MISS"
        print(f"{row['concurrency']:>4}  {row['service_raw']:>11.2f} {mark:<4} {row['http_raw']:>8.2f}")
    met = {p: all(row[f"{p}_raw"] >= goal for row in rows) for p, goal in GOALS.items()}
    print("goal: " + ", ".join(f"{p} >= {GOALS[p]} x raw: {'met' if ok else 'not met'}" for p, ok in met.items()))
    return met


DELIVERY_HEADER = (
    f"{'phase':<8} {'pubs':>4} {'events':>6} {'pub/s':>7} {'deliv/s':>8} {'seconds':>7} "
    f"{'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}  ids"
)


def print_delivery_header(settings: Settings) -> None:
    print(
        f"\nend-to-end delivery to one consumer group: published through the service, handled with "
        f"subscriber concurrency {settings.subscriber_concurrency}; latency is publish call to handler call"
    )
    print("  light/loaded: subscribed first; backlog: everything published first, then drained")
    print(DELIVERY_HEADER, flush=True)


def print_delivery(d: DeliveryResult) -> None:
    ok = d.missing == 0 and d.unexpected == 0
    ids = (
        f"{'all arrived' if ok else 'EVENTS MISSING'}: {d.delivered} handler calls, missing {d.missing}, "
        f"duplicates {d.duplicates}, unexpected {d.unexpected}, redelivered {d.redeliveries}"
    )
    print(
        f"{d.phase:<8} {d.publishers:>4} {d.events:>6} {d.published_per_s:>7.0f} {d.delivered_per_s:>8.0f} "
        f"{d.seconds:>7.2f} {d.p50_ms:>8.2f} {d.p99_ms:>8.2f} {d.max_ms:>8.2f}  {ids}",
        flush=True,
    )


# -- main --------------------------------------------------------------------------------------


async def bench(settings: Settings) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="natrium-bench-"))
    server = await EmbeddedNatsServer(workdir / "nats", port=0).start()
    nc: Nats | None = None
    try:
        nc = await nats.connect(server.url, name="natrium-bench")
        js = nc.jetstream()
        await create_raw_stream(js)
        connector = aiohttp.TCPConnector(limit=max(settings.concurrency))
        async with aiohttp.ClientSession(connector=connector) as session:
            async with natrium_processes(server.url, nc, session, workdir) as base:
                env = environment(nc)
                print(
                    f"natrium pubsub bench ({settings.mode}): {settings.seconds:g} s per publish cell, "
                    f"concurrency {list(settings.concurrency)}; {json.dumps(env)}"
                )
                publisher = Client(nc, app_id=APP_ID)
                paths = {
                    "raw": raw_publish(js),
                    "service": service_publish(publisher),
                    "http": http_publish(session, base),
                }
                await warm_up(paths, settings)
                print("\n" + HEADER, flush=True)
                started = time.perf_counter()
                results = await run_publish_cells(paths, settings)
                rows = ratios(results)
                met = print_goals(rows)
                deliveries = await run_deliveries(server.url, publisher, settings)
                elapsed = time.perf_counter() - started
        load_end = round(os.getloadavg()[0], 2)
        print(f"\nload average (1 min): {env['loadavg_1m']} at the start, {load_end} at the end")
        summary = {
            "bench": "natrium-pubsub",
            "mode": settings.mode,
            "seconds_per_cell": settings.seconds,
            "measured_seconds": round(elapsed, 1),
            "env": env,
            # Against env's loadavg_1m at the start: a rise means something else ran meanwhile.
            "loadavg_1m_end": load_end,
            "goals": GOALS,
            "goals_met": met,
            "ratios": rows,
            "results": [asdict(r) for r in results],
            "delivery": [asdict(d) for d in deliveries],
        }
        print("\n" + json.dumps(summary, separators=(",", ":")))
        return 1 if any(d.missing or d.unexpected for d in deliveries) else 0
    finally:
        if nc is not None:
            await nc.close()
        await server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter cells, fewer events (~25 s instead of ~1 min)")
    args = parser.parse_args()
    sys.exit(eventloop.run(bench(QUICK if args.quick else NORMAL)))


if __name__ == "__main__":
    main()
