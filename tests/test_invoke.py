"""Service invocation: `natrium run` apps calling each other, replicas, resiliency, access control."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any, Self

import aiohttp
import pytest
from nats.aio.client import Client

from kernel.errors import NatriumError
from kernel.nats_server import EmbeddedNatsServer
from tests.conftest import NATRIUM, REPO, free_port, subprocess_env, wait_until
from tests.natrium_process import NatriumProcess, run_ports

pytestmark = pytest.mark.slow


class Run(NatriumProcess):
    """`natrium run --app-id ID --app-port P -- python -m tests.apps.<module>` as a subprocess; the
    run picks its own Dapr ports and reports them."""

    def __init__(self, url: str, root: str, app_id: str, module: str, components: Path | None = None, **env: str):
        self.app_port = free_port()
        self.dapr_port = self.grpc_port = 0
        args = [
            *NATRIUM,
            "run",
            *("--app-id", app_id, "--app-port", str(self.app_port)),
            *("--nats-url", url, "--root", root, "--app-port-timeout", "30"),
        ]
        if components is not None:
            args += ["--resources-path", str(components)]
        args += ["--", sys.executable, "-m", f"tests.apps.{module}"]
        super().__init__(args, " is up: ", subprocess_env(NATRIUM_LOG_LEVEL="warning", **env))

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.dapr_port}"

    async def start(self, timeout: float = 60.0) -> Self:
        await super().start(timeout)
        self.dapr_port, self.grpc_port = run_ports(self.ready_line)
        return self


async def http(method: str, url: str, **kwargs: Any) -> tuple[int, Any, dict[str, str]]:
    async with aiohttp.ClientSession() as session:
        async with session.request(method, url, **kwargs) as r:
            body = await r.read()
            try:
                parsed: Any = json.loads(body)
            except ValueError:
                parsed = body.decode()
            return r.status, parsed, dict(r.headers)


@pytest.fixture
async def default_pubsub(nc: Client, subjects: Any) -> Any:
    """A pubsub component named `pubsub`, as the test apps expect, on this test's own root."""
    from kernel.components import Component, ComponentSet
    from services.pubsub.service import PubsubService
    from tests.conftest import FAST_RETRIES

    component = Component(name="pubsub", type="pubsub.jetstream", metadata=FAST_RETRIES)
    service = PubsubService(nc, subjects=subjects, components=ComponentSet(components=[component]))
    await service.start()
    yield service
    await service.stop()
    await nc.jetstream().delete_stream(service.stores["pubsub"].name)


@pytest.fixture
async def apps(nats_server: EmbeddedNatsServer, subjects: Any, default_pubsub: Any) -> Any:
    """Starts apps under `natrium run` on this test's root, where the pubsub `pubsub` runs."""
    started: list[Run] = []

    async def start(app_id: str, module: str, components: Path | None = None, **env: str) -> Run:
        run = await Run(nats_server.url, subjects.root, app_id, module, components, **env).start()
        started.append(run)
        return run

    yield start
    for run in started:
        await run.stop()


async def test_apps_call_each_other_through_their_local_dapr_api(apps: Any) -> None:
    orders = await apps("orders", "orders")
    checkout = await apps("checkout", "checkout")
    url = f"{checkout.api}/v1.0/invoke/orders/method/neworder?a=1&b=2"
    status, body, headers = await http("PUT", url, data=b"payload", headers={"x-custom": "kept"})
    assert status == 200 and headers["x-reply"] == "yes"
    assert body["verb"] == "PUT" and body["path"] == "/neworder" and body["query"] == "a=1&b=2"
    assert (body["body"], body["custom"]) == ("payload", "kept")
    assert (body["caller"], body["callee"], body["app_id"]) == ("checkout", "orders", "orders")
    assert body["dapr_http_port"] == str(orders.dapr_port)

    status, body, _ = await http("POST", f"{checkout.api}/neworder", headers={"dapr-app-id": "orders"})
    assert status == 200 and body["path"] == "/neworder"

    # checkout's own code calls orders through its DAPR_HTTP_PORT
    status, body, _ = await http("POST", f"{orders.api}/v1.0/invoke/checkout/method/buy", data=b"book")
    assert status == 200 and body["caller"] == "checkout" and body["body"] == "book"


