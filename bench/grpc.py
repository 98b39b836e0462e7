"""Dapr's gRPC API vs the HTTP gateway vs the bus, against raw nats-py, in one run.

Run from the repository root:

    .venv/bin/python bench/grpc.py            # ~1 minute
    .venv/bin/python bench/grpc.py --quick    # ~20 seconds

One run starts an embedded nats-server and, each as its own subprocess, the state service, the
gateway (`natrium gateway --grpc-port`, HTTP and gRPC in one process, as `natrium up` runs it), a
bus-native callee `App("calc")` with method `echo` (bench/_sdk_app.py) and a plain nats-py echo
subscriber (bench/_echo_server.py). It then measures, at concurrency 1 and 16, for a fixed time per
cell:

    state save / get   raw   nats-py `kv.put` / `kv.get` on a JetStream KV bucket
                       bus   `BusClient.request` to `natrium.state.statestore.{save,get}`
                       http  aiohttp POST /v1.0/state/statestore, GET .../<key>
                       grpc  grpc.aio `Dapr/SaveState`, `Dapr/GetState` (the generated stub)
    invoke (~1 KB)     raw   nats-py request to the echo subscriber
                       bus   `invoke()` (adapters/invocation.py) to app `calc`
                       http  aiohttp POST /v1.0/invoke/calc/method/echo
                       grpc  grpc.aio `Dapr/InvokeService` to app `calc`, method `echo`

The gRPC client is grpc.aio's own stub, not the SDK's synchronous `DaprClient`: the figures are the
adapter's, not a thread pool's. It prints a table, each path's throughput as a ratio of raw nats-py
in the same run, and a one-line JSON summary. Nothing here asserts on timings.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
from collections.abc import Awaitable, Callable
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path, and this file is named like the
# `grpc` package: take the folder off before importing it.
BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH]
REPO = BENCH.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402
import grpc  # noqa: E402
from dapr.proto.common.v1 import common_pb2  # noqa: E402
from dapr.proto.runtime.v1 import dapr_pb2_grpc, invoke_pb2, state_pb2  # noqa: E402
from google.protobuf import any_pb2  # noqa: E402
from nats.aio.client import Client  # noqa: E402
from nats.js.api import KeyValueConfig  # noqa: E402

from adapters.invocation import InvokeRequest, invoke  # noqa: E402
from kernel import eventloop  # noqa: E402
from kernel.client import BusClient  # noqa: E402
from kernel.connection import ConnectionSettings, connect  # noqa: E402
from kernel.nats_server import EmbeddedNatsServer  # noqa: E402
from kernel.process import die_with_parent  # noqa: E402
from kernel.subjects import Subjects  # noqa: E402

STORE = "statestore"
ECHO_SUBJECT = "bench.grpc.echo"
PATHS = ("raw", "bus", "http", "grpc")
BODY = b"x" * 1024
Op = Callable[[int], Awaitable[None]]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def value(i: int) -> bytes:
    return json.dumps({"n": i}, separators=(",", ":")).encode()


async def measure(op: Op, concurrency: int, seconds: float) -> dict[str, float]:
    """Run `op` from `concurrency` workers for `seconds`; ops/s and latency percentiles."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    counter = iter(range(10**9))

    async def worker() -> None:
        while time.perf_counter() < deadline:
            i = next(counter)
            started = time.perf_counter()
            await op(i % 1000)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "ops_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 3),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 3),
    }


async def start(args: list[str], log: Path) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONPATH": str(REPO), "NATRIUM_LOG_LEVEL": "warning"}
    with log.open("wb") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable, *args, cwd=REPO, env=env, stdout=out, stderr=out, preexec_fn=die_with_parent
        )


