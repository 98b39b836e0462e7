"""`natrium status` as a subprocess against in-process block services on a unique root."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client

from kernel.components import Component, ComponentSet
from kernel.logs import REPLICA
from kernel.nats_server import EmbeddedNatsServer
from kernel.subjects import Subjects
from schemas.workflow import WorkflowLayout
from services.bindings import BindingsService
from services.state.service import StateService
from tests.conftest import NATRIUM, REPO, PubsubRuntime, free_port, start_runtime, subprocess_env, unique
from tests.workflow_runtime import delete_streams
from tests.workflow_runtime import start_service as start_workflow_service

pytestmark = pytest.mark.slow

JSON = {"Content-Type": "application/json"}


async def natrium(*args: str, nats_url: str) -> tuple[int, str, str]:
    """Run the CLI without blocking the loop: the in-process services must answer `$SRV` meanwhile."""
    proc = await asyncio.create_subprocess_exec(
        *NATRIUM,
        *args,
        cwd=REPO,
        env=subprocess_env(NATS_URL=nats_url),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def state(nc: Client, subjects: Subjects) -> AsyncIterator[StateService]:
    name = unique("status-")
    service = await start_runtime(nc, subjects, [Component(name=name, type="state.nats-kv")])
    yield service
    await service.stop()
    await nc.jetstream().delete_stream(service.stores[name].stream)


async def test_status_json_lists_replicas_counts_components_and_streams(
    nats_server: EmbeddedNatsServer, nc: Client, subjects: Subjects, state: StateService, pubsub: PubsubRuntime
) -> None:
    store = next(iter(state.stores))
    save = json.dumps({"items": [{"key": "k", "value": 1}]}).encode()
    await nc.request(subjects.block("state", store, "save"), save, headers=JSON, timeout=10)
    for _ in range(2):
        await nc.request(subjects.block("state", store, "get"), b'{"key":"k"}', headers=JSON, timeout=10)
    await nc.request(subjects.block("state", "no-such-store", "get"), b'{"key":"k"}', headers=JSON, timeout=10)
    await pubsub.client.publish(pubsub.name, "orders", {"n": 1})

    code, out, err = await natrium(
        "status", "--root", subjects.root, "--json", "--expect", "state,pubsub", nats_url=nats_server.url
    )

    assert code == 0, err
    doc = json.loads(out)
    assert doc["root"] == subjects.root and doc["missing"] == []
    by_block = {r["block"]: r for r in doc["replicas"]}
    assert set(by_block) == {"state", "pubsub"}  # other tests' roots are filtered out
    state_replica = by_block["state"]
    assert state_replica["id"] == state.micro.id and state_replica["name"] == "natrium-state"
    assert state_replica["process"] == REPLICA  # the `replica` field of that process's log lines
    assert [c["name"] for c in state_replica["components"]] == [store]
    endpoints = {e["name"]: e for e in state_replica["endpoints"]}
    assert endpoints["save"]["requests"] == 1 and endpoints["get"]["requests"] == 3
    assert endpoints["get"]["errors"] == 1 and "ERR_STATE_STORE_NOT_FOUND" in endpoints["get"]["last_error"]
    assert endpoints["get"]["average_latency_ms"] > 0
    assert state_replica["requests"] == 4 and state_replica["errors"] == 1
    assert by_block["pubsub"]["requests"] == 1
    assert [c["name"] for c in by_block["pubsub"]["components"]] == [pubsub.name]

    streams = {s["name"]: s for s in doc["streams"]}
    kv = streams[state.stores[store].stream]
    assert (kv["kind"], kv["block"], kv["component"], kv["messages"]) == ("kv", "state", store, 1)
    events = streams[pubsub.service.stores[pubsub.name].name]
    assert (events["kind"], events["block"], events["messages"]) == ("stream", "pubsub", 1)
    assert events["bytes"] > 0


async def test_status_exits_3_naming_the_expected_block_without_replica(
    nats_server: EmbeddedNatsServer, subjects: Subjects, state: StateService
) -> None:
    code, out, err = await natrium(
        "status", "--root", subjects.root, "--expect", "state,lock", nats_url=nats_server.url
    )

    assert code == 3
    assert "lock" in err and "state" not in err.replace(subjects.root, "")
    assert "lock: NO REPLICA RUNNING" in out


async def test_status_with_nothing_expected_exits_0_on_an_empty_root(nats_server: EmbeddedNatsServer) -> None:
    code, out, err = await natrium(
        "status", "--root", unique("empty"), "--json", "--expect", "", nats_url=nats_server.url
    )

    assert code == 0, err
    assert json.loads(out)["replicas"] == []


async def test_status_table_mentions_every_block_and_stream(
    nats_server: EmbeddedNatsServer, subjects: Subjects, state: StateService, pubsub: PubsubRuntime
) -> None:
    code, out, err = await natrium("status", "--root", subjects.root, nats_url=nats_server.url)

    assert code == 3  # by default every block is expected, and only two run
    for block in ("state", "pubsub", "lock", "secrets", "configuration"):
        assert f"  {block}: " in out
    assert "state: 1 replica" in out and "pubsub: 1 replica" in out
    assert state.micro.id in out and next(iter(state.stores)) in out
    assert pubsub.service.stores[pubsub.name].name in out
    assert "Traceback" not in err


async def test_status_with_unreachable_nats_exits_1_with_one_line() -> None:
    code, out, err = await natrium("status", "--timeout", "1", nats_url=f"nats://127.0.0.1:{free_port()}")

    assert code == 1 and out == ""
    assert err.startswith("error: cannot reach NATS") and err.count("\n") == 1
    assert "Traceback" not in err


async def test_status_refuses_an_unknown_expected_block(nats_server: EmbeddedNatsServer) -> None:
    code, _, err = await natrium("status", "--expect", "state,bogus", nats_url=nats_server.url)

    assert code == 2 and "bogus" in err and "Traceback" not in err


async def test_status_lists_workflow_and_input_binding_streams_of_the_root(
    nats_server: EmbeddedNatsServer, nc: Client, subjects: Subjects
) -> None:
    tick = Component(name=unique("tick"), type="bindings.cron", metadata={"schedule": "@every 1h"})
    bindings = BindingsService(nc, subjects=subjects, components=ComponentSet(components=[tick]))
    workflows = await start_workflow_service(nc, subjects)
    await bindings.start()
    try:
        code, out, err = await natrium(
            "status", "--root", subjects.root, "--json", "--expect", "workflow,bindings", nats_url=nats_server.url
        )
        assert code == 0, err
        streams = {s["name"]: s for s in json.loads(out)["streams"]}
        layout = WorkflowLayout(subjects, "dapr")
        for name in (layout.history_stream, layout.work_stream, layout.timer_stream, f"KV_{layout.metadata_bucket}"):
            assert streams[name]["block"] == "workflow", (name, sorted(streams))
        events = bindings.stores[tick.name].events
        assert events is not None and streams[events.name]["block"] == "bindings"
        assert streams[events.name]["component"] == tick.name
    finally:
        await bindings.stop()
        await workflows.stop()
        await delete_streams(nc, WorkflowLayout(subjects, "dapr"))
        if (events := bindings.stores[tick.name].events) is not None:
            await nc.jetstream().delete_stream(events.name)