async def test_repeated_headers_and_cookies_survive_the_bus(apps: Any) -> None:
    orders = await apps("orders", "orders")
    checkout = await apps("checkout", "checkout")
    url = f"{checkout.api}/v1.0/invoke/orders/method/headers"
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers=[("x-multi", "one"), ("x-multi", "two")]) as r:
            assert r.status == 200
            assert (await r.json())["multi"] == ["one, two"]  # joined, as HTTP allows for list fields
            assert r.headers.getall("Set-Cookie") == ["a=1; Path=/", "b=2; Expires=Wed, 21 Oct 2037 07:28:00 GMT"]
    assert orders.dapr_port


async def test_status_and_body_pass_through_and_errors_are_distinct(apps: Any) -> None:
    orders = await apps("orders", "orders")
    status, body, _ = await http("GET", f"{orders.api}/v1.0/invoke/orders/method/status/418")
    assert (status, body) == (418, "status 418")
    status, body, _ = await http("GET", f"{orders.api}/v1.0/invoke/orders/method/fail")
    assert (status, body) == (500, "broken on purpose")
    status, body, _ = await http("GET", f"{orders.api}/v1.0/invoke/nobody/method/x")
    assert status == 500 and body["errorCode"] == "ERR_DIRECT_INVOKE" and "no instance" in body["message"]
    status, body, _ = await http("GET", f"{orders.api}/no-such-api")
    assert status == 404 and body["errorCode"] == "ERR_DIRECT_INVOKE"


async def test_programmatic_subscription_through_dapr_subscribe(apps: Any) -> None:
    orders = await apps("orders", "orders")
    publish = f"{orders.api}/v1.0/publish/pubsub/orders-events"
    assert (await http("POST", publish, json={"n": 1}))[0] == 204
    assert (await http("POST", publish, json={"answer": "retry-once"}))[0] == 204

    async def received() -> list[Any]:
        return (await http("GET", f"{orders.api}/v1.0/invoke/orders/method/received"))[1]

    async def all_there() -> bool:
        return len(await received()) >= 3

    await wait_until(all_there, timeout=20)
    events = await received()
    assert [e["data"] for e in events].count({"answer": "retry-once"}) == 2  # RETRY redelivered once
    assert {"n": 1} in [e["data"] for e in events]


async def test_declarative_subscription_routes_and_dead_letters_under_run(
    apps: Any, tmp_path: Path, nc: Client, subjects: Any
) -> None:
    """A Subscription resource given to `natrium run`: rules pick the route, the app's 404 drops
    the event (as daprd does) and the drop lands on the deadLetterTopic."""
    from adapters.sdk import Client as SdkClient
    from tests.conftest import Inbox

    (tmp_path / "subscription.yaml").write_text(
        "apiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata: {name: shipments}\nspec:\n"
        "  pubsubname: pubsub\n  topic: shipments\n"
        "  routes:\n    rules:\n    - {match: 'event.type == \"lost\"', path: /nowhere}\n    default: /events\n"
        "  deadLetterTopic: shipments-dead\nscopes: [orders]\n"
    )
    dead = Inbox()
    watcher = SdkClient(nc, app_id="ops", subjects=subjects)
    await watcher.subscribe("pubsub", "shipments-dead", dead)
    try:
        orders = await apps("orders", "orders", components=tmp_path)
        publish = f"{orders.api}/v1.0/publish/pubsub/shipments"
        assert (await http("POST", publish, json={"n": "kept"}))[0] == 204
        lost = {"specversion": "1.0", "id": "lost-1", "source": "test", "type": "lost", "data": {"n": "lost"}}
        headers = {"Content-Type": "application/cloudevents+json"}
        assert (await http("POST", publish, data=json.dumps(lost), headers=headers))[0] == 204
        [event] = await dead.wait(1, timeout=20)
        assert event.id == "lost-1" and event.data == {"n": "lost"}
        assert event.envelope["deadletteroriginaltopic"] == "shipments"

        async def kept() -> bool:
            received = (await http("GET", f"{orders.api}/v1.0/invoke/orders/method/received"))[1]
            return {"n": "kept"} in [e["data"] for e in received]

        await wait_until(kept, timeout=20)
    finally:
        for subscription in watcher._subscriptions:
            await subscription.stop()


