"""Faults on a 3-node JetStream cluster: nothing acknowledged is lost.

A real cluster (deploy/local-cluster's config, three nats-server processes on loopback), R3
streams and buckets, two replicas of the state, pubsub, workflow and actors services and two
gateways as `natrium` subprocesses, and a steady bounded load of state saves (bus and HTTP),
publishes with two consumer groups, invocations, actor turns that save state and a workflow.
While it runs, first the nats-server leading the state stream is killed with SIGKILL and
restarted on its store, then one replica of each service and one gateway are killed. Clients
retry what their resiliency policy retries (timeouts, no responders, a refused
connection); anything else fails the test. Afterwards every acknowledged state write reads back
with its last value and every acknowledged publish reached each group. The counts are printed.
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from nats.aio.client import Client

from adapters.actors.placement import actor_streams
from adapters.delivery import Event
from adapters.invocation import InvocationServer, InvokeRequest, InvokeResponse, invoke
from adapters.sdk import Actor, App
from adapters.sdk import Client as SdkClient
from adapters.sdk.workflow import DaprWorkflowClient, WorkflowStatus
from kernel.client import BusClient
from kernel.errors import NatriumError
from kernel.subjects import Subjects
from tests.apps.workflow_worker import expected_chain
from tests.conftest import NATRIUM, REPO, free_port, subprocess_env, unique, wait_until

sys.path.insert(0, str(REPO))
from deploy.local_cluster import LocalCluster  # noqa: E402

pytestmark = [pytest.mark.faults, pytest.mark.slow]

COMPONENTS = """\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: statestore
spec:
  type: state.nats-kv
  version: v1
  metadata:
  - name: replicas
    value: "3"
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: pubsub
spec:
  type: pubsub.jetstream
  version: v1
  metadata:
  - name: replicas
    value: "3"
  - name: ackWait
    value: 2s
  - name: backOff
    value: 100ms
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: dapr
spec:
  type: workflow.dapr
  version: v1
  metadata:
  - name: replicas
    value: "3"
  - name: workItemAckWait
    value: 3s
"""
KEYS = 20
CHAIN_STEPS = 20
STATE_STREAM = "KV_state-statestore"
LANE_PAUSE = 0.2
RETRY_PAUSE = 0.1
ATTEMPTS = 150  # 15 s of retries: longer than a leader election after a node dies


@dataclass
class Tally:
    """What the load sent and what came back, per kind of operation."""

    sent: Counter[str] = field(default_factory=Counter)
    acknowledged: Counter[str] = field(default_factory=Counter)
    retried: Counter[str] = field(default_factory=Counter)
    last_value: dict[str, int] = field(default_factory=dict)
    published: set[int] = field(default_factory=set)
    actor_value: dict[str, int] = field(default_factory=dict)
    delivered: dict[str, list[int]] = field(default_factory=lambda: {"g1": [], "g2": []})


async def with_retries(kind: str, tally: Tally, call: Any) -> Any:
    """The clients' resiliency policy: retry what is retryable, fail on anything else."""
    tally.sent[kind] += 1
    last: Exception | None = None
    for _ in range(ATTEMPTS):
        try:
            result = await call()
        except NatriumError as exc:
            if not exc.retryable and exc.code != "ERR_DIRECT_INVOKE":
                raise
            last = exc
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            last = exc
        else:
            tally.acknowledged[kind] += 1
            return result
        tally.retried[kind] += 1
        await asyncio.sleep(RETRY_PAUSE)
    raise AssertionError(f"{kind}: no success after {ATTEMPTS} attempts; last error: {last!r}")


class Register(Actor):
    """Keeps the last number it was given: a turn that saves state, idempotent under retries."""

    async def put(self, n: int) -> int:
        self.state.set("n", n)
        return n


def actor_errors_retryable(call: Any) -> Any:
    """A turn whose state save met a leader election fails with an ERR_ACTOR_* code; a caller's
    resiliency policy retries it like any other transient failure."""

    async def retried() -> Any:
        try:
            return await call()
        except NatriumError as exc:
            if exc.code.startswith("ERR_ACTOR"):
                raise NatriumError(exc.code, exc.message, retryable=True) from None
            raise

    return retried


