"""Service invocation latency and throughput: raw NATS, the SDK on the bus, HTTP through two app channels.

Run from the repository root:

    .venv/bin/python bench/invoke.py            # ~1.5 minutes
    .venv/bin/python bench/invoke.py --quick    # ~30 seconds, two short rounds

One run starts an embedded nats-server and, each as its own subprocess, the callees below, then
measures one ~1 KB request body echoed back, at concurrency 1 and 16, for four paths:

    nats     nats-py `nc.request("bench.echo", body)` to a plain nats-py subscriber that responds
             with the body (bench/_echo_server.py): the floor of any request/reply over NATS
    sdk      `Client(nc, app_id="bench").invoke("calc", "echo", body)` to an `App("calc")` whose
             `@app.method("echo")` returns the body (bench/_sdk_app.py): bus-native invocation
    channel  aiohttp `POST http://127.0.0.1:<caller's Dapr port>/v1.0/invoke/orders/method/neworder`:
             the Dapr-style path. Two `natrium run` processes (app ids `caller` and `orders`, each
             in front of bench/_http_app.py); the call goes caller's local Dapr API -> bus ->
             orders' app channel -> orders' HTTP app, and the answer back the same way
    direct   aiohttp `POST http://127.0.0.1:<orders' app port>/neworder`: the same app without natrium,
             the baseline the channel path's added latency is measured against

Every call checks that the body came back unchanged. Cells run for a fixed time, and the paths are
interleaved: each round runs every (concurrency, path) cell once, `channel` right before `direct`,
and the rounds' latencies are pooled. The added latency (channel minus direct, per percentile) is
printed beside Dapr's published sidecar overhead, which was measured on other hardware: read it as
an indication, not a like-for-like comparison. Nothing here asserts on timings; the exit status is
1 only when something cannot be started or a call fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
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
from nats.aio.client import Client as Nats

REPO = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# Shared with the state benchmark next to this file: percentiles, processes, environment.
from state import environment, free_port, percentile, start_natrium, stop_process, wait_until  # noqa: E402

from adapters.sdk import Client  # noqa: E402
from kernel import eventloop  # noqa: E402
from kernel.nats_server import EmbeddedNatsServer  # noqa: E402
from kernel.process import die_with_parent  # noqa: E402
from kernel.subjects import Subjects  # noqa: E402

PATHS = ("nats", "sdk", "channel", "direct")
ECHO_SUBJECT = "bench.echo"
SDK_APP, SDK_METHOD = "calc", "echo"
CALLEE, CALLER = "orders", "caller"
BODY_SIZE = 1024

Op = Callable[[], Awaitable[None]]
"""One benchmarked call."""


@dataclass(frozen=True)
class Settings:
    rounds: int
    """Each round runs every (concurrency, path) cell once; the rounds' latencies are pooled."""
    seconds: float
    """Length of one cell in one round."""
    warmup: int
    """Unmeasured calls per path (at concurrency 16) before the first round."""
    concurrency: tuple[int, ...]
    mode: str


NORMAL = Settings(rounds=5, seconds=1.5, warmup=500, concurrency=(1, 16), mode="normal")
QUICK = Settings(rounds=2, seconds=1.0, warmup=200, concurrency=(1, 16), mode="quick")


# -- Dapr's published figures (/work/shared/reference/dapr-http-api.md, section 11) ------------


@dataclass(frozen=True)
class Reference:
    source: str
    setup: str
    added_ms: dict[str, float | None]
    """What both sidecars together add over a direct call, by percentile."""
    total_ms: dict[str, float] | None = None
    """Latency of the call through Dapr, where published."""


DAPR_REFERENCE = (
    Reference(
        source="Dapr docs v1.0, service invocation performance",
        setup=(
            "3-node Kubernetes (4 cores, 8 GB per node), Fortio at 1000 rps, 1 KB payload, sidecar capped at "
            "0.5 vCPU, mTLS on, tracing sampled at 0.1; baseline = direct call"
        ),
        added_ms={"p50": None, "p90": 1.40, "p99": 2.10},
    ),
    Reference(
        source="Dapr perf report v1.17, service invocation over HTTP",
        setup="Kubernetes (same kind of rig), 16 connections at 1000 QPS, 60k requests, 1 KB payload",
        added_ms={"p50": 1.06, "p90": 1.48, "p99": 2.90},
        total_ms={"p50": 1.59, "p90": 2.38, "p99": 3.89},
    ),
)
REFERENCE_CAVEAT = (
    "Dapr's figures were measured on different hardware (Kubernetes, 4-core nodes), open-loop at 1000 "
    "requests/s, in Go, with mTLS; here everything (client, nats-server, both app channels, both apps) "
    "shares this machine's cores in Python, closed-loop. The comparison is indicative only."
)


