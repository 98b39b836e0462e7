"""Dapr's gRPC API on `natrium up`, driven by the official Python SDK's `DaprClient`, unchanged.

One `natrium up` subprocess serves the whole module (HTTP and gRPC on free ports); the tests seed
what Dapr's API cannot write (secrets, configuration) over the bus, as an operator would.
"""

from __future__ import annotations

import asyncio
import json
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from dapr.clients.grpc._request import TransactionalStateOperation, TransactionOperationType
from dapr.clients.grpc._response import UnlockResponseStatus as Unlock
from dapr.clients.grpc._state import StateItem
from dapr.proto.common.v1 import common_pb2
from dapr.proto.runtime.v1 import actors_pb2, dapr_pb2_grpc, jobs_pb2, state_pb2
from google.protobuf import any_pb2
from nats.aio.client import Client

from adapters.sdk import Actor, App
from adapters.sdk import Client as SdkClient
from kernel.client import BusClient
from kernel.connection import ConnectionSettings, connect
from kernel.subjects import Subjects
from tests.conftest import NATRIUM, free_port, subprocess_env, unique, wait_until
from tests.grpc_runtime import dapr_client, error_reason
from tests.natrium_process import NatriumProcess

pytestmark = [
    pytest.mark.slow,
    # The SDK warns on every alpha API (lock) and on gRPC invocation; neither is a natrium fault.
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

BINDING = """\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: disk
spec:
  type: bindings.localstorage
  version: v1
  metadata:
  - name: rootPath
    value: {root}
"""


class Up(NatriumProcess):
    """`natrium up` with its HTTP, gRPC and NATS ports chosen here."""

    def __init__(self, tmp: Path) -> None:
        self.http_port, self.grpc_port, self.nats_port = free_port(), free_port(), free_port()
        components = tmp / "components"
        components.mkdir()
        (components / "disk.yaml").write_text(BINDING.format(root=tmp / "files"))
        args = [
            *NATRIUM,
            "up",
            *("--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port)),
            *("--nats-port", str(self.nats_port), "--data-dir", str(tmp / "data")),
            *("--components", str(components)),
        ]
        super().__init__(args, "Ctrl-C stops everything", subprocess_env(NATRIUM_LOG_LEVEL="warning"))

    def client(self) -> Any:
        return dapr_client(self.http_port, self.grpc_port)


@pytest.fixture(scope="module")
async def up(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Up]:
    runtime = await Up(tmp_path_factory.mktemp("grpc-up")).start()
    yield runtime
    await runtime.stop()


@pytest.fixture(scope="module")
async def bus(up: Up) -> AsyncIterator[BusClient]:
    """A bus client on the runtime's own NATS, for what Dapr's API cannot write."""
    nc: Client = await connect(ConnectionSettings(url=f"nats://127.0.0.1:{up.nats_port}", name="grpc-tests"))
    yield BusClient(nc, timeout=10)
    await nc.close()


async def test_state_round_trips_through_the_official_grpc_client(up: Up) -> None:
    key = unique("k")
    with up.client() as client:
        client.save_state("statestore", key, b"v1")
        first = client.get_state("statestore", key)
        assert first.data == b"v1" and first.etag
        client.save_state("statestore", key, "v2", etag=first.etag)
        second = client.get_state("statestore", key)
        assert second.data == b"v2" and second.etag != first.etag

        other = unique("k")
        client.save_bulk_state("statestore", [StateItem(other, "o1"), StateItem(key + "-x", "x")])
        items = {i.key: i for i in client.get_bulk_state("statestore", [key, other, "missing-" + key]).items}
        assert items[key].data == b"v2" and items[key].etag == second.etag
        assert items[other].data == b"o1" and items["missing-" + key].data == b""

        client.execute_state_transaction(
            "statestore",
            [
                TransactionalStateOperation(key=other, data="o2"),
                TransactionalStateOperation(key=key + "-x", operation_type=TransactionOperationType.delete),
            ],
        )
        assert client.get_state("statestore", other).data == b"o2"
        assert client.get_state("statestore", key + "-x").data == b""

        client.delete_state("statestore", key, etag=second.etag)
        assert client.get_state("statestore", key).data == b""
        # The SDK has no DeleteBulkState wrapper: its generated stub, as any gRPC client calls it.
        states = [common_pb2.StateItem(key=other)]
        client._stub.DeleteBulkState(state_pb2.DeleteBulkStateRequest(store_name="statestore", states=states))
        assert client.get_state("statestore", other).data == b""

    # The same bus, the same store: a value saved over HTTP reads back over gRPC as its JSON bytes.
    async with aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{up.http_port}/v1.0/state/statestore"
        async with session.post(url, json=[{"key": key, "value": {"n": 1}}]) as r:
            assert r.status == 204
    with up.client() as client:
        assert json.loads(client.get_state("statestore", key).data) == {"n": 1}


async def test_state_errors_carry_daprd_grpc_codes(up: Up) -> None:
    key = unique("k")
    with up.client() as client:
        client.save_state("statestore", key, "v1")
        etag = client.get_state("statestore", key).etag
        client.save_state("statestore", key, "v2")

        with pytest.raises(grpc.RpcError) as stale:
            client.save_state("statestore", key, "v3", etag=etag)
        assert stale.value.code() == grpc.StatusCode.ABORTED
        assert error_reason(stale.value) == "ERR_STATE_SAVE"
        assert client.get_state("statestore", key).data == b"v2"

        with pytest.raises(grpc.RpcError) as stale_delete:
            client.delete_state("statestore", key, etag=etag)
        assert stale_delete.value.code() == grpc.StatusCode.ABORTED

        with pytest.raises(grpc.RpcError) as invalid:
            client.save_state("statestore", key, "v3", etag="not-a-revision")
        assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT

        with pytest.raises(grpc.RpcError) as unknown:
            client.get_state("no-such-store", key)
        assert unknown.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_reason(unknown.value) == "DAPR_STATE_NOT_FOUND"
        assert "no-such-store" in unknown.value.details()

        with pytest.raises(grpc.RpcError) as query:
            client.query_state("statestore", json.dumps({"filter": {}}))
        assert query.value.code() == grpc.StatusCode.INTERNAL
        assert error_reason(query.value) == "DAPR_STATE_QUERYING_NOT_SUPPORTED"


async def test_publish_and_bulk_publish(up: Up) -> None:
    with up.client() as client:
        client.publish_event("pubsub", "grpc-orders", json.dumps({"id": 1}), data_content_type="application/json")
        reply = client.publish_events("pubsub", "grpc-orders", ["a", "b"], data_content_type="text/plain")
        assert reply.failed_entries == []
        with pytest.raises(grpc.RpcError) as unknown:
            client.publish_event("no-such-pubsub", "t", "x")
        assert unknown.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_reason(unknown.value) == "DAPR_PUBSUB_NOT_FOUND"


async def test_streaming_subscription_delivers_and_honours_retry(up: Up) -> None:
    """`DaprClient.subscribe()`: events down a bidirectional stream, answers back up it."""
    topic = unique("stream-")

    def consume() -> list[tuple[str, int]]:
        seen: list[tuple[str, int]] = []
        with up.client() as client:
            subscription = client.subscribe("pubsub", topic, metadata={"consumerID": "grpc-streamer"})
            try:
                for n in range(3):
                    client.publish_event("pubsub", topic, json.dumps({"n": n}), data_content_type="application/json")
                while len(seen) < 4:
                    message = subscription.next_message()
                    n = json.loads(message.data())["n"] if isinstance(message.data(), str) else message.data()["n"]
                    seen.append((message.topic(), n))
                    if n == 1 and sum(1 for _, m in seen if m == 1) == 1:
                        subscription.respond_retry(message)  # comes back once more
                    else:
                        subscription.respond_success(message)
            finally:
                subscription.close()
        return seen

    seen = await asyncio.to_thread(consume)
    assert sorted(n for _, n in seen) == [0, 1, 1, 2]
    assert {t for t, _ in seen} == {topic}


async def test_secrets_lock_binding_and_metadata(up: Up, bus: BusClient, tmp_path: Path) -> None:
    name = unique("s")
    subjects = Subjects()
    await bus.request(subjects.block("secrets", "secretstore", "put"), {"name": name, "value": {"user": "u"}})
    resource, owner = unique("r"), unique("o")
    with up.client() as client:
        assert client.get_secret("secretstore", name).secret == {"user": "u"}
        assert client.get_bulk_secret("secretstore").secrets[name] == {"user": "u"}

        assert client.try_lock("lockstore", resource, owner, 30).success
        assert not client.try_lock("lockstore", resource, "someone-else", 30).success
        assert client.unlock("lockstore", resource, "someone-else").status == Unlock.lock_belongs_to_others
        assert client.unlock("lockstore", resource, owner).status == Unlock.success
        with pytest.raises(grpc.RpcError) as no_lock_store:
            client.try_lock("no-such-lockstore", resource, owner, 30)
        assert no_lock_store.value.code() == grpc.StatusCode.INVALID_ARGUMENT

        # gRPC hands the binding its bytes as they are (HTTP would JSON-encode them first).
        created = client.invoke_binding("disk", "create", "hello over grpc", {"fileName": name + ".txt"})
        assert created.binding_metadata is not None
        assert client.invoke_binding("disk", "get", "", {"fileName": name + ".txt"}).data == b"hello over grpc"
        with pytest.raises(grpc.RpcError) as missing:
            client.invoke_binding("disk", "get", "", {"fileName": "nothing-" + name})
        assert missing.value.code() == grpc.StatusCode.INTERNAL
        assert error_reason(missing.value) == "ERR_INVOKE_OUTPUT_BINDING"

        client.set_metadata("grpc-test", "yes")
        metadata = client.get_metadata()
        assert metadata.extended_metadata["grpc-test"] == "yes"
        assert {"statestore", "pubsub", "lockstore", "disk"} <= {c.name for c in metadata.registered_components}


async def test_configuration_get_and_subscription_stream(up: Up, bus: BusClient) -> None:
    key = unique("cfg")
    subjects = Subjects()
    set_subject = subjects.block("configuration", "configstore", "set")
    await bus.request(set_subject, {"items": {key: {"value": "one"}}})
    changes: list[tuple[str, str, str]] = []
    with up.client() as client:
        items = client.get_configuration("configstore", [key]).items
        assert items[key].value == "one" and items[key].version

        def handler(sub_id: str, response: Any) -> None:
            for k, item in response.items.items():
                changes.append((sub_id, k, item.value))

        sub_id = client.subscribe_configuration("configstore", [key], handler)
        assert sub_id
        await bus.request(set_subject, {"items": {key: {"value": "two"}}})
        await wait_until(lambda: _true(changes), timeout=10)
        assert changes[0] == (sub_id, key, "two")

        assert client.unsubscribe_configuration("configstore", sub_id) is True
        assert client.unsubscribe_configuration("configstore", sub_id) is False
        await bus.request(set_subject, {"items": {key: {"value": "three"}}})
        await asyncio.sleep(0.5)  # a stopped stream delivers nothing more
        assert [c[2] for c in changes] == ["two"]

        with pytest.raises(grpc.RpcError) as unknown:
            client.get_configuration("no-such-configstore", [key])
        assert unknown.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def _true(values: list[Any]) -> bool:
    return bool(values)


T1 = {"actor_type": "Tally", "actor_id": "t1"}


class Tally(Actor):
    """A bus-native actor the gRPC actor RPCs reach through the runtime's actors service."""

    async def add(self, n: int) -> int:
        total = int(await self.state.get("n") or 0) + n
        self.state.set("n", total)
        return total

    async def receive_reminder(self, name: str, data: Any, due_time: str, period: str) -> None:
        self.state.set("reminded", data)


async def test_actor_rpcs_reach_an_actor_host(up: Up) -> None:
    nc: Client = await connect(ConnectionSettings(url=f"nats://127.0.0.1:{up.nats_port}", name="grpc-actors"))
    app = App("grpc-actors")
    app.register_actor(Tally)
    await app.start(client=SdkClient(nc))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{up.grpc_port}") as channel:
            stub = dapr_pb2_grpc.DaprStub(channel)
            first = await stub.InvokeActor(actors_pb2.InvokeActorRequest(**T1, method="add", data=b"2"))
            second = await stub.InvokeActor(actors_pb2.InvokeActorRequest(**T1, method="add", data=b"3"))
            assert (json.loads(first.data), json.loads(second.data)) == (2, 5)
            state = await stub.GetActorState(actors_pb2.GetActorStateRequest(**T1, key="n"))
            assert json.loads(state.data) == 5

            put = actors_pb2.TransactionalActorStateOperation(
                operationType="upsert", key="note", value=any_pb2.Any(value=b'"hi"')
            )
            await stub.ExecuteActorStateTransaction(
                actors_pb2.ExecuteActorStateTransactionRequest(**T1, operations=[put])
            )
            note = await stub.GetActorState(actors_pb2.GetActorStateRequest(**T1, key="note"))
            assert note.data == b'"hi"'

            reminder = actors_pb2.RegisterActorReminderRequest(
                **T1, name="r", due_time="0s", period="1h", data=b'{"x":1}'
            )
            await stub.RegisterActorReminder(reminder)
            got = await stub.GetActorReminder(actors_pb2.GetActorReminderRequest(**T1, name="r"))
            assert json.loads(got.data.value) == {"x": 1} and got.period

            async def reminded() -> bool:
                reply = await stub.GetActorState(actors_pb2.GetActorStateRequest(**T1, key="reminded"))
                return bool(reply.data) and json.loads(reply.data) == {"x": 1}

            await wait_until(reminded, timeout=15, interval=0.2)
            await stub.UnregisterActorReminder(actors_pb2.UnregisterActorReminderRequest(**T1, name="r"))
            with pytest.raises(grpc.aio.AioRpcError) as gone:
                await stub.GetActorReminder(actors_pb2.GetActorReminderRequest(**T1, name="r"))
            assert gone.value.code() == grpc.StatusCode.NOT_FOUND

            # A timer calls `add(10)` every 100 ms until it is unregistered.
            timer = actors_pb2.RegisterActorTimerRequest(
                **T1, name="tick", due_time="0s", period="0.1s", callback="add", data=b"10"
            )
            await stub.RegisterActorTimer(timer)

            async def ticked_twice() -> bool:
                reply = await stub.GetActorState(actors_pb2.GetActorStateRequest(**T1, key="n"))
                return json.loads(reply.data) >= 25

            await wait_until(ticked_twice, timeout=15, interval=0.1)
            await stub.UnregisterActorTimer(actors_pb2.UnregisterActorTimerRequest(**T1, name="tick"))
            await asyncio.sleep(0.3)  # a tick already under way may still land
            settled = json.loads((await stub.GetActorState(actors_pb2.GetActorStateRequest(**T1, key="n"))).data)
            await asyncio.sleep(0.5)  # five periods: no tick after the unregister
            after = json.loads((await stub.GetActorState(actors_pb2.GetActorStateRequest(**T1, key="n"))).data)
            assert after == settled

            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await stub.InvokeActor(actors_pb2.InvokeActorRequest(**T1, method="nope"))
            assert error_reason(missing.value) == "ERR_ACTOR_INVOKE_METHOD"
    finally:
        await app.stop()
        if app.client is not None:
            await app.client.actors.close()
        await nc.close()


async def test_an_unserved_rpc_answers_unimplemented_naming_itself(up: Up) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{up.grpc_port}") as channel:
        stub = dapr_pb2_grpc.DaprStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as unserved:
            await stub.GetJobAlpha1(jobs_pb2.GetJobRequest(name="nightly"))
    assert unserved.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "GetJobAlpha1" in (unserved.value.details() or "")
    assert error_reason(unserved.value) == "ERR_API_UNIMPLEMENTED"


async def test_healthz_outbound_stays_up_beside_grpc(up: Up) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{up.http_port}/v1.0/healthz/outbound") as r:
            assert r.status == 204


async def test_grpc_shutdown_stops_natrium_up(up: Up) -> None:
    """Last in the module: it ends the shared runtime."""
    with up.client() as client:
        client.shutdown()
    assert up.proc is not None
    assert await asyncio.wait_for(up.proc.wait(), 30) == 0
    assert textwrap.dedent("".join(up.stderr)).count("natrium stopped") == 1