async def read_back_actors(bus: BusClient, subjects: Subjects, tally: Tally) -> dict[str, int]:
    """Each actor's saved number, from the actors service (leader reads on R3)."""
    get = subjects.block("actors", "Register", "state-get")

    async def one(actor_id: str) -> tuple[str, int | None]:
        reply = await with_retries("read-back", tally, lambda: bus.request(get, {"actorId": actor_id, "key": "n"}))
        return actor_id, json.loads(reply["data"]) if reply.get("found") else None

    pairs = await asyncio.gather(*map(one, sorted(tally.actor_value)))
    return {actor_id: value for actor_id, value in pairs if value is not None}


async def read_back(bus: BusClient, subjects: Subjects, tally: Tally) -> dict[str, int]:
    """Every written key's value, read with `consistency: strong` (from the stream leader): an
    eventual read may be served by a replica that is still catching up after the fault."""
    get = subjects.block("state", "statestore", "get")

    async def one(key: str) -> tuple[str, int | None]:
        reply = await with_retries("read-back", tally, lambda: bus.request(get, {"key": key, "consistency": "strong"}))
        return key, int(reply["data"]) if reply.get("found") else None

    return {key: value for key, value in await asyncio.gather(*map(one, sorted(tally.last_value))) if value is not None}


class Processes:
    """The natrium subprocesses of the test, by name."""

    def __init__(self, cluster: LocalCluster, components: Path, root: str) -> None:
        self.cluster = cluster
        self.components = components
        self.root = root
        self.procs: dict[str, asyncio.subprocess.Process] = {}
        self.gateway_ports: list[int] = []

    def env(self, **extra: str) -> dict[str, str]:
        return subprocess_env(
            NATS_URL=self.cluster.url,
            NATS_USER=self.cluster.user,
            NATS_PASSWORD=self.cluster.password,
            NATRIUM_LOG_LEVEL="warning",
            NATRIUM_ACTORS_REPLICAS="3",
            **extra,
        )

    async def start(self, name: str, *args: str) -> None:
        self.procs[name] = await asyncio.create_subprocess_exec(
            *NATRIUM, *args, "--root", self.root, "--components", str(self.components), cwd=REPO, env=self.env()
        )

    async def start_worker(self, log: Path) -> None:
        """A workflow worker app (tests/apps/workflow_worker.py) on the cluster."""
        env = self.env(NATRIUM_ROOT=self.root, WORKFLOW_LOG=str(log), WORKFLOW_STEP_SECONDS="0.2")
        self.procs["worker"] = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.apps.workflow_worker", cwd=REPO, env=env
        )

    async def start_all(self) -> None:
        for i in (1, 2):
            await self.start(f"state{i}", "service", "state")
            await self.start(f"pubsub{i}", "service", "pubsub")
            await self.start(f"workflow{i}", "service", "workflow")
            await self.start(f"actors{i}", "service", "actors")
            port = free_port()
            self.gateway_ports.append(port)
            await self.start(f"gateway{i}", "gateway", "--http-port", str(port))

    def kill(self, name: str) -> None:
        self.procs[name].send_signal(signal.SIGKILL)

    async def stop(self) -> None:
        for proc in self.procs.values():
            if proc.returncode is None:
                proc.terminate()
        for proc in self.procs.values():
            await proc.wait()