# -- the request body --------------------------------------------------------------------------


def make_body(size: int = BODY_SIZE) -> bytes:
    """A JSON order of exactly `size` bytes."""
    empty = json.dumps({"orderId": 42, "item": "bench", "pad": ""}, separators=(",", ":")).encode()
    body = json.dumps({"orderId": 42, "item": "bench", "pad": "x" * (size - len(empty))}, separators=(",", ":"))
    return body.encode()


# -- the four paths ----------------------------------------------------------------------------


def nats_op(nc: Nats, body: bytes) -> Op:
    async def call() -> None:
        reply = await nc.request(ECHO_SUBJECT, body, timeout=10)
        if reply.data != body:
            raise RuntimeError(f"nats: unexpected reply {reply.data[:80]!r}")

    return call


def sdk_op(client: Client, body: bytes) -> Op:
    async def call() -> None:
        response = await client.invoke(SDK_APP, SDK_METHOD, body, timeout=10)
        if response.status != 200 or response.body != body:
            raise RuntimeError(f"sdk: status {response.status}, body {response.body[:80]!r}")

    return call


def http_op(session: aiohttp.ClientSession, url: str, body: bytes, path: str) -> Op:
    json_type = {"Content-Type": "application/json"}

    async def call() -> None:
        async with session.post(url, data=body, headers=json_type) as resp:
            data = await resp.read()
            if resp.status != 200 or data != body:
                raise RuntimeError(f"{path}: status {resp.status}, body {data[:200]!r}")

    return call


# -- measuring ---------------------------------------------------------------------------------


