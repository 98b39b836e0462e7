"""Actors: call throughput to one actor and to 1,000, activations, reminder fire lag, against raw NATS.

Run from the repository root:

    .venv/bin/python bench/actors.py            # ~1 minute
    .venv/bin/python bench/actors.py --quick    # ~20 seconds

One run starts an embedded nats-server, the actors service (`natrium service actors`), one actor
host (bench/_actor_app.py, the bus-native SDK) and a raw echo responder (bench/_echo_server.py),
each its own process, then measures from this process:

    serial      calls to one actor, one at a time (an actor is serial by design)
    parallel    calls spread over 1,000 active actors, 64 in flight
    activate    first calls to fresh actor ids, 64 in flight: claim + activation + call
    remind      1,000 reminders due at the same instant: registration rate, fire lag p50/p99,
                fire throughput

and the same request/reply to the raw echo responder at concurrency 1 and 64 as the baseline
(`x raw`). Dapr's published actor figures (../shared/reference/dapr-http-api.md section 11) are
printed beside them: they come from other machines and setups (Kubernetes, HTTP, Java or Go
apps), so they frame the order of magnitude only. The last line is a one-line JSON summary.
Nothing here asserts on timings.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import itertools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from adapters.actors.client import ActorClient  # noqa: E402
from bench.state import percentile, start_natrium, stop_process, wait_until  # noqa: E402
from kernel import eventloop  # noqa: E402
from kernel.nats_server import EmbeddedNatsServer  # noqa: E402
from kernel.process import die_with_parent  # noqa: E402
from kernel.subjects import Subjects  # noqa: E402
from schemas.actors import ReminderRequest  # noqa: E402

ROOT = "benchactors"
ECHO = "bench.actors.echo"
FIRED = "bench.actors.fired"

# Dapr's published actor figures (dapr-http-api.md section 11: docs v1.0 and perf report v1.17).
DAPR = {
    "serial": "v1.0 docs: 500 qps over HTTP, p90 ~3 ms, p99 ~6.2 ms",
    "parallel": "v1.17: stress test 9,443 req/s at 462 VUs, p95 76 ms",
    "activate": "v1.17: activation at 500 qps, p50 2.30 ms, p99 6.89 ms",
    "remind-register": "v1.17: reminder registration at 667 qps, p50 36 ms",
    "remind-fire": "v1.17: reminders fire at 15,463 triggers/s",
}


@dataclass(frozen=True)
class Settings:
    serial: int
    parallel: int
    actors: int
    activations: int
    reminders: int
    mode: str


NORMAL = Settings(serial=5_000, parallel=20_000, actors=1_000, activations=3_000, reminders=1_000, mode="normal")
QUICK = Settings(serial=1_000, parallel=5_000, actors=1_000, activations=1_000, reminders=1_000, mode="quick")


@dataclass(frozen=True)
class Result:
    name: str
    concurrency: int
    ops: int
    ops_per_s: float
    p50_ms: float
    p99_ms: float
    raw_ops_per_s: float | None = None
    x_raw: float | None = None


async def run(op: Callable[[int], Awaitable[None]], ops: int, concurrency: int) -> tuple[float, list[float]]:
    counter = itertools.count()
    latencies: list[float] = []

    async def worker() -> None:
        while (i := next(counter)) < ops:
            started = time.perf_counter()
            await op(i)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    latencies.sort()
    return time.perf_counter() - started, latencies


def result(name: str, concurrency: int, ops: int, seconds: float, latencies: list[float], raw: float | None) -> Result:
    rate = ops / seconds
    return Result(
        name,
        concurrency,
        ops,
        round(rate, 1),
        round(statistics.median(latencies) * 1000, 3),
        round(percentile(latencies, 0.99) * 1000, 3),
        raw,
        round(rate / raw, 3) if raw else None,
    )


async def bench(nc: Client, subjects: Subjects, settings: Settings) -> tuple[list[Result], dict[str, Any]]:
    client = ActorClient(nc, subjects, timeout=30)
    await client.start()

    async def raw_echo(_: int) -> None:
        await nc.request(ECHO, b"{}", timeout=10)

    async def ping(actor_id: str) -> None:
        reply = await client.invoke("Bench", actor_id, "ping")
        if not reply.ok:
            raise RuntimeError(f"ping {actor_id}: {reply.status} {reply.body!r}")

    results: list[Result] = []
    await run(raw_echo, 500, 16)
    await run(lambda i: ping(f"warm{i % 50}"), 500, 16)

    seconds, lat = await run(raw_echo, settings.serial, 1)
    raw_serial = settings.serial / seconds
    results.append(result("raw echo", 1, settings.serial, seconds, lat, None))
    seconds, lat = await run(lambda i: ping("one"), settings.serial, 1)
    results.append(result("serial (1 actor)", 1, settings.serial, seconds, lat, round(raw_serial, 1)))

    seconds, lat = await run(raw_echo, settings.parallel, 64)
    raw_parallel = settings.parallel / seconds
    results.append(result("raw echo", 64, settings.parallel, seconds, lat, None))
    await run(lambda i: ping(f"a{i}"), settings.actors, 64)  # activate the 1,000 first
    seconds, lat = await run(lambda i: ping(f"a{i % settings.actors}"), settings.parallel, 64)
    results.append(
        result(f"parallel ({settings.actors} actors)", 64, settings.parallel, seconds, lat, round(raw_parallel, 1))
    )

    seconds, lat = await run(lambda i: ping(f"fresh{i}"), settings.activations, 64)
    results.append(result("activate (new ids)", 64, settings.activations, seconds, lat, round(raw_parallel, 1)))

    reminders = await remind(nc, client, settings.reminders)
    await client.close()
    return results, reminders


async def remind(nc: Client, client: ActorClient, count: int) -> dict[str, Any]:
    """`count` reminders due at one instant; lag = fire time at the actor minus the due time."""
    fired: list[tuple[float, float]] = []
    done = asyncio.Event()

    async def on_fired(msg: Msg) -> None:
        body = json.loads(msg.data)
        fired.append((body["due"], body["at"]))
        if len(fired) >= count:
            done.set()

    sub = await nc.subscribe(FIRED, cb=on_fired)
    due = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=max(3.0, count / 300))
    due_text = due.strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    async def register(i: int) -> None:
        request = ReminderRequest(dueTime=due_text, data={"due": due.timestamp()})
        await client.create_reminder("Bench", f"r{i}", "lag", request)

    seconds, lat = await run(register, count, 64)
    registered = result("remind register", 64, count, seconds, lat, None)
    try:
        await asyncio.wait_for(done.wait(), 60 + count / 100)
    finally:
        await sub.unsubscribe()
    lags = sorted(at - due_at for due_at, at in fired)
    times = sorted(at for _, at in fired)
    span = times[-1] - times[0] if len(times) > 1 else 0.0
    return {
        "reminders": count,
        "register_per_s": registered.ops_per_s,
        "register_p50_ms": registered.p50_ms,
        "lag_p50_ms": round(statistics.median(lags) * 1000, 1),
        "lag_p99_ms": round(percentile(lags, 0.99) * 1000, 1),
        "fires_per_s": round(count / span, 1) if span else None,
    }


async def start_host(url: str, log: Path) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONPATH": str(REPO), "NATS_URL": url, "NATRIUM_ROOT": ROOT, "FIRED_SUBJECT": FIRED}
    env["NATRIUM_LOG_LEVEL"] = "warning"
    with log.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(REPO / "bench" / "_actor_app.py"), env=env,
            stdout=asyncio.subprocess.PIPE, stderr=err, preexec_fn=die_with_parent,
        )  # fmt: skip
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    if line.strip() != b"ready":
        raise RuntimeError(f"actor host did not start: {log.read_text()[-2000:]}")
    return proc


def print_results(results: list[Result], reminders: dict[str, Any]) -> None:
    print(f"{'measure':<24} {'conc':>4} {'ops':>6} {'ops/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'x raw':>6}")
    for r in results:
        ratio = f"{r.x_raw:6.2f}" if r.x_raw is not None else ""
        print(
            f"{r.name:<24} {r.concurrency:>4} {r.ops:>6} {r.ops_per_s:>9.0f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f} {ratio}"
        )
    print(
        f"\nreminders: {reminders['reminders']} due at one instant; registered at {reminders['register_per_s']:.0f}/s "
        f"(p50 {reminders['register_p50_ms']:.1f} ms); fire lag p50 {reminders['lag_p50_ms']:.0f} ms, "
        f"p99 {reminders['lag_p99_ms']:.0f} ms; {reminders['fires_per_s'] or 0:.0f} fires/s"
    )
    by_name = {r.name.split(" ")[0]: r for r in results if not r.name.startswith("raw")}
    print("\nside by side with Dapr's published figures (other machines and setups: order of magnitude only)")
    serial, parallel, activate = by_name["serial"], by_name["parallel"], by_name["activate"]
    rem = reminders
    rows = [
        ("serial", f"{serial.ops_per_s:.0f} calls/s, p50 {serial.p50_ms:.2f} ms, p99 {serial.p99_ms:.2f} ms"),
        ("parallel", f"{parallel.ops_per_s:.0f} calls/s, p99 {parallel.p99_ms:.1f} ms"),
        ("activate", f"{activate.ops_per_s:.0f}/s, p50 {activate.p50_ms:.2f} ms, p99 {activate.p99_ms:.2f} ms"),
        ("remind-register", f"{rem['register_per_s']:.0f}/s, p50 {rem['register_p50_ms']:.1f} ms"),
        (
            "remind-fire",
            f"{rem['fires_per_s'] or 0:.0f} fires/s, lag p50 {rem['lag_p50_ms']:.0f} / p99 {rem['lag_p99_ms']:.0f} ms",
        ),
    ]
    for key, natrium in rows:
        print(f"  {key:<16} natrium: {natrium}\n  {'':<16} dapr:    {DAPR[key]}")


async def main(settings: Settings) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="natrium-bench-actors-"))
    server = await EmbeddedNatsServer(workdir / "nats", port=0).start()
    procs: list[asyncio.subprocess.Process] = []
    nc = await nats.connect(server.url, name="bench-actors")
    try:
        service_log = workdir / "actors.log"
        env = {"NATRIUM_ROOT": ROOT}
        procs.append(await start_natrium(["service", "actors", "--nats-url", server.url], service_log, extra_env=env))

        async def service_ready() -> bool:
            await nc.request("$SRV.PING.natrium-actors", b"", timeout=0.5)
            return True

        await wait_until(service_ready, procs[0], "actors service", service_log)
        procs.append(await start_host(server.url, workdir / "host.log"))
        procs.append(
            await asyncio.create_subprocess_exec(
                sys.executable, str(REPO / "bench" / "_echo_server.py"), server.url, ECHO, preexec_fn=die_with_parent
            )
        )
        await asyncio.sleep(0.5)  # the echo responder subscribes
        results, reminders = await bench(nc, Subjects(ROOT), settings)
    finally:
        await asyncio.gather(*(stop_process(p) for p in procs))
        await nc.close()
        await server.stop()
    print_results(results, reminders)
    summary = {
        "bench": "actors",
        "mode": settings.mode,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "results": [asdict(r) for r in results],
        "reminders": reminders,
        "dapr_published": DAPR,
    }
    print(json.dumps(summary, separators=(",", ":")))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer calls per measure")
    eventloop.run(main(QUICK if parser.parse_args().quick else NORMAL))