async def test_nothing_acknowledged_is_lost_when_servers_and_replicas_die(tmp_path: Path) -> None:
    cluster = await LocalCluster(tmp_path / "cluster").start()
    (tmp_path / "components").mkdir()
    (tmp_path / "components" / "components.yaml").write_text(COMPONENTS)
    root = unique("root")
    subjects = Subjects(root)
    processes = Processes(cluster, tmp_path / "components", root)
    clients: list[Client] = []
    tally = Tally()
    try:
        await processes.start_all()
        nc = await cluster.connect(max_reconnect_attempts=-1, reconnect_time_wait=0.1)
        app_nc = await cluster.connect(max_reconnect_attempts=-1, reconnect_time_wait=0.1)
        clients += [nc, app_nc]
        bus = BusClient(nc, timeout=2.0)
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3))

        async def echo(request: InvokeRequest) -> InvokeResponse:
            return InvokeResponse(200, {"content-type": "application/json"}, request.body)

        await InvocationServer(app_nc, subjects, "echo", echo).start()
        actor_host = App("registers")
        actor_host.register_actor(Register)
        actor_caller = SdkClient(nc, app_id="caller", subjects=subjects)
        subscribers = SdkClient(app_nc, app_id="checker", subjects=subjects)

        def recorder(group: str) -> Any:
            async def handler(event: Event) -> None:
                tally.delivered[group].append(int(event.data["n"]))

            return handler

        async def services_answer() -> bool:
            try:
                await bus.request(subjects.block("state", "statestore", "get"), {"key": "probe"})
                await bus.request(subjects.block("pubsub", "pubsub", "publish"), {"topic": "warmup", "data": 0})
                await bus.request(subjects.block("actors", "Register", "state-get"), {"actorId": "p", "key": "n"})
                for port in processes.gateway_ports:
                    async with session.get(f"http://127.0.0.1:{port}/v1.0/healthz") as resp:
                        if resp.status != 204:
                            return False
                return True
            except (NatriumError, aiohttp.ClientError):
                return False

        await wait_until(services_answer, timeout=60, interval=0.3)
        await actor_host.start(client=SdkClient(app_nc, app_id="registers", subjects=subjects))
        for stream in actor_streams(subjects):  # made by the actors service from NATRIUM_ACTORS_REPLICAS
            assert (await nc.jetstream().stream_info(stream)).config.num_replicas == 3, stream
        for group in ("g1", "g2"):
            await subscribers.subscribe("pubsub", "orders", recorder(group), group=group)
        steps_log = tmp_path / "steps.jsonl"
        await processes.start_worker(steps_log)

        async def worker_ready() -> bool:
            return steps_log.exists() and '"ready"' in steps_log.read_text()

        await wait_until(worker_ready, timeout=60, interval=0.3)
        workflows = DaprWorkflowClient(nc, subjects=subjects, timeout=5)
        instance = await with_retries(
            "workflow", tally, lambda: workflows.schedule_new_workflow("chain", input=CHAIN_STEPS)
        )

        async def save_bus(i: int) -> None:
            key = f"k{i % KEYS}"
            subject = subjects.block("state", "statestore", "save")
            await with_retries("state-bus", tally, lambda: bus.request(subject, {"items": [{"key": key, "value": i}]}))
            tally.last_value[key] = max(tally.last_value.get(key, -1), i)

        async def save_http(i: int) -> None:
            key = f"h{i % KEYS}"
            ports = processes.gateway_ports
            attempts = 0

            async def post() -> None:
                # A client with two gateway addresses moves to the other one when a call fails.
                nonlocal attempts
                port = ports[(i + attempts) % len(ports)]
                attempts += 1
                async with session.post(
                    f"http://127.0.0.1:{port}/v1.0/state/statestore", json=[{"key": key, "value": i}]
                ) as resp:
                    if resp.status != 204:
                        raise NatriumError("ERR_STATE_SAVE", await resp.text(), retryable=resp.status >= 500)

            await with_retries("state-http", tally, post)
            tally.last_value[key] = max(tally.last_value.get(key, -1), i)

        async def publish(i: int) -> None:
            subject = subjects.block("pubsub", "pubsub", "publish")
            await with_retries("publish", tally, lambda: bus.request(subject, {"topic": "orders", "data": {"n": i}}))
            tally.published.add(i)

        async def call(i: int) -> None:
            request = InvokeRequest(app_id="echo", method="/echo", body=json.dumps({"n": i}).encode())
            reply = await with_retries("invoke", tally, lambda: invoke(nc, subjects, request, timeout=2.0))
            assert json.loads(reply.body) == {"n": i}

        async def actor_put(i: int) -> None:
            actor_id = f"a{i % KEYS}"
            put = actor_errors_retryable(lambda: actor_caller.actor(Register, actor_id).put(i))
            assert await with_retries("actor", tally, put) == i
            tally.actor_value[actor_id] = i

        done = asyncio.Event()

        # Saves to one key are serial (one writer per key), so the last acknowledged value is known.
        async def lane(start: int) -> None:
            i = start
            while not done.is_set():
                await asyncio.gather(save_bus(i), save_http(i), publish(i), call(i), actor_put(i))
                await asyncio.sleep(LANE_PAUSE)
                i += KEYS

        async def faults() -> None:
            await asyncio.sleep(2.0)
            # The server that leads the state stream: its followers must elect a new leader.
            info = await nc.jetstream().stream_info(STATE_STREAM)
            assert info.cluster is not None and info.cluster.leader
            leader = [n.name for n in cluster.layout.nodes].index(info.cluster.leader)
            await cluster.kill(leader)
            await asyncio.sleep(3.0)
            await cluster.restart(leader)
            await asyncio.sleep(2.0)
            for name in ("state1", "pubsub1", "workflow1", "actors1", "gateway1"):
                processes.kill(name)
            await asyncio.sleep(3.0)
            done.set()

        await asyncio.gather(faults(), *(lane(start) for start in range(KEYS)))

        async def all_delivered() -> bool:
            return all(tally.published <= set(got) for got in tally.delivered.values())

        await wait_until(all_delivered, timeout=60, interval=0.5)
        finished = await workflows.wait_for_workflow_completion(instance, timeout_in_seconds=90)
        stored = await read_back(bus, subjects, tally)
        lost_writes = {k: (v, stored.get(k)) for k, v in tally.last_value.items() if stored.get(k) != v}
        actor_state = await read_back_actors(bus, subjects, tally)
        lost_turns = {k: (v, actor_state.get(k)) for k, v in tally.actor_value.items() if actor_state.get(k) != v}
        lost = {g: len(tally.published - set(got)) for g, got in tally.delivered.items()}
        duplicates = {g: len(got) - len(set(got)) for g, got in tally.delivered.items()}
        print(
            "\ncluster faults: "
            + json.dumps(
                {
                    "sent": dict(tally.sent),
                    "acknowledged": dict(tally.acknowledged),
                    "retried": dict(tally.retried),
                    "delivered": {g: len(got) for g, got in tally.delivered.items()},
                    "lost_state_writes": len(lost_writes),
                    "lost_actor_states": len(lost_turns),
                    "lost_events": lost,
                    "duplicate_deliveries": duplicates,
                    "workflow": f"{CHAIN_STEPS}-step chain {finished.runtime_status.name}",
                }
            )
        )
        # The figures first, so a failing run still shows what it saw.
        assert finished.runtime_status == WorkflowStatus.COMPLETED, finished
        assert finished.serialized_output is not None
        assert json.loads(finished.serialized_output) == expected_chain(CHAIN_STEPS)
        assert not lost_writes, lost_writes
        assert not lost_turns, lost_turns
        assert all(n == 0 for n in lost.values()), lost
        assert tally.acknowledged["invoke"] == tally.sent["invoke"]
        assert tally.acknowledged["actor"] == tally.sent["actor"]
        await actor_host.stop()
        await session.close()
    finally:
        await processes.stop()
        for client in clients:
            await client.close()
        await cluster.stop()


