"""State throughput and latency: raw JetStream KV vs the natrium bus vs the natrium HTTP gateway.

Run from the repository root:

    .venv/bin/python bench/state.py            # ~2 minutes
    .venv/bin/python bench/state.py --quick    # ~30 seconds, fewer ops
    .venv/bin/python bench/state.py --quick --tracing   # the same with spans recorded

`--tracing` runs the service and gateway with `OTEL_TRACES_EXPORTER=natrium-null`: every span is
recorded and then dropped, so comparing with a run without it gives what recording costs (an
exporter's own cost, which depends on where spans go, comes on top).

One run starts an embedded nats-server, the state service and the HTTP gateway (each its own
subprocess, as `natrium up` runs them), then measures put/save and get for three paths at several
concurrency levels, all in the same run on the same machine:

    raw   nats-py `kv.put` / `kv.get` on a JetStream KV bucket (the baseline)
    bus   `BusClient.request` to `natrium.state.statestore.{save,get}` (msgpack request/reply)
    http  aiohttp to the gateway: POST /v1.0/state/statestore, GET /v1.0/state/statestore/<key>

It prints a table, the bus/raw and http/raw throughput ratios with the goals they are read
against (bus >= 0.5 x raw, http >= 0.25 x raw), and a one-line JSON summary. The goals are only
reported: nothing here asserts on timings, and the exit status never depends on them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import aiohttp
import nats
from nats.aio.client import Client
from nats.js.api import KeyValueConfig
from nats.js.kv import KeyValue

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from kernel import eventloop  # noqa: E402
from kernel.client import BusClient  # noqa: E402
from kernel.nats_server import EmbeddedNatsServer  # noqa: E402
from kernel.process import die_with_parent  # noqa: E402
from kernel.subjects import Subjects  # noqa: E402

STORE = "statestore"
RAW_BUCKET = "bench-raw"
PATHS = ("raw", "bus", "http")
OPS = ("put", "get")
GOALS = {"bus": 0.5, "http": 0.25}
READY_TIMEOUT = 30.0

Op = Callable[[int], Awaitable[None]]
"""One benchmarked operation on key number i."""


@dataclass(frozen=True)
class Settings:
    ops: int
    """Operations per (path, op, concurrency) cell."""
    warmup: int
    """Unmeasured operations per path and op before the first cell."""
    concurrency: tuple[int, ...]
    mode: str
    tracing: bool = False
    """Record spans in the service and gateway (exported nowhere)."""


NORMAL = Settings(ops=10_000, warmup=500, concurrency=(1, 16, 64), mode="normal")
QUICK = Settings(ops=2_000, warmup=200, concurrency=(1, 16, 64), mode="quick")


@dataclass(frozen=True)
class Result:
    op: str
    concurrency: int
    path: str
    ops: int
    seconds: float
    ops_per_s: float
    p50_ms: float
    p99_ms: float


# -- keys and values ---------------------------------------------------------------------------


def key(i: int) -> str:
    return f"k{i}"


def value(i: int) -> dict[str, int]:
    return {"n": i}


def value_bytes(i: int) -> bytes:
    """The JSON the state store writes for `value(i)`: the same bytes on every path."""
    return json.dumps(value(i), separators=(",", ":")).encode()


# -- the three paths -------------------------------------------------------------------------


def raw_ops(kv: KeyValue) -> dict[str, Op]:
    async def put(i: int) -> None:
        await kv.put(key(i), value_bytes(i))

    async def get(i: int) -> None:
        entry = await kv.get(key(i))
        if entry.value != value_bytes(i):
            raise RuntimeError(f"raw get {key(i)}: unexpected value {entry.value!r}")

    return {"put": put, "get": get}


def bus_ops(bus: BusClient, subjects: Subjects) -> dict[str, Op]:
    save_subject = subjects.block("state", STORE, "save")
    get_subject = subjects.block("state", STORE, "get")

    async def put(i: int) -> None:
        await bus.request(save_subject, {"items": [{"key": key(i), "value": value(i)}]})

    async def get(i: int) -> None:
        reply = await bus.request(get_subject, {"key": key(i)})
        if not reply.get("found") or reply.get("data") != value_bytes(i):
            raise RuntimeError(f"bus get {key(i)}: unexpected reply {reply!r}")

    return {"put": put, "get": get}


def http_ops(session: aiohttp.ClientSession, base: str) -> dict[str, Op]:
    save_url = f"{base}/v1.0/state/{STORE}"
    json_type = {"Content-Type": "application/json"}

    async def put(i: int) -> None:
        body = json.dumps([{"key": key(i), "value": value(i)}]).encode()
        async with session.post(save_url, data=body, headers=json_type) as resp:
            await resp.read()
            if resp.status != 204:
                raise RuntimeError(f"http save {key(i)}: status {resp.status}")

    async def get(i: int) -> None:
        async with session.get(f"{save_url}/{key(i)}") as resp:
            data = await resp.read()
            if resp.status != 200 or json.loads(data) != value(i):
                raise RuntimeError(f"http get {key(i)}: status {resp.status}, body {data!r}")

    return {"put": put, "get": get}


# -- measuring ---------------------------------------------------------------------------------


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


async def run_op(op: Op, ops: int, concurrency: int) -> tuple[float, list[float]]:
    """`concurrency` workers share one counter until `ops` are done; (wall seconds, latencies)."""
    counter = itertools.count()
    latencies: list[float] = []

    async def worker() -> None:
        while (i := next(counter)) < ops:
            started = time.perf_counter()
            await op(i)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, latencies


async def measure(path: str, name: str, op: Op, ops: int, concurrency: int) -> Result:
    seconds, latencies = await run_op(op, ops, concurrency)
    latencies.sort()
    return Result(
        op=name,
        concurrency=concurrency,
        path=path,
        ops=ops,
        seconds=round(seconds, 3),
        ops_per_s=round(ops / seconds, 1),
        p50_ms=round(statistics.median(latencies) * 1000, 3),
        p99_ms=round(percentile(latencies, 0.99) * 1000, 3),
    )


async def warm_up(paths: dict[str, dict[str, Op]], settings: Settings) -> None:
    for ops in paths.values():
        for name in OPS:  # put first, so the gets find their keys
            await run_op(ops[name], settings.warmup, 16)


async def run_all(paths: dict[str, dict[str, Op]], settings: Settings) -> list[Result]:
    """Paths interleaved per cell, so each ratio compares runs taken moments apart."""
    results: list[Result] = []
    for concurrency in settings.concurrency:
        for name in OPS:
            for path in PATHS:
                result = await measure(path, name, paths[path][name], settings.ops, concurrency)
                print_row(result, results)
                results.append(result)
    return results


# -- the system under test -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def start_natrium(
    args: list[str], log_file: Path, tracing: bool = False, extra_env: Mapping[str, str] | None = None
) -> asyncio.subprocess.Process:
    """`python -m adapters.cli.main <args>` from the repo root, its stderr going to `log_file`;
    `extra_env` last (bench/tracing.py sets the subject root and the sampler with it)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "NATRIUM_LOG_LEVEL": "warning"}
    env["OTEL_TRACES_EXPORTER"] = "natrium-null" if tracing else "none"
    env.update(extra_env or {})
    with log_file.open("wb") as log:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "adapters.cli.main",
            *args,
            cwd=REPO,
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=log,
            preexec_fn=die_with_parent,
        )


