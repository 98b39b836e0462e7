"""An unmodified Dapr Python SDK actor app (FastAPI extension) hosted by two `natrium run` processes,
called by a third app through the SDK's `ActorProxy`: calls, state, reminders, timers, failover.

Every call goes app -> `ActorProxy` -> the caller's natrium run (Dapr HTTP API) -> bus -> the owning
host's natrium run -> `PUT /actors/...` on the host app, as it would through two daprd sidecars.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from nats.aio.client import Client

from kernel.nats_server import EmbeddedNatsServer
from kernel.subjects import Subjects
from tests.conftest import subprocess_env, unique, wait_until
from tests.test_invoke import Run
from tests.test_sdk_js import JS_DIR, _run, js_sdk  # noqa: F401 (js_sdk: the fixture that installs the JS SDK)

pytestmark = pytest.mark.slow

APP = "dapr_actor_app"


@dataclass
class Cluster:
    hosts: list[Run]
    caller: Run
    session: aiohttp.ClientSession
    url: str
    root: str
    deactivations: Path

    async def add_host(self) -> Run:
        run = Run(self.url, self.root, "counter-host", APP, ROLE="host", DEACTIVATIONS=str(self.deactivations))
        self.hosts.append(run)  # before start: the fixture stops it whatever happens
        return await run.start()

    async def owner(self, actor_id: str) -> Run:
        port = (await self.result(actor_id, "Get"))["host_port"]
        return next(h for h in self.hosts if str(h.app_port) == port)

    async def call(self, actor_id: str, method: str, *arg: Any, actor_type: str = "Counter") -> tuple[int, Any]:
        """One ActorProxy call made by the caller app."""
        url = f"http://127.0.0.1:{self.caller.app_port}/call/{actor_id}/{method}?type={actor_type}"
        async with self.session.post(url, json={"arg": arg[0]} if arg else {}) as r:
            return r.status, await r.json()

    async def result(self, actor_id: str, method: str, *arg: Any) -> Any:
        status, body = await self.call(actor_id, method, *arg)
        assert status == 200, body
        return body["result"]

    async def api(self, verb: str, path: str, body: bytes | None = None) -> tuple[int, bytes, str]:
        """Dapr's actor HTTP API on the caller's natrium run."""
        async with self.session.request(verb, self.caller.api + path, data=body) as r:
            return r.status, await r.read(), r.headers.get("Content-Type", "")


@pytest.fixture(scope="module")
async def cluster(
    nats_server: EmbeddedNatsServer, nc: Client, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Cluster]:
    from services.actors.service import ActorsService

    subjects = Subjects(unique("root"))
    service = ActorsService(nc, subjects=subjects)
    await service.start()
    record = tmp_path_factory.mktemp("actors") / "deactivations"
    record.touch()
    hosts = [
        Run(nats_server.url, subjects.root, "counter-host", APP, ROLE="host", DEACTIVATIONS=str(record))
        for _ in range(2)
    ]
    caller = Run(nats_server.url, subjects.root, "counter-caller", APP, ROLE="caller")
    await asyncio.gather(*(run.start() for run in [*hosts, caller]))
    session = aiohttp.ClientSession()
    cluster = Cluster(hosts, caller, session, nats_server.url, subjects.root, record)
    try:
        yield cluster
    finally:
        await session.close()
        for run in [*cluster.hosts, caller]:
            if run.proc is not None:
                await run.stop()
        await service.stop()


async def test_proxy_calls_reach_the_actor_and_its_state_persists(cluster: Cluster) -> None:
    actor = unique("c-")
    assert await cluster.result(actor, "Increment", 2) == 2
    assert await cluster.result(actor, "Increment", 3) == 5
    state = await cluster.result(actor, "Get")
    assert state["count"] == 5
    assert state["host_port"] in {str(h.app_port) for h in cluster.hosts}
    # The SDK's state manager saved through the host's Dapr API; any runtime reads it back.
    assert await cluster.api("GET", f"/v1.0/actors/Counter/{actor}/state/count") == (200, b"5", "application/json")
    status, body, _ = await cluster.api("GET", f"/v1.0/actors/Counter/{actor}/state/never-set")
    assert (status, body) == (204, b"")
    # Each host's metadata lists its hosted type and active actors, as daprd's does.
    counts = []
    for host in cluster.hosts:
        async with cluster.session.get(host.api + "/v1.0/metadata") as r:
            meta = await r.json()
        assert meta["actorRuntime"]["hostReady"] is True
        counts += [a["count"] for a in meta["actors"] if a["type"] == "Counter"]
    assert len(counts) == 2 and sum(counts) >= 1


async def test_void_method_answers_json_null_through_the_gateway(cluster: Cluster) -> None:
    status, body, content_type = await cluster.api("PUT", f"/v1.0/actors/Counter/{unique('v-')}/method/StopTimer")
    assert (status, body) == (200, b"null")
    assert content_type.startswith("application/json")


async def test_many_concurrent_proxy_calls_on_one_actor_run_one_turn_at_a_time(cluster: Cluster) -> None:
    actor = unique("s-")
    replies = await asyncio.gather(*(cluster.call(actor, "SlowIncrement", 1) for _ in range(20)))
    assert all(status == 200 for status, _ in replies), replies
    assert sorted(body["result"] for _, body in replies) == list(range(1, 21))
    assert (await cluster.result(actor, "Get"))["count"] == 20


async def test_reminder_fires_on_the_actor_with_its_data(cluster: Cluster) -> None:
    actor = unique("r-")
    assert await cluster.result(actor, "Remind", "hello") is None

    async def reminded() -> bool:
        return (await cluster.result(actor, "Get"))["reminded"] >= 1

    await wait_until(reminded, timeout=20, interval=0.2)
    state = await cluster.result(actor, "Get")
    assert (state["reminded"], state["reminder_payload"]) == (1, "hello")


async def test_timer_fires_while_the_actor_is_active(cluster: Cluster) -> None:
    actor = unique("t-")
    assert await cluster.result(actor, "StartTimer") is None

    async def ticked() -> bool:
        return (await cluster.result(actor, "Get"))["ticks"] >= 2

    await wait_until(ticked, timeout=20, interval=0.2)
    assert await cluster.result(actor, "StopTimer") is None


async def test_app_method_error_is_err_actor_invoke_method_as_daprd_reports_it(cluster: Cluster) -> None:
    actor = unique("f-")
    status, body = await cluster.call(actor, "Fail")
    assert status == 502
    assert (body["status"], body["errorCode"]) == (500, "ERR_ACTOR_INVOKE_METHOD")
    status, raw, _ = await cluster.api("PUT", f"/v1.0/actors/Counter/{actor}/method/Fail", b"")
    error = json.loads(raw)
    assert (status, error["errorCode"]) == (500, "ERR_ACTOR_INVOKE_METHOD")
    assert "error from actor service: (500)" in error["message"] and "failing on purpose" in error["message"]


async def test_reentrant_type_calls_itself_within_a_turn_up_to_its_stack_depth(cluster: Cluster) -> None:
    # Chain calls itself through the SDK's ActorProxy mid-turn; the SDK forwards Dapr-Reentrancy-Id.
    actor = unique("re-")
    status, body = await cluster.call(actor, "Reenter", 4, actor_type="Chain")
    assert (status, body) == (200, {"result": 4})
    status, body = await cluster.call(actor, "Reenter", 6, actor_type="Chain")
    # The innermost call over the depth fails; each turn above reports it as its app error.
    assert (status, body["status"], body["errorCode"]) == (502, 500, "ERR_ACTOR_INVOKE_METHOD")
    assert "ERR_ACTOR_STACK_DEPTH" in body["error"]


async def test_js_sdk_actor_proxy_and_reminder_wire(cluster: Cluster, js_sdk: Path) -> None:  # noqa: F811
    actor = unique("js-")
    env = subprocess_env(DAPR_HTTP_PORT=str(cluster.caller.dapr_port), ACTOR_ID=actor)
    code, out, err = await _run(str(js_sdk), str(JS_DIR / "actors.mjs"), cwd=JS_DIR, timeout=60, env=env)
    assert code == 0, f"actors.mjs exited {code}\nstdout: {out}\nstderr: {err}"
    results = json.loads(out.strip().splitlines()[-1])
    # The JS proxy sends `[2, 3]`; the Python actor sums its argument array.
    assert results["addAll"] == 5 and results["get"]["count"] == 5
    reminder = results["reminder"]
    assert (reminder["dueTime"], reminder["period"]) == ("5m", "10s")
    assert reminder["data"] == {"hello": "js", "n": [1, 2]}
    gone = results["reminderAfterDelete"]
    assert gone["status"] == 404 and "ERR_ACTOR_REMINDER_NOT_FOUND" in gone["error_msg"]


async def test_killed_host_actor_comes_back_on_the_other_with_its_state(cluster: Cluster) -> None:
    # Runs last in this module: it kills one of the two hosts.
    actor = unique("k-")
    assert await cluster.result(actor, "Increment", 7) == 7
    owner = await cluster.owner(actor)
    survivor = next(h for h in cluster.hosts if h is not owner)
    assert owner.proc is not None
    os.kill(owner.proc.pid, signal.SIGKILL)  # natrium run, and its app with it (die_with_parent)
    await owner.proc.wait()

    async def moved() -> bool:
        status, body = await cluster.call(actor, "Get")
        return status == 200 and body["result"]["host_port"] == str(survivor.app_port)

    await wait_until(moved, timeout=40, interval=0.5)
    assert await cluster.result(actor, "Increment", 1) == 8


async def test_a_new_host_joins_and_a_stopped_host_drains_its_actors_to_it(cluster: Cluster) -> None:
    actor = unique("d-")
    assert await cluster.result(actor, "Increment", 3) == 3
    await cluster.add_host()
    owner = await cluster.owner(actor)  # may have moved to the newcomer already (rebalancing)
    await owner.stop()  # graceful (SIGINT): drains, deactivates with DELETE /actors/Counter/<id>
    assert f"{actor} {owner.app_port}" in cluster.deactivations.read_text().splitlines()

    async def moved() -> bool:
        status, body = await cluster.call(actor, "Get")
        return status == 200 and body["result"]["host_port"] != str(owner.app_port)

    await wait_until(moved, timeout=30, interval=0.3)
    assert await cluster.result(actor, "Increment", 1) == 4


async def test_only_the_owning_host_may_write_an_actors_state(cluster: Cluster) -> None:
    """A host writes state only for its own activations: a turn that outlived its lease elsewhere
    (or any stray write through another host's Dapr API) cannot overwrite the owner's state."""
    if sum(1 for h in cluster.hosts if h.proc and h.proc.returncode is None) < 2:
        await cluster.add_host()  # an earlier test may have killed one
    actor = unique("o-")
    assert await cluster.result(actor, "Increment", 1) == 1
    owner = await cluster.owner(actor)
    other = next(h for h in cluster.hosts if h is not owner and h.proc and h.proc.returncode is None)
    write = json.dumps([{"operation": "upsert", "request": {"key": "count", "value": 99}}]).encode()
    path = f"/v1.0/actors/Counter/{actor}/state"
    async with cluster.session.post(other.api + path, data=write) as r:
        assert r.status == 400 and (await r.json())["errorCode"] == "ERR_ACTOR_INSTANCE_MISSING"
    owner = await cluster.owner(actor)  # the same host, unless placement moved the actor meanwhile
    assert await cluster.api("GET", f"/v1.0/actors/Counter/{actor}/state/count") == (200, b"1", "application/json")
    async with cluster.session.post(owner.api + path, data=write) as r:
        assert r.status == 204, await r.text()
    assert await cluster.api("GET", f"/v1.0/actors/Counter/{actor}/state/count") == (200, b"99", "application/json")