# -- a network partition ------------------------------------------------------------------------


class Network:
    """Each node in its own network namespace, all on one bridge that the test's side also joins.

    Cutting a node's link to the bridge partitions it from the other nodes and from every client,
    as a failed switch port would; bringing the link up heals it.
    """

    def __init__(self, size: int) -> None:
        tag = uuid.uuid4().hex[:6]
        self.bridge = f"nbr{tag}"
        self.subnet = f"10.{random.randint(64, 127)}.{random.randint(0, 255)}"
        self.namespaces = [f"nns{tag}{i}" for i in range(size)]
        self.links = [f"nv{tag}{i}" for i in range(size)]
        self.hosts = [f"{self.subnet}.{i + 1}" for i in range(size)]

    @staticmethod
    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    def build(self) -> None:
        self.ip("link", "add", self.bridge, "type", "bridge")
        self.ip("addr", "add", f"{self.subnet}.254/24", "dev", self.bridge)
        self.ip("link", "set", self.bridge, "up")
        for ns, link, host in zip(self.namespaces, self.links, self.hosts, strict=True):
            self.ip("netns", "add", ns)
            self.ip("link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", ns)
            self.ip("link", "set", link, "master", self.bridge, "up")
            self.ip("netns", "exec", ns, "ip", "addr", "add", f"{host}/24", "dev", "eth0")
            self.ip("netns", "exec", ns, "ip", "link", "set", "eth0", "up")
            self.ip("netns", "exec", ns, "ip", "link", "set", "lo", "up")

    def cut(self, index: int) -> None:
        self.ip("link", "set", self.links[index], "down")

    def heal(self, index: int) -> None:
        self.ip("link", "set", self.links[index], "up")

    def remove(self) -> None:
        for ns in self.namespaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)