async def stop_process(proc: asyncio.subprocess.Process, timeout: float = 10.0) -> None:
    if proc.returncode is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()


async def wait_until(
    ready: Callable[[], Awaitable[bool]], proc: asyncio.subprocess.Process, what: str, log_file: Path
) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}: {log_file.read_text()[-2000:]}")
        with contextlib.suppress(Exception):
            if await ready():
                return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{what} not ready after {READY_TIMEOUT:g}s: {log_file.read_text()[-2000:]}")


async def state_service_ready(nc: Client) -> bool:
    await nc.request("$SRV.PING.natrium-state", b"", timeout=0.5)
    return True


async def gateway_ready(session: aiohttp.ClientSession, base: str) -> bool:
    async with session.get(f"{base}/v1.0/healthz") as resp:
        return resp.status == 204


@contextlib.asynccontextmanager
async def natrium_processes(
    url: str, nc: Client, session: aiohttp.ClientSession, workdir: Path, tracing: bool = False
) -> AsyncIterator[str]:
    """The state service and the gateway as subprocesses; yields the gateway's base URL."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    procs: list[asyncio.subprocess.Process] = []
    try:
        service_log, gateway_log = workdir / "state.log", workdir / "gateway.log"
        procs.append(await start_natrium(["service", "state", "--nats-url", url], service_log, tracing))
        gateway_args = ["gateway", "--nats-url", url, "--http-port", str(port)]
        procs.append(await start_natrium(gateway_args, gateway_log, tracing))
        await wait_until(lambda: state_service_ready(nc), procs[0], "state service", service_log)
        await wait_until(lambda: gateway_ready(session, base), procs[1], "gateway", gateway_log)
        yield base
    finally:
        await asyncio.gather(*(stop_process(p) for p in procs))


# -- output ------------------------------------------------------------------------------------

HEADER = f"{'op':<4} {'conc':>4}  {'path':<5} {'ops':>6} {'ops/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'x raw':>6}"


def raw_of(result: Result, results: list[Result]) -> Result | None:
    return next(
        (r for r in results if r.path == "raw" and r.op == result.op and r.concurrency == result.concurrency),
        None,
    )


def print_row(result: Result, earlier: list[Result]) -> None:
    raw = raw_of(result, earlier)
    ratio = f"{result.ops_per_s / raw.ops_per_s:6.2f}" if raw and result.path != "raw" else f"{'':6}"
    print(
        f"{result.op:<4} {result.concurrency:>4}  {result.path:<5} {result.ops:>6} {result.ops_per_s:>9.0f} "
        f"{result.p50_ms:>8.2f} {result.p99_ms:>8.2f} {ratio}",
        flush=True,
    )


def ratios(results: list[Result]) -> list[dict[str, Any]]:
    rows = []
    for r in results:
        if r.path != "raw":
            continue
        row: dict[str, Any] = {"op": r.op, "concurrency": r.concurrency}
        for path in GOALS:
            other = next(x for x in results if x.path == path and x.op == r.op and x.concurrency == r.concurrency)
            row[f"{path}_raw"] = round(other.ops_per_s / r.ops_per_s, 3)
        rows.append(row)
    return rows


def print_goals(rows: list[dict[str, Any]]) -> dict[str, bool]:
    print("\nthroughput ratios against raw KV (goals: bus >= 0.5, http >= 0.25; informational only)")
    print(f"{'op':<4} {'conc':>4}  {'bus/raw':>8} {'':4} {'http/raw':>8}")
    for row in rows:
        marks = {p: "ok" if row[f"{p}_raw"] >= goal else "MISS" for p, goal in GOALS.items()}
        print(
            f"{row['op']:<4} {row['concurrency']:>4}  {row['bus_raw']:>8.2f} {marks['bus']:<4} "
            f"{row['http_raw']:>8.2f} {marks['http']}"
        )
    met = {p: all(row[f"{p}_raw"] >= goal for row in rows) for p, goal in GOALS.items()}
    print("goals: " + ", ".join(f"{p} >= {GOALS[p]} x raw: {'met' if ok else 'not met'}" for p, ok in met.items()))
    return met


def environment(nc: Client) -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "nats_server": nc._server_info.get("version"),  # nats-py has no public accessor
        "nats_py": metadata.version("nats-py"),
        "aiohttp": metadata.version("aiohttp"),
        # Anything else busy on the machine shifts the ratios: look here first when they are noisy.
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


# -- main --------------------------------------------------------------------------------------


async def bench(settings: Settings) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="natrium-bench-"))
    server = await EmbeddedNatsServer(workdir / "nats", port=0).start()
    nc: Client | None = None
    try:
        nc = await nats.connect(server.url, name="natrium-bench")
        # Direct gets, like the state store's bucket: both read paths then ask the server the same way.
        kv = await nc.jetstream().create_key_value(KeyValueConfig(bucket=RAW_BUCKET, direct=True))
        connector = aiohttp.TCPConnector(limit=max(settings.concurrency))
        async with aiohttp.ClientSession(connector=connector) as session:
            async with natrium_processes(server.url, nc, session, workdir, settings.tracing) as base:
                env = environment(nc)
                print(
                    f"natrium state bench ({settings.mode}, tracing {'on' if settings.tracing else 'off'}): "
                    f"{settings.ops} ops per cell, "
                    f"concurrency {list(settings.concurrency)}; {json.dumps(env)}"
                )
                paths = {
                    "raw": raw_ops(kv),
                    "bus": bus_ops(BusClient(nc), Subjects()),
                    "http": http_ops(session, base),
                }
                await warm_up(paths, settings)
                print("\n" + HEADER, flush=True)
                started = time.perf_counter()
                results = await run_all(paths, settings)
                elapsed = time.perf_counter() - started
        rows = ratios(results)
        met = print_goals(rows)
        summary = {
            "bench": "natrium-state",
            "mode": settings.mode,
            "tracing": settings.tracing,
            "ops_per_cell": settings.ops,
            "measured_seconds": round(elapsed, 1),
            "env": env,
            "goals": GOALS,
            "goals_met": met,
            "ratios": rows,
            "results": [asdict(r) for r in results],
        }
        print("\n" + json.dumps(summary, separators=(",", ":")))
    finally:
        if nc is not None:
            await nc.close()
        await server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer ops per cell (~30 s instead of ~2 min)")
    parser.add_argument(
        "--tracing", action="store_true", help="record spans in service and gateway (OTEL_TRACES_EXPORTER=natrium-null)"
    )
    args = parser.parse_args()
    settings = QUICK if args.quick else NORMAL
    eventloop.run(bench(dataclasses.replace(settings, tracing=args.tracing)))


if __name__ == "__main__":
    main()
