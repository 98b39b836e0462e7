"""Workflow throughput and latency, against a raw JetStream work-item round trip in the same run.

Run from the repository root:

    .venv/bin/python bench/workflows.py            # ~1.5 minutes
    .venv/bin/python bench/workflows.py --quick    # ~30 seconds
    .venv/bin/python bench/workflows.py --quick --storage memory   # what the disk costs

One run starts an embedded nats-server, the workflow service (`natrium service workflow`) and
worker processes (bench/_workflow_worker.py), then measures, with 1 and then 2 workers:

    chain5   workflows/s of a 5-activity chain, `--concurrency` instances in flight
    fanout   activities/s of 100-wide fan-outs joined with when_all
    empty    start-to-finish latency p50/p99 of an empty workflow, one at a time (1 worker)
    raw      the baseline: a JetStream publish (acked) consumed by a pull consumer and acked,
             one at a time (latency) and `--concurrency` in flight (round trips/s)

A workflow step costs several such round trips (wake-up, history read, commit, relay), so the
ratio to raw says how close to the transport the engine runs. Dapr's published v1.17 workflow
figures are printed beside ours; they come from a different rig (Kubernetes, 4-core nodes), so
read them as orders of magnitude. Ends with a one-line JSON summary; nothing here asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import api

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from adapters.sdk.workflow import DaprWorkflowClient, WorkflowStatus  # noqa: E402
from kernel import eventloop  # noqa: E402
from kernel.errors import NatriumError  # noqa: E402
from kernel.nats_server import EmbeddedNatsServer  # noqa: E402
from kernel.process import die_with_parent  # noqa: E402
from kernel.pull import PullConsumer  # noqa: E402
from kernel.subjects import Subjects  # noqa: E402

ROOT = "benchwf"
# dapr/dapr tests/perf/report v1.17 (see ../shared/reference/peers.md): one replica, 5-activity chains.
DAPR_V117 = {
    "parallel_110vu_wf_per_s": 97.9,
    "series_350vu_wf_per_s": 57.4,
    "constant_30vu_wf_per_s": 28.0,
    "scale_500vu_wf_per_s": 35.45,
    "parallel_110vu_p50_s": 1.06,
}


COMPONENT = """\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: dapr
spec:
  type: workflow.dapr
  version: v1
  metadata:
  - name: storage
    value: {storage}
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


# -- processes ---------------------------------------------------------------------------------


async def spawn(*args: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONPATH": str(REPO), "NATRIUM_LOG_LEVEL": "warning"}
    return await asyncio.create_subprocess_exec(
        *args, cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, preexec_fn=die_with_parent
    )


async def start_worker(url: str) -> asyncio.subprocess.Process:
    proc = await spawn(sys.executable, str(REPO / "bench" / "_workflow_worker.py"), url, ROOT)
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    if line.strip() != b"ready":
        raise RuntimeError(f"worker did not start: {line!r}")
    return proc


@contextlib.asynccontextmanager
async def service(url: str, client: DaprWorkflowClient, storage: str, workdir: Path) -> AsyncIterator[None]:
    components = workdir / "components"
    components.mkdir(exist_ok=True)
    (components / "workflow.yaml").write_text(COMPONENT.format(storage=storage))
    proc = await spawn(
        sys.executable,
        "-m",
        "adapters.cli.main",
        "service",
        "workflow",
        "--nats-url",
        url,
        "--root",
        ROOT,
        "--components",
        str(components),
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                await client.get_workflow_state("probe")
                break
            except NatriumError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
        yield
    finally:
        await stop(proc)


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


# -- measurements ------------------------------------------------------------------------------


async def run_many(client: DaprWorkflowClient, name: str, input: Any, count: int, concurrency: int) -> float:
    """Start `count` instances with at most `concurrency` in flight; returns the elapsed seconds."""
    slots = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with slots:
            instance_id = await client.schedule_new_workflow(name, input=input)
            state = await client.wait_for_workflow_completion(instance_id, timeout_in_seconds=120)
            if state.runtime_status is not WorkflowStatus.COMPLETED:
                raise RuntimeError(f"{name} ended {state.runtime_status}: {state.failure_details}")

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(count)))
    return time.perf_counter() - started


async def latencies(call: Callable[[], Awaitable[None]], count: int) -> list[float]:
    out = []
    for _ in range(count):
        started = time.perf_counter()
        await call()
        out.append((time.perf_counter() - started) * 1000)
    return out