@pytest.fixture
def network() -> Iterator[Network]:
    net = Network(3)
    try:
        net.build()
    except (OSError, subprocess.CalledProcessError) as exc:
        net.remove()
        pytest.skip(f"network namespaces are not available here: {exc}")
    yield net
    net.remove()


async def test_a_partitioned_node_loses_no_acknowledged_write(tmp_path: Path, network: Network) -> None:
    cluster = LocalCluster(tmp_path / "cluster", hosts=network.hosts, netns=network.namespaces)
    await cluster.start()
    (tmp_path / "components").mkdir()
    (tmp_path / "components" / "components.yaml").write_text(COMPONENTS)
    root = unique("root")
    subjects = Subjects(root)
    processes = Processes(cluster, tmp_path / "components", root)
    tally = Tally()
    nc: Client | None = None
    try:
        await processes.start("state1", "service", "state")
        await processes.start("state2", "service", "state")
        nc = await cluster.connect(max_reconnect_attempts=-1, reconnect_time_wait=0.1)
        assert nc is not None
        bus = BusClient(nc, timeout=2.0)
        save, get = subjects.block("state", "statestore", "save"), subjects.block("state", "statestore", "get")

        async def answering() -> bool:
            try:
                await bus.request(get, {"key": "probe"})
                return True
            except NatriumError:
                return False

        await wait_until(answering, timeout=60, interval=0.3)
        done = asyncio.Event()

        async def lane(start: int) -> None:
            i = start
            while not done.is_set():
                key = f"k{start}"
                body = {"items": [{"key": key, "value": i}]}
                await with_retries("state-bus", tally, functools.partial(bus.request, save, body))
                tally.last_value[key] = i
                await asyncio.sleep(LANE_PAUSE)
                i += KEYS

        async def partition() -> None:
            await asyncio.sleep(2.0)
            # Cut off the store's stream leader: the majority must elect a new one and go on.
            info = await nc.jetstream().stream_info(STATE_STREAM)
            assert info.cluster is not None and info.cluster.leader
            leader = [n.name for n in cluster.layout.nodes].index(info.cluster.leader)
            network.cut(leader)
            await asyncio.sleep(5.0)
            network.heal(leader)
            await asyncio.sleep(3.0)
            done.set()

        await asyncio.gather(partition(), *(lane(k) for k in range(KEYS)))
        stored = await read_back(bus, subjects, tally)
        lost = {k: (v, stored.get(k)) for k, v in tally.last_value.items() if stored.get(k) != v}
        print(
            "\ncluster partition: "
            + json.dumps(
                {
                    "sent": tally.sent["state-bus"],
                    "acknowledged": tally.acknowledged["state-bus"],
                    "retried": tally.retried["state-bus"],
                    "lost_state_writes": len(lost),
                }
            )
        )
        assert not lost, lost
    finally:
        await processes.stop()
        if nc is not None:
            await nc.close()
        await cluster.stop()


# -- natrium up on an existing cluster -----------------------------------------------------------


async def test_up_with_nats_url_joins_the_cluster_instead_of_embedding_a_server(tmp_path: Path) -> None:
    from tests.test_cli import Up, curl

    cluster = await LocalCluster(tmp_path / "cluster").start()
    env = subprocess_env(NATS_USER=cluster.user, NATS_PASSWORD=cluster.password)
    up = Up("--nats-url", cluster.url, "--data-dir", str(tmp_path / "unused"), "--root", unique("up"), env=env)
    try:
        await up.start()
        assert "(external)" in "".join(up.stderr)
        assert not (tmp_path / "unused").exists()  # no embedded server, no store of its own
        status, _, _ = await curl("POST", f"{up.base}/v1.0/state/statestore", [{"key": "joined", "value": 1}])
        assert status == 204
        status, _, body = await curl("GET", f"{up.base}/v1.0/state/statestore/joined")
        assert (status, body) == (200, b"1")
    finally:
        await up.stop()
        await cluster.stop()