async def test_replicas_share_calls_and_a_killed_one_loses_no_retried_call(apps: Any, tmp_path: Path) -> None:
    (tmp_path / "resiliency.yaml").write_text(
        "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata: {name: r}\nspec:\n"
        "  policies:\n    timeouts: {quick: 2s}\n"
        "    retries: {again: {policy: constant, duration: 100ms, maxRetries: 10}}\n"
        "  targets:\n    apps:\n      orders: {timeout: quick, retry: again}\n"
    )
    first = await apps("orders", "orders")
    await apps("orders", "orders")
    caller = await apps("checkout", "checkout", components=tmp_path)
    url = f"{caller.api}/v1.0/invoke/orders/method/neworder"
    pids = {(await http("POST", url))[1]["pid"] for _ in range(20)}
    assert len(pids) == 2

    results: list[int] = []

    async def load() -> None:
        for _ in range(60):
            results.append((await http("POST", url))[0])

    task = asyncio.create_task(load())
    await asyncio.sleep(0.3)
    assert first.proc
    first.proc.send_signal(signal.SIGKILL)
    await task
    assert results == [200] * 60


async def test_an_unhealthy_app_gets_no_events_or_calls_until_it_recovers(apps: Any) -> None:
    checked = {
        "NATRIUM_ENABLE_APP_HEALTH_CHECK": "true",
        "NATRIUM_APP_HEALTH_PROBE_INTERVAL": "0.2",
        "NATRIUM_APP_HEALTH_THRESHOLD": "2",
    }
    orders = await apps("orders", "orders", **checked)
    app = f"http://127.0.0.1:{orders.app_port}"  # the app itself, past its channel
    _, metadata, _ = await http("GET", f"{orders.api}/v1.0/metadata")
    assert metadata["appConnectionProperties"]["port"] == orders.app_port
    assert metadata["appConnectionProperties"]["health"] == {
        "healthCheckPath": "/healthz",
        "healthProbeInterval": "0.2s",
        "healthProbeTimeout": "500ms",
        "healthThreshold": 2,
    }
    invoke = f"{orders.api}/v1.0/invoke/orders/method/neworder"
    assert (await http("POST", invoke))[0] == 200

    await http("POST", f"{app}/health/down")

    async def refused() -> bool:
        status, body, _ = await http("POST", invoke)
        return status == 500 and body["errorCode"] == "ERR_DIRECT_INVOKE"

    await wait_until(refused, timeout=10)  # it left its queue group: no replica takes the call
    for n in range(3):
        assert (await http("POST", f"{orders.api}/v1.0/publish/pubsub/orders-events", json={"n": n}))[0] == 204
    await asyncio.sleep(1.0)
    assert (await http("GET", f"{app}/received"))[1] == []  # held in the stream, not pushed at a sick app

    await http("POST", f"{app}/health/up")

    async def delivered() -> bool:
        return len((await http("GET", f"{app}/received"))[1]) == 3

    await wait_until(delivered, timeout=15)
    assert sorted(e["data"]["n"] for e in (await http("GET", f"{app}/received"))[1]) == [0, 1, 2]
    await wait_until(lambda: _answers(invoke), timeout=10)


async def _answers(url: str) -> bool:
    return (await http("POST", url))[0] == 200


async def test_circuit_breaker_opens_after_failures(apps: Any, tmp_path: Path) -> None:
    (tmp_path / "resiliency.yaml").write_text(
        "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata: {name: r}\nspec:\n"
        "  policies:\n    circuitBreakers: {cb: {maxRequests: 1, timeout: 30s, trip: consecutiveFailures >= 3}}\n"
        "  targets:\n    apps:\n      orders: {circuitBreaker: cb}\n"
    )
    orders = await apps("orders", "orders")
    caller = await apps("checkout", "checkout", components=tmp_path)
    statuses = [(await http("GET", f"{caller.api}/v1.0/invoke/orders/method/fail"))[0] for _ in range(6)]
    assert statuses == [500] * 6
    _, body, _ = await http("GET", f"{caller.api}/v1.0/invoke/orders/method/fail")
    assert "circuit breaker" in body["message"]
    _, counts, _ = await http("GET", f"{orders.api}/v1.0/invoke/orders/method/fail-count")
    assert counts["fail"] == 3  # the breaker kept the other calls off the app


