"""Output binding round trips: natrium (bus and HTTP gateway) vs calling the same target directly.

Run from the repository root:

    .venv/bin/python bench/bindings.py            # ~1 minute
    .venv/bin/python bench/bindings.py --quick    # ~20 seconds

One run starts an embedded nats-server, the bindings service and the HTTP gateway (subprocesses,
as `natrium up` runs them) and an HTTP echo target (a subprocess of its own), then measures, for
each target at concurrency 1 and 16:

    direct  the target from Python: aiohttp POST to the echo server / redis-py SET+GET... one call
    bus     `BusClient.request` to `natrium.bindings.<name>.invoke`
    http    aiohttp POST /v1.0/bindings/<name> to the gateway

Targets: `http` (POST of a small JSON body to the echo server) and `redis` (`create` of a small
value; needs Redis on 127.0.0.1:6379, skipped when it is down). It prints a table, the bus/direct
and http/direct ratios, and a one-line JSON summary. Nothing is asserted on timings.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from kernel import eventloop  # noqa: E402
from kernel.client import BusClient  # noqa: E402
from kernel.nats_server import EmbeddedNatsServer  # noqa: E402

ECHO_APP = """
import os
from aiohttp import web
async def echo(request):
    return web.Response(body=await request.read(), content_type="application/json")
app = web.Application()
app.router.add_post("/echo", echo)
web.run_app(app, host="127.0.0.1", port=int(os.environ["PORT"]), print=None, access_log=None)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@contextlib.asynccontextmanager
async def process(*args: str, env: dict[str, str], ready: Callable[[], Awaitable[bool]]) -> AsyncIterator[None]:
    proc = await asyncio.create_subprocess_exec(*args, env=env, cwd=REPO)
    try:
        deadline = time.monotonic() + 30
        while not await ready():
            if proc.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{args} did not start")
            await asyncio.sleep(0.1)
        yield
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()


async def measure(op: Callable[[int], Awaitable[None]], count: int, concurrency: int) -> dict[str, float]:
    for i in range(min(200, count)):  # warm up connections and caches
        await op(i)
    counter = iter(range(count))
    latencies: list[float] = []

    async def worker() -> None:
        for i in counter:
            started = time.perf_counter()
            await op(i)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "ops": count,
        "ops_s": count / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
    }


async def main(quick: bool) -> None:
    count = 600 if quick else 3000
    redis_up = reachable(6379)
    echo_port, gateway_port = free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp, "components")
        folder.mkdir()
        (folder / "bindings.yaml").write_text(
            f"""apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {{name: web}}
spec:
  type: bindings.http
  metadata:
  - {{name: url, value: "http://127.0.0.1:{echo_port}/echo"}}
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {{name: cache}}
spec:
  type: bindings.redis
  metadata:
  - {{name: redisHost, value: "127.0.0.1:6379"}}
"""
        )
        server = await EmbeddedNatsServer(Path(tmp, "nats"), port=0).start()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NATS_", "NATRIUM_", "DAPR_"))}
        env.update(
            {"PYTHONPATH": str(REPO), "NATS_URL": server.url, "NATRIUM_LOG_LEVEL": "warning", "PORT": str(echo_port)}
        )
        import nats

        nc = await nats.connect(server.url)
        bus = BusClient(nc, timeout=30)

        async def echo_up() -> bool:
            return reachable(echo_port)

        async def service_up() -> bool:
            try:
                await bus.request("natrium.bindings._.inputs", {})
                return True
            except Exception:
                return False

        async def gateway_up() -> bool:
            return reachable(gateway_port)

        cli = [sys.executable, "-m", "adapters.cli.main"]
        results: list[dict[str, Any]] = []
        try:
            async with (
                process(sys.executable, "-c", ECHO_APP, env=env, ready=echo_up),
                process(*cli, "service", "bindings", "--components", str(folder), env=env, ready=service_up),
                process(*cli, "gateway", "--http-port", str(gateway_port), env=env, ready=gateway_up),
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session,
            ):
                body = b'{"n":1}'
                redis_client = None
                if redis_up:
                    import redis.asyncio as aioredis

                    redis_client = aioredis.Redis(host="127.0.0.1", port=6379, max_connections=64)

                async def http_direct(i: int) -> None:
                    async with session.post(f"http://127.0.0.1:{echo_port}/echo", data=body) as r:
                        await r.read()

                async def redis_direct(i: int) -> None:
                    assert redis_client is not None
                    await redis_client.set(f"natrium-bench-{i % 100}", body)

                def bus_op(name: str, metadata: Callable[[int], dict[str, str]]) -> Callable[[int], Awaitable[None]]:
                    subject = f"natrium.bindings.{name}.invoke"

                    async def op(i: int) -> None:
                        await bus.request(subject, {"operation": "create", "data": body, "metadata": metadata(i)})

                    return op

                def http_op(name: str, metadata: Callable[[int], dict[str, str]]) -> Callable[[int], Awaitable[None]]:
                    url = f"http://127.0.0.1:{gateway_port}/v1.0/bindings/{name}"

                    async def op(i: int) -> None:
                        call = {"operation": "create", "data": {"n": 1}, "metadata": metadata(i)}
                        async with session.post(url, json=call) as r:
                            await r.read()
                            if r.status >= 300:
                                raise RuntimeError(f"gateway answered {r.status}")

                    return op

                targets: list[tuple[str, Callable[[int], Awaitable[None]], Callable[[int], dict[str, str]]]] = [
                    ("http", http_direct, lambda i: {})
                ]
                if redis_up:
                    targets.append(("redis", redis_direct, lambda i: {"key": f"natrium-bench-{i % 100}"}))
                names = {"http": "web", "redis": "cache"}
                for target, direct, metadata in targets:
                    for concurrency in (1, 16):
                        cell = {"target": target, "conc": concurrency}
                        paths = {
                            "direct": direct,
                            "bus": bus_op(names[target], metadata),
                            "http": http_op(names[target], metadata),
                        }
                        for path, op in paths.items():
                            figures = await measure(op, count, concurrency)
                            results.append({**cell, "path": path, **figures})
                if redis_client is not None:
                    await redis_client.delete(*[f"natrium-bench-{i}" for i in range(100)])
                    await redis_client.aclose()
        finally:
            await nc.close()
            await server.stop()

    print(f"{'target':7} {'conc':>4} {'path':6} {'ops':>6} {'ops/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for r in results:
        print(
            f"{r['target']:7} {r['conc']:>4} {r['path']:6} {r['ops']:>6} {r['ops_s']:>9.0f} "
            f"{r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f}"
        )
    ratios: dict[str, float] = {}
    print("\nratios (throughput against calling the target directly, same run)")
    for r in results:
        if r["path"] == "direct":
            continue
        base = next(
            x for x in results if x["target"] == r["target"] and x["conc"] == r["conc"] and x["path"] == "direct"
        )
        key = f"{r['target']}/c{r['conc']}/{r['path']}"
        ratios[key] = r["ops_s"] / base["ops_s"]
        print(f"  {key:18} {ratios[key]:.2f} x direct")
    if not redis_up:
        print("  (redis skipped: nothing listens on 127.0.0.1:6379)")
    print(json.dumps({"bench": "bindings", "quick": quick, "count": count, "results": results, "ratios": ratios}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer ops per cell")
    eventloop.run(main(parser.parse_args().quick))