async def wait_ready(nc: Client, http_port: int, grpc_port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    bus = BusClient(nc, timeout=1)
    while True:
        try:
            await bus.request(Subjects().block("state", STORE, "get"), {"key": "ready"})
            await invoke(nc, Subjects(), InvokeRequest(app_id="calc", method="/echo", body=b"."), timeout=1)
            for port in (http_port, grpc_port):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise RuntimeError("the runtime did not get ready; see the logs") from None
            await asyncio.sleep(0.2)


def state_ops(
    nc: Client, kv: object, session: aiohttp.ClientSession, stub: object, base: str
) -> dict[str, dict[str, Op]]:
    bus = BusClient(nc)
    subjects = Subjects()
    save, get = subjects.block("state", STORE, "save"), subjects.block("state", STORE, "get")
    dapr: dapr_pb2_grpc.DaprStub = stub  # type: ignore[assignment]

    async def raw_save(i: int) -> None:
        await kv.put(f"k{i}", value(i))  # type: ignore[attr-defined]

    async def raw_get(i: int) -> None:
        await kv.get(f"k{i}")  # type: ignore[attr-defined]

    async def bus_save(i: int) -> None:
        await bus.request(save, {"items": [{"key": f"k{i}", "value": value(i)}]})

    async def bus_get(i: int) -> None:
        await bus.request(get, {"key": f"k{i}"})

    async def http_save(i: int) -> None:
        async with session.post(f"{base}/v1.0/state/{STORE}", data=b'[{"key":"k%d","value":%s}]' % (i, value(i))) as r:
            await r.read()

    async def http_get(i: int) -> None:
        async with session.get(f"{base}/v1.0/state/{STORE}/k{i}") as r:
            await r.read()

    async def grpc_save(i: int) -> None:
        item = common_pb2.StateItem(key=f"k{i}", value=value(i))
        await dapr.SaveState(state_pb2.SaveStateRequest(store_name=STORE, states=[item]))

    async def grpc_get(i: int) -> None:
        await dapr.GetState(state_pb2.GetStateRequest(store_name=STORE, key=f"k{i}"))

    return {
        "state save": {"raw": raw_save, "bus": bus_save, "http": http_save, "grpc": grpc_save},
        "state get": {"raw": raw_get, "bus": bus_get, "http": http_get, "grpc": grpc_get},
    }


def invoke_ops(nc: Client, session: aiohttp.ClientSession, stub: object, base: str) -> dict[str, Op]:
    subjects = Subjects()
    dapr: dapr_pb2_grpc.DaprStub = stub  # type: ignore[assignment]
    message = common_pb2.InvokeRequest(
        method="echo",
        data=any_pb2.Any(value=BODY),
        http_extension=common_pb2.HTTPExtension(verb=common_pb2.HTTPExtension.POST),
    )

    async def raw(i: int) -> None:
        await nc.request(ECHO_SUBJECT, BODY, timeout=5)

    async def bus(i: int) -> None:
        await invoke(nc, subjects, InvokeRequest(app_id="calc", method="/echo", body=BODY))

    async def http(i: int) -> None:
        async with session.post(f"{base}/v1.0/invoke/calc/method/echo", data=BODY) as r:
            await r.read()

    async def grpc_call(i: int) -> None:
        reply = await dapr.InvokeService(invoke_pb2.InvokeServiceRequest(id="calc", message=message))
        if reply.data.value != BODY:
            raise RuntimeError("gRPC invoke: the body did not come back")

    return {"raw": raw, "bus": bus, "http": http, "grpc": grpc_call}


async def main(quick: bool) -> None:
    seconds = 2.0 if quick else 5.0
    levels = (1, 16)
    tmp = Path(tempfile.mkdtemp(prefix="natrium-bench-grpc-"))
    server = await EmbeddedNatsServer(tmp / "nats", port=0).start()
    http_port, grpc_port = free_port(), free_port()
    procs: list[asyncio.subprocess.Process] = []
    try:
        base = [*("-m", "adapters.cli.main")]
        procs.append(await start([*base, "service", "state", "--nats-url", server.url], tmp / "state.log"))
        gateway = [*base, "gateway", "--nats-url", server.url, "--http-port", str(http_port)]
        procs.append(await start([*gateway, "--grpc-port", str(grpc_port)], tmp / "gateway.log"))
        procs.append(await start(["bench/_sdk_app.py", server.url], tmp / "sdk.log"))
        procs.append(await start(["bench/_echo_server.py", server.url, ECHO_SUBJECT], tmp / "echo.log"))
        nc = await connect(ConnectionSettings(url=server.url, name="bench-grpc"))
        await wait_ready(nc, http_port, grpc_port)
        kv = await nc.jetstream().create_key_value(KeyValueConfig(bucket="bench-grpc-raw"))
        connector = aiohttp.TCPConnector(limit=64)
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel,
        ):
            stub = dapr_pb2_grpc.DaprStub(channel)
            http_base = f"http://127.0.0.1:{http_port}"
            cells = state_ops(nc, kv, session, stub, http_base)
            cells["invoke"] = invoke_ops(nc, session, stub, http_base)
            results: dict[str, dict[int, dict[str, dict[str, float]]]] = {}
            for name, paths in cells.items():
                for level in levels:
                    for path in PATHS:
                        await measure(paths[path], level, 0.3)  # warm-up
                        results.setdefault(name, {}).setdefault(level, {})[path] = await measure(
                            paths[path], level, seconds
                        )
        await nc.close()
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(proc.wait(), 10)
        await server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    report(results, quick)


def report(results: dict[str, dict[int, dict[str, dict[str, float]]]], quick: bool) -> None:
    print(f"{'operation':<11} {'conc':>4} {'path':<5} {'ops/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'x raw':>6}")
    ratios: dict[str, dict[str, float]] = {}
    for name, levels in results.items():
        for level, paths in levels.items():
            raw = paths["raw"]["ops_per_s"]
            for path, figures in paths.items():
                ratio = figures["ops_per_s"] / raw if raw else 0.0
                ratios.setdefault(f"{name} c{level}", {})[path] = round(ratio, 3)
                print(
                    f"{name:<11} {level:>4} {path:<5} {figures['ops_per_s']:>9.0f} "
                    f"{figures['p50_ms']:>8.3f} {figures['p99_ms']:>8.3f} {ratio:>6.2f}"
                )
    summary = {
        "bench": "grpc",
        "mode": "quick" if quick else "normal",
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "ratios_vs_raw": ratios,
        "results": {name: {str(c): p for c, p in levels.items()} for name, levels in results.items()},
    }
    print(json.dumps(summary, separators=(",", ":")))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 s per cell instead of 5 s")
    eventloop.run(main(parser.parse_args().quick))