async def raw_round_trips(nc: Client, count: int, concurrency: int, storage: str) -> tuple[list[float], float]:
    """A work item through JetStream the way the engine moves one: publish, pull, ack."""
    js = nc.jetstream()
    await js.add_stream(
        api.StreamConfig(
            name="BENCH_RAW",
            subjects=["bench.raw"],
            retention=api.RetentionPolicy.WORK_QUEUE,
            storage=api.StorageType.MEMORY if storage == "memory" else api.StorageType.FILE,
        )
    )
    await js.add_consumer("BENCH_RAW", api.ConsumerConfig(durable_name="raw", ack_policy=api.AckPolicy.EXPLICIT))
    waiting: dict[bytes, asyncio.Future[None]] = {}

    async def on_msg(msg: Msg) -> None:
        await msg.ack()
        future = waiting.pop(msg.data, None)
        if future is not None:
            future.set_result(None)

    consumer = PullConsumer(nc, "BENCH_RAW", "raw", on_msg, max_inflight=256)
    await consumer.start()
    counter = iter(range(10**9))

    async def trip() -> None:
        key = str(next(counter)).encode()
        future = asyncio.get_running_loop().create_future()
        waiting[key] = future
        await js.publish("bench.raw", key)
        await future

    try:
        single = await latencies(trip, min(count, 500))
        slots = asyncio.Semaphore(concurrency)

        async def limited() -> None:
            async with slots:
                await trip()

        started = time.perf_counter()
        await asyncio.gather(*(limited() for _ in range(count)))
        rate = count / (time.perf_counter() - started)
    finally:
        await consumer.stop()
    return single, rate


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="natrium-wfbench-"))
    server = await EmbeddedNatsServer(workdir / "nats", port=0).start()
    workers: list[asyncio.subprocess.Process] = []
    results: dict[str, Any] = {}
    try:
        nc = await nats.connect(server.url, name="bench-workflows")
        client = DaprWorkflowClient(nc, subjects=Subjects(ROOT), timeout=30)
        env = {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "nats_server": nc._server_info.get("version"),
            "loadavg_1m": round(os.getloadavg()[0], 2),
        }
        mode = "quick" if args.quick else "normal"
        print(f"natrium workflow bench ({mode}, {args.storage} storage): {json.dumps(env)}", flush=True)
        single, raw_rate = await raw_round_trips(nc, args.chains * 10, args.concurrency, args.storage)
        results["raw"] = {
            "round_trip_p50_ms": round(statistics.median(single), 3),
            "round_trip_p99_ms": round(percentile(single, 0.99), 3),
            "round_trips_per_s": round(raw_rate),
        }
        print(f"raw JetStream work-item round trip: {results['raw']}", flush=True)
        async with service(server.url, client, args.storage, workdir):
            workers.append(await start_worker(server.url))
            await run_many(client, "chain5", 0, 20, args.concurrency)  # warm-up

            async def empty() -> None:
                instance_id = await client.schedule_new_workflow("empty")
                await client.wait_for_workflow_completion(instance_id)

            lat = await latencies(empty, args.empties)
            results["empty"] = {
                "p50_ms": round(statistics.median(lat), 2),
                "p99_ms": round(percentile(lat, 0.99), 2),
                "x_raw_p50": round(statistics.median(lat) / results["raw"]["round_trip_p50_ms"], 1),
            }
            print(f"empty workflow start-to-finish (1 worker): {results['empty']}", flush=True)
            for count in (1, 2):
                if len(workers) < count:
                    workers.append(await start_worker(server.url))
                elapsed = await run_many(client, "chain5", 0, args.chains, args.concurrency)
                chain = {
                    "workflows_per_s": round(args.chains / elapsed, 1),
                    "activities_per_s": round(args.chains * 5 / elapsed),
                }
                elapsed = await run_many(client, "fanout", 100, args.fanouts, min(args.concurrency, 8))
                fan = {"activities_per_s": round(args.fanouts * 100 / elapsed)}
                results[f"workers_{count}"] = {"chain5": chain, "fanout100": fan}
                print(f"{count} worker(s): chain5 {chain}; fanout100 {fan}", flush=True)
            for proc in workers:  # before the service, so no worker calls a service that is gone
                await stop(proc)
        await nc.close()
    finally:
        for proc in workers:
            await stop(proc)
        await server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print("\ndapr v1.17 published (Kubernetes, 1 replica, 5-activity chains; a different rig):")
    for key, value in DAPR_V117.items():
        print(f"  {key:<28} {value}")
    ours = results["workers_1"]["chain5"]["workflows_per_s"]
    print(f"natrium chain5, 1 worker, {args.concurrency} in flight: {ours} wf/s")
    return {
        "bench": "natrium-workflows",
        "mode": "quick" if args.quick else "normal",
        "storage": args.storage,
        "concurrency": args.concurrency,
        "env": env,
        "results": results,
        "dapr_v1_17": DAPR_V117,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer workflows per measurement")
    parser.add_argument("--concurrency", type=int, default=64, help="workflows in flight (chain5)")
    parser.add_argument(
        "--storage",
        choices=("file", "memory"),
        default="file",
        help="the workflow streams' storage (component metadata `storage`); memory shows what disk writes cost",
    )
    args = parser.parse_args()
    args.chains = 200 if args.quick else 1000
    args.fanouts = 5 if args.quick else 20
    args.empties = 100 if args.quick else 300
    summary = eventloop.run(bench(args))
    print("\n" + json.dumps(summary, separators=(",", ":")))


if __name__ == "__main__":
    main()