async def run_for(op: Op, seconds: float, concurrency: int) -> tuple[float, list[float]]:
    """`concurrency` workers call until `seconds` are up; (wall seconds, latencies in seconds)."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        while (started := time.perf_counter()) < deadline:
            await op()
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, latencies


async def run_count(op: Op, calls: int, concurrency: int) -> None:
    remaining = iter(range(calls))

    async def worker() -> None:
        for _ in remaining:
            await op()

    await asyncio.gather(*(worker() for _ in range(concurrency)))


@dataclass(frozen=True)
class Result:
    concurrency: int
    path: str
    calls: int
    seconds: float
    calls_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float


def summarize(path: str, concurrency: int, seconds: float, latencies: list[float]) -> Result:
    ordered = sorted(latencies)
    return Result(
        concurrency=concurrency,
        path=path,
        calls=len(ordered),
        seconds=round(seconds, 3),
        calls_per_s=round(len(ordered) / seconds, 1),
        p50_ms=round(statistics.median(ordered) * 1000, 3),
        p90_ms=round(percentile(ordered, 0.90) * 1000, 3),
        p99_ms=round(percentile(ordered, 0.99) * 1000, 3),
    )


async def run_rounds(paths: dict[str, Op], settings: Settings) -> tuple[list[Result], list[dict[str, Any]]]:
    """(pooled results per cell, each round's own p50 of channel and direct)."""
    pooled: dict[tuple[int, str], tuple[float, list[float]]] = {}
    per_round: list[dict[str, Any]] = []
    for number in range(1, settings.rounds + 1):
        for concurrency in settings.concurrency:
            medians: dict[str, float] = {}
            for path in PATHS:
                wall, latencies = await run_for(paths[path], settings.seconds, concurrency)
                seconds, earlier = pooled.get((concurrency, path), (0.0, []))
                pooled[(concurrency, path)] = (seconds + wall, earlier + latencies)
                medians[path] = statistics.median(latencies) * 1000
            per_round.append(
                {
                    "round": number,
                    "concurrency": concurrency,
                    "channel_p50_ms": round(medians["channel"], 3),
                    "direct_p50_ms": round(medians["direct"], 3),
                    "added_p50_ms": round(medians["channel"] - medians["direct"], 3),
                    "loadavg_1m": round(os.getloadavg()[0], 2),
                }
            )
        print(f"  round {number}/{settings.rounds} done, load average {os.getloadavg()[0]:.2f}", flush=True)
    results = [
        summarize(path, concurrency, *pooled[(concurrency, path)])
        for concurrency in settings.concurrency
        for path in PATHS
    ]
    return results, per_round


# -- the system under test -------------------------------------------------------------------


async def start_script(script: str, args: list[str], log_file: Path) -> asyncio.subprocess.Process:
    """`python bench/<script> <args>` from the repo root, its stderr going to `log_file`."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "NATRIUM_LOG_LEVEL": "warning"}
    with log_file.open("wb") as log:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            str(BENCH / script),
            *args,
            cwd=REPO,
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=log,
            preexec_fn=die_with_parent,
        )


async def answers(nc: Nats, subject: str) -> bool:
    """A request on `subject` gets a reply (no responders fails at once until the callee subscribed)."""
    await nc.request(subject, b"ping", timeout=0.5)
    return True


async def is_up(log_file: Path) -> bool:
    """`natrium run` prints "app <id> is up: ..." on stderr once the app, its channel and its API are up."""
    return " is up: " in log_file.read_text(errors="replace")


@dataclass(frozen=True)
class Endpoints:
    channel_url: str
    direct_url: str


@contextlib.asynccontextmanager
async def callees(url: str, nc: Nats, workdir: Path) -> AsyncIterator[Endpoints]:
    """Echo server, SDK app and two `natrium run` apps as subprocesses, all stopped on the way out."""
    procs: list[asyncio.subprocess.Process] = []
    try:
        logs = {name: workdir / f"{name}.log" for name in ("echo", "sdk", CALLEE, CALLER)}
        runs: dict[str, tuple[int, int]] = {}
        procs.append(await start_script("_echo_server.py", [url, ECHO_SUBJECT], logs["echo"]))
        procs.append(await start_script("_sdk_app.py", [url], logs["sdk"]))
        for app_id in (CALLEE, CALLER):
            app_port, dapr_port = free_port(), free_port()
            runs[app_id] = (app_port, dapr_port)
            args = [
                "run",
                "--app-id",
                app_id,
                "--app-port",
                str(app_port),
                "--dapr-http-port",
                str(dapr_port),
                "--nats-url",
                url,
                "--",
                sys.executable,
                str(BENCH / "_http_app.py"),
            ]
            procs.append(await start_natrium(args, logs[app_id]))
        sdk_subject = Subjects.from_env().invoke(SDK_APP, "/" + SDK_METHOD)
        await asyncio.gather(
            wait_until(lambda: answers(nc, ECHO_SUBJECT), procs[0], "echo server", logs["echo"]),
            wait_until(lambda: answers(nc, sdk_subject), procs[1], "SDK app", logs["sdk"]),
            wait_until(lambda: is_up(logs[CALLEE]), procs[2], f"natrium run {CALLEE}", logs[CALLEE]),
            wait_until(lambda: is_up(logs[CALLER]), procs[3], f"natrium run {CALLER}", logs[CALLER]),
        )
        yield Endpoints(
            channel_url=f"http://127.0.0.1:{runs[CALLER][1]}/v1.0/invoke/{CALLEE}/method/neworder",
            direct_url=f"http://127.0.0.1:{runs[CALLEE][0]}/neworder",
        )
    finally:
        await asyncio.gather(*(stop_process(p) for p in procs), return_exceptions=True)


# -- output ------------------------------------------------------------------------------------

HEADER = f"{'conc':>4}  {'path':<8} {'calls':>7} {'calls/s':>9} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8}"
PERCENTILES = ("p50", "p90", "p99")


def print_results(results: list[Result]) -> None:
    print("\n" + HEADER)
    for r in results:
        print(
            f"{r.concurrency:>4}  {r.path:<8} {r.calls:>7} {r.calls_per_s:>9.0f} "
            f"{r.p50_ms:>8.2f} {r.p90_ms:>8.2f} {r.p99_ms:>8.2f}"
        )


def added_latency(results: list[Result]) -> list[dict[str, Any]]:
    """Channel minus direct, per concurrency and percentile."""
    rows = []
    for concurrency in sorted({r.concurrency for r in results}):
        channel = next(r for r in results if r.path == "channel" and r.concurrency == concurrency)
        direct = next(r for r in results if r.path == "direct" and r.concurrency == concurrency)
        row: dict[str, Any] = {"concurrency": concurrency}
        for p in PERCENTILES:
            row[f"added_{p}_ms"] = round(getattr(channel, f"{p}_ms") - getattr(direct, f"{p}_ms"), 3)
        rows.append(row)
    return rows


def fmt(value: float | None) -> str:
    return f"{value:+8.2f}" if value is not None else f"{'n/a':>8}"


def print_added(rows: list[dict[str, Any]], per_round: list[dict[str, Any]]) -> None:
    print("\nadded latency of the Dapr-style path: channel minus direct (ms)")
    print(f"{'':<46} {'p50':>8} {'p90':>8} {'p99':>8}")
    for row in rows:
        label = f"natrium, this machine, concurrency {row['concurrency']}"
        print(f"{label:<46} " + " ".join(fmt(row[f"added_{p}_ms"]) for p in PERCENTILES))
    for ref in DAPR_REFERENCE:
        print(f"{ref.source:<46} " + " ".join(fmt(ref.added_ms[p]) for p in PERCENTILES))
    for ref in DAPR_REFERENCE:
        total = ""
        if ref.total_ms:
            total = "; through Dapr: " + ", ".join(f"{p} {ref.total_ms[p]}" for p in PERCENTILES) + " ms"
        print(f"  [{ref.source}] {ref.setup}{total}")
    print(f"  note: {REFERENCE_CAVEAT}")
    print(
        "  note: concurrency 1 is the closer match to Dapr's setup (a call that does not queue behind others);"
        " at concurrency 16 this closed loop saturates the 2 cores, so its added latency is mostly queueing."
    )
    if len({r["round"] for r in per_round}) > 1:
        for concurrency in sorted({r["concurrency"] for r in per_round}):
            spread = [r["added_p50_ms"] for r in per_round if r["concurrency"] == concurrency]
            print(
                f"  added p50 per round, concurrency {concurrency}: "
                + ", ".join(f"{v:.2f}" for v in spread)
                + " ms (spread = noise from the machine's load)"
            )


def print_ratios(results: list[Result]) -> list[dict[str, Any]]:
    """Throughput and p50 of each path against raw NATS, for orientation."""
    rows = []
    print("\nagainst raw NATS request/reply (throughput ratio, p50 ratio)")
    print(f"{'conc':>4}  " + " ".join(f"{p + ' x/s':>12} {p + ' x p50':>12}" for p in PATHS[1:]))
    for concurrency in sorted({r.concurrency for r in results}):
        raw = next(r for r in results if r.path == "nats" and r.concurrency == concurrency)
        row: dict[str, Any] = {"concurrency": concurrency}
        cells = []
        for path in PATHS[1:]:
            other = next(r for r in results if r.path == path and r.concurrency == concurrency)
            row[f"{path}_throughput_x"] = round(other.calls_per_s / raw.calls_per_s, 3)
            row[f"{path}_p50_x"] = round(other.p50_ms / raw.p50_ms, 2)
            cells.append(f"{row[f'{path}_throughput_x']:>12.2f} {row[f'{path}_p50_x']:>12.1f}")
        print(f"{concurrency:>4}  " + " ".join(cells))
        rows.append(row)
    return rows


# -- main --------------------------------------------------------------------------------------


async def bench(settings: Settings) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="natrium-bench-invoke-"))
    server = await EmbeddedNatsServer(workdir / "nats", port=0).start()
    nc: Nats | None = None
    try:
        nc = await nats.connect(server.url, name="natrium-bench")
        body = make_body()
        connector = aiohttp.TCPConnector(limit=max(settings.concurrency))
        async with aiohttp.ClientSession(connector=connector) as session:
            async with callees(server.url, nc, workdir) as endpoints:
                env = environment(nc)
                print(
                    f"natrium invoke bench ({settings.mode}): {len(body)}-byte body, {settings.rounds} round(s) of "
                    f"{settings.seconds:g} s per cell, concurrency {list(settings.concurrency)}; {json.dumps(env)}",
                    flush=True,
                )
                paths = {
                    "nats": nats_op(nc, body),
                    "sdk": sdk_op(Client(nc, app_id="bench"), body),
                    "channel": http_op(session, endpoints.channel_url, body, "channel"),
                    "direct": http_op(session, endpoints.direct_url, body, "direct"),
                }
                for op in paths.values():
                    await run_count(op, settings.warmup, 16)
                started = time.perf_counter()
                results, per_round = await run_rounds(paths, settings)
                elapsed = time.perf_counter() - started
                env["loadavg_1m_end"] = round(os.getloadavg()[0], 2)
        print_results(results)
        ratios = print_ratios(results)
        added = added_latency(results)
        print_added(added, per_round)
        print(f"\nload average (1 min): {env['loadavg_1m']} at the start, {env['loadavg_1m_end']} at the end")
        summary = {
            "bench": "natrium-invoke",
            "mode": settings.mode,
            "body_bytes": len(body),
            "rounds": settings.rounds,
            "seconds_per_cell": settings.seconds,
            "measured_seconds": round(elapsed, 1),
            "env": env,
            "results": [asdict(r) for r in results],
            "vs_nats": ratios,
            "added_channel_over_direct": added,
            "per_round": per_round,
            "dapr_reference": [asdict(ref) for ref in DAPR_REFERENCE],
            "dapr_reference_caveat": REFERENCE_CAVEAT,
        }
        print("\n" + json.dumps(summary, separators=(",", ":")))
    finally:
        if nc is not None:
            await nc.close()
        await server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two short rounds (~30 s instead of ~1.5 min)")
    args = parser.parse_args()
    eventloop.run(bench(QUICK if args.quick else NORMAL))


if __name__ == "__main__":
    main()