async def test_access_control_refuses_callers_and_operations(apps: Any, tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata: {name: acl}\nspec:\n"
        "  accessControl:\n    defaultAction: deny\n    policies:\n    - appId: checkout\n"
        "      defaultAction: deny\n      operations:\n      - {name: /neworder, httpVerb: [POST], action: allow}\n"
        "scopes: [orders]\n"
    )
    await apps("orders", "orders", components=tmp_path)
    checkout = await apps("checkout", "checkout")
    base = f"{checkout.api}/v1.0/invoke/orders/method"
    assert (await http("POST", f"{base}/neworder"))[0] == 200
    status, body, _ = await http("GET", f"{base}/neworder")
    assert status == 403 and body["errorCode"] == "ERR_PERMISSION_DENIED"
    status, body, _ = await http("GET", f"{base}/status/200")
    assert status == 403
    stranger = await apps("stranger", "checkout")
    assert (await http("POST", f"{stranger.api}/v1.0/invoke/orders/method/neworder"))[0] == 403


async def test_run_reports_an_app_that_never_opens_its_port(nats_server: EmbeddedNatsServer) -> None:
    args = [
        *NATRIUM,
        "run",
        "--app-id",
        "lazy",
        "--app-port",
        str(free_port()),
        "--nats-url",
        nats_server.url,
        "--app-port-timeout",
        "1",
        "--",
        sys.executable,
        "-c",
        "import time; time.sleep(30)",
    ]
    proc = await asyncio.create_subprocess_exec(*args, cwd=REPO, env=subprocess_env(), stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1 and b"did not open port" in err and b"Traceback" not in err


async def test_a_stop_while_the_app_starts_ends_the_run_at_once(
    nats_server: EmbeddedNatsServer, tmp_path: Path
) -> None:
    started = tmp_path / "started"
    app = f"import pathlib, time; pathlib.Path({str(started)!r}).touch(); time.sleep(60)"
    args = [*NATRIUM, "run", "--app-id", "slowstart", "--app-port", str(free_port()), "--nats-url", nats_server.url]
    args += ["--app-port-timeout", "60", "--", sys.executable, "-c", app]
    proc = await asyncio.create_subprocess_exec(*args, cwd=REPO, env=subprocess_env(), stderr=asyncio.subprocess.PIPE)

    async def app_started() -> bool:
        return started.exists()

    await wait_until(app_started, timeout=30)
    loop = asyncio.get_running_loop()
    asked = loop.time()
    proc.send_signal(signal.SIGTERM)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert loop.time() - asked < 10, "the run waited for --app-port-timeout"
    assert proc.returncode == 128 + signal.SIGTERM and b"Traceback" not in err  # the app got SIGTERM


async def test_run_exits_with_the_apps_exit_code(nats_server: EmbeddedNatsServer) -> None:
    args = [
        *NATRIUM,
        "run",
        "--app-id",
        "oneshot",
        "--nats-url",
        nats_server.url,
        "--",
        sys.executable,
        "-c",
        "import os, sys; sys.exit(3 if os.environ['APP_ID'] == 'oneshot' and os.environ['DAPR_HTTP_PORT'] else 9)",
    ]
    proc = await asyncio.create_subprocess_exec(*args, cwd=REPO, env=subprocess_env(), stderr=asyncio.subprocess.PIPE)
    await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 3


async def test_run_takes_its_options_from_the_environment(nats_server: EmbeddedNatsServer) -> None:
    port = free_port()
    expected = f"os.environ['APP_ID'] == 'from-env' and os.environ['DAPR_HTTP_PORT'] == '{port}'"
    check = f"import os, sys; sys.exit(4 if {expected} else 9)"
    env = subprocess_env(APP_ID="from-env", NATRIUM_DAPR_HTTP_PORT=str(port), NATS_URL=nats_server.url)
    args = [*NATRIUM, "run", "--", sys.executable, "-c", check]
    proc = await asyncio.create_subprocess_exec(*args, cwd=REPO, env=env, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 4, err.decode()


async def test_python_sdk_methods_on_the_bus(nc: Client, subjects: Any) -> None:
    from adapters.gateway.context import GatewayConfig
    from adapters.sdk import App, InvokeRequest
    from adapters.sdk import Client as SdkClient
    from tests.conftest import open_gateway

    app = App("calc")

    @app.method("add")
    async def add(request: InvokeRequest) -> dict[str, int]:
        numbers = json.loads(request.body)
        return {"sum": numbers["a"] + numbers["b"], "caller": request.caller}  # type: ignore[dict-item]

    await app.start(client=SdkClient(nc, app_id="calc", subjects=subjects))
    client, runner = await open_gateway(nc, subjects, GatewayConfig(http_port=free_port(), app_id="web"))
    try:
        caller = SdkClient(nc, app_id="py-caller", subjects=subjects)
        reply = await caller.invoke("calc", "add", {"a": 2, "b": 3})
        assert reply.status == 200 and json.loads(reply.body) == {"sum": 5, "caller": "py-caller"}
        async with client.session.post(client.url("/v1.0/invoke/calc/method/add"), json={"a": 1, "b": 1}) as r:
            assert r.status == 200 and await r.json() == {"sum": 2, "caller": "web"}
        # A caller cannot claim an identity: a gateway of no app (shared) names no caller at all.
        shared, shared_runner = await open_gateway(nc, subjects, GatewayConfig(http_port=free_port()))
        try:
            url = shared.url("/v1.0/invoke/calc/method/add")
            forged = {"dapr-caller-app-id": "admin"}
            async with shared.session.post(url, json={"a": 1, "b": 1}, headers=forged) as r:
                assert r.status == 200 and await r.json() == {"sum": 2, "caller": None}
        finally:
            await shared.session.close()
            await shared_runner.cleanup()
        missing = await caller.invoke("calc", "nope")
        assert missing.status == 404
    finally:
        await app.stop()
        await client.session.close()
        await runner.cleanup()


async def test_sdk_app_enforces_access_control_from_its_resources(nc: Client, subjects: Any, tmp_path: Path) -> None:
    from adapters.sdk import App, InvokeRequest
    from adapters.sdk import Client as SdkClient

    (tmp_path / "config.yaml").write_text(
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata: {name: acl}\nspec:\n"
        "  accessControl:\n    defaultAction: deny\n    policies:\n"
        "    - appId: friend\n      defaultAction: deny\n"
        "      operations: [{name: /read/*, httpVerb: [GET], action: allow}]\n"
        "scopes: [guarded]\n"
    )
    app = App("guarded", resources=tmp_path)

    @app.method("read/item")
    async def read(request: InvokeRequest) -> str:
        return "item"

    await app.start(client=SdkClient(nc, app_id="guarded", subjects=subjects))
    try:
        friend = SdkClient(nc, app_id="friend", subjects=subjects)
        assert (await friend.invoke("guarded", "read/item", verb="GET")).body == b"item"
        for caller, verb in (("friend", "POST"), ("intruder", "GET")):
            with pytest.raises(NatriumError) as denied:
                await SdkClient(nc, app_id=caller, subjects=subjects).invoke("guarded", "read/item", verb=verb)
            assert (denied.value.code, denied.value.status) == ("ERR_PERMISSION_DENIED", 403)
    finally:
        await app.stop()


async def test_resiliency_timeout_gives_a_clear_error(apps: Any, tmp_path: Path) -> None:
    (tmp_path / "resiliency.yaml").write_text(
        "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata: {name: r}\nspec:\n"
        "  policies:\n    timeouts: {short: 500ms}\n  targets:\n    apps:\n      orders: {timeout: short}\n"
    )
    await apps("orders", "orders")
    caller = await apps("checkout", "checkout", components=tmp_path)
    status, body, _ = await http("GET", f"{caller.api}/v1.0/invoke/orders/method/slow?s=3")
    assert status == 500 and body["errorCode"] == "ERR_DIRECT_INVOKE" and "no answer within 0.5s" in body["message"]
    status, body, _ = await http("GET", f"{caller.api}/v1.0/invoke/orders/method/slow?s=0.1")
    assert (status, body) == (200, "slow done")
