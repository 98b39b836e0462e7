"""An unmodified Dapr SDK gRPC app (`dapr.ext.grpc.App`) under `natrium run --app-protocol grpc`.

The pub/sub and bindings blocks run in-process on this module's subject root; `natrium run`
serves the app's Dapr gRPC API (with an API token) and calls the app's `AppCallback` service for
invocations, pub/sub events and input binding events.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Self

import aiohttp
import grpc
import pytest
from dapr.proto.runtime.v1 import dapr_pb2_grpc, state_pb2
from nats.aio.client import Client

from kernel.components import Component, ComponentSet
from kernel.nats_server import EmbeddedNatsServer
from kernel.subjects import Subjects
from services.bindings import BindingsService
from services.pubsub.service import PubsubService
from tests.conftest import FAST_RETRIES, NATRIUM, free_port, subprocess_env, unique, wait_until
from tests.grpc_runtime import dapr_client, error_reason
from tests.natrium_process import NatriumProcess, run_ports

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

APP_ID = "grpc-app"
TOKEN = "grpc-test-token"


class Run(NatriumProcess):
    """`natrium run --app-protocol grpc ... -- python -m tests.apps.grpc_app`; the run picks its Dapr ports."""

    def __init__(self, url: str, root: str, sick_file: Path) -> None:
        self.app_port = free_port()
        self.sick_file = sick_file
        self.http_port = self.grpc_port = 0
        args = [
            *NATRIUM,
            "run",
            *("--app-id", APP_ID, "--app-port", str(self.app_port), "--app-protocol", "grpc"),
            *("--nats-url", url, "--root", root, "--app-port-timeout", "30"),
            *("--", sys.executable, "-m", "tests.apps.grpc_app"),
        ]
        health = {
            "NATRIUM_ENABLE_APP_HEALTH_CHECK": "1",
            "NATRIUM_APP_HEALTH_PROBE_INTERVAL": "0.2",
            "NATRIUM_APP_HEALTH_THRESHOLD": "2",
            "SICK_FILE": str(sick_file),
        }
        env = subprocess_env(NATRIUM_LOG_LEVEL="warning", DAPR_API_TOKEN=TOKEN, **health)
        super().__init__(args, " is up: ", env)

    async def start(self, timeout: float = 60.0) -> Self:
        await super().start(timeout)
        self.http_port, self.grpc_port = run_ports(self.ready_line)
        return self

    def client(self) -> Any:
        return dapr_client(self.http_port, self.grpc_port, token=TOKEN)


@pytest.fixture(scope="module")
async def run(
    nats_server: EmbeddedNatsServer, nc: Client, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Run]:
    subjects = Subjects(unique("root"))
    topics = Component(name="pubsub", type="pubsub.jetstream", metadata=FAST_RETRIES)
    tick = Component(name="tick", type="bindings.cron", metadata={"schedule": "@every 1s"})
    pubsub = PubsubService(nc, subjects=subjects, components=ComponentSet(components=[topics]))
    bindings = BindingsService(nc, subjects=subjects, components=ComponentSet(components=[tick]))
    await pubsub.start()
    await bindings.start()
    runtime = await Run(nats_server.url, subjects.root, tmp_path_factory.mktemp("grpc-app") / "sick").start()
    try:
        yield runtime
    finally:
        await runtime.stop()
        await bindings.stop()
        await pubsub.stop()
        js = nc.jetstream()
        for stream in [pubsub.stores["pubsub"].name, *(b.events.name for b in bindings.stores.values() if b.events)]:
            await js.delete_stream(stream)


def received(client: Any) -> list[dict[str, Any]]:
    return json.loads(client.invoke_method(APP_ID, "received", b"").data)


async def test_grpc_app_answers_invocations_from_grpc_and_http_callers(run: Run) -> None:
    with run.client() as client:
        reply = client.invoke_method(APP_ID, "echo", b"hi")
        assert reply.data == b"echo:hi" and reply.content_type == "text/plain"
        with pytest.raises(grpc.RpcError) as missing:
            client.invoke_method(APP_ID, "no-such-method", b"")
        assert missing.value.code() == grpc.StatusCode.UNIMPLEMENTED
    # The same app through Dapr's HTTP API: daprd relays a gRPC app's answer as an HTTP one.
    async with aiohttp.ClientSession(headers={"dapr-api-token": TOKEN}) as session:
        url = f"http://127.0.0.1:{run.http_port}/v1.0/invoke/{APP_ID}/method/echo"
        async with session.post(url, data=b"over http") as r:
            assert r.status == 200 and await r.read() == b"echo:over http"


async def test_grpc_app_receives_pubsub_events_and_retry_redelivers(run: Run) -> None:
    with run.client() as client:
        # In a thread: the pubsub service answering it runs on this test's event loop.
        publish = client.publish_event
        await asyncio.to_thread(publish, "pubsub", "orders", json.dumps({"n": 1}), data_content_type="application/json")
        await asyncio.to_thread(publish, "pubsub", "flaky", "again", data_content_type="text/plain")

        async def delivered() -> bool:
            events = received(client)
            flaky = [e for e in events if e["topic"] == "flaky"]
            return any(e["topic"] == "orders" for e in events) and len(flaky) >= 2

        await wait_until(delivered, timeout=15, interval=0.2)
        events = received(client)
    order = next(e for e in events if e["topic"] == "orders")
    assert json.loads(order["data"]) == {"n": 1} and order["type"] == "com.dapr.event.sent"
    flaky = [e for e in events if e["topic"] == "flaky"]
    # RETRY from the app: the same event again, then SUCCESS ends it.
    assert flaky[0]["id"] == flaky[1]["id"] and flaky[0]["data"] == "again"


async def test_grpc_app_receives_input_binding_events(run: Run) -> None:
    with run.client() as client:

        async def ticked() -> bool:
            return any(e["topic"] == "tick" for e in received(client))

        await wait_until(ticked, timeout=15, interval=0.2)


async def test_api_token_is_required_on_the_grpc_api(run: Run) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{run.grpc_port}") as channel:
        stub = dapr_pb2_grpc.DaprStub(channel)
        request = state_pb2.GetStateRequest(store_name="statestore", key="k")
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.GetState(request)
        assert missing.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert error_reason(missing.value) == "Unauthorized"
        with pytest.raises(grpc.aio.AioRpcError) as wrong:
            await stub.GetState(request, metadata=[("dapr-api-token", "wrong")])
        assert wrong.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_streaming_subscription_under_natrium_run_needs_no_metadata(run: Run) -> None:
    """Under `natrium run` the app id is the consumer group, as with a sidecar: `subscribe()` as is."""
    topic = unique("stream-")

    def consume() -> list[int]:
        with run.client() as client:
            subscription = client.subscribe("pubsub", topic)
            try:
                for n in range(2):
                    client.publish_event("pubsub", topic, json.dumps({"n": n}), data_content_type="application/json")
                seen = []
                while len(seen) < 2:
                    message = subscription.next_message()
                    data = message.data()
                    seen.append((json.loads(data) if isinstance(data, str) else data)["n"])
                    subscription.respond_success(message)
                return seen
            finally:
                subscription.close()

    assert sorted(await asyncio.wait_for(asyncio.to_thread(consume), 30)) == [0, 1]


def test_a_binding_event_response_becomes_the_state_and_output_work_it_asks_for() -> None:
    from dapr.proto.common.v1.common_pb2 import Etag, StateItem
    from dapr.proto.runtime.v1.appcallback_pb2 import BindingEventResponse

    from adapters.grpc.app_bindings import _work

    reply = BindingEventResponse(
        store_name="statestore",
        states=[StateItem(key="k", value=b"v", etag=Etag(value="3"), metadata={"ttlInSeconds": "9"})],
        to=["queue", "mail"],
        data=b"payload",
        concurrency=BindingEventResponse.PARALLEL,
    )
    work = _work(reply)
    assert work.store == "statestore" and work.targets == ["queue", "mail"] and work.data == b"payload"
    assert work.items == [{"key": "k", "value": b"v", "etag": "3", "metadata": {"ttlInSeconds": "9"}}]
    assert work.parallel and not _work(BindingEventResponse())


async def test_a_grpc_app_failing_its_health_check_gets_no_calls_until_it_recovers(run: Run) -> None:
    def answers() -> bool:
        with run.client() as client:
            try:
                return client.invoke_method(APP_ID, "echo", b"?").data == b"echo:?"
            except grpc.RpcError:
                return False

    async def refused() -> bool:
        return not await asyncio.to_thread(answers)

    async def served() -> bool:
        return await asyncio.to_thread(answers)

    run.sick_file.touch()
    try:
        await wait_until(refused, timeout=10, interval=0.2)  # HealthCheck fails: it left its queue group
    finally:
        run.sick_file.unlink()
    await wait_until(served, timeout=10, interval=0.2)
