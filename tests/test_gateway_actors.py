"""`/v1.0/actors/...` on the HTTP gateway: daprd's statuses and codes, both SDKs' request forms."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from nats.aio.client import Client

from adapters.actors.host import ActorHost
from adapters.appchannel.actors import HttpActorApp
from adapters.appchannel.http_app import HttpApp
from adapters.gateway.context import GatewayConfig
from kernel.subjects import Subjects
from tests.conftest import GatewayClient, free_port, open_gateway


@pytest.fixture
async def gw(nc: Client, subjects: Subjects) -> AsyncIterator[GatewayClient]:
    client, runner = await open_gateway(nc, subjects, GatewayConfig(http_port=free_port(), request_timeout=2))
    yield client
    await client.session.close()
    await runner.cleanup()


async def send(gw: GatewayClient, verb: str, path: str, body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    async with gw.session.request(verb, gw.url(path), data=data) as r:
        payload = await r.read()
        try:
            return r.status, json.loads(payload)
        except ValueError:
            return r.status, payload


@pytest.mark.parametrize("verb", ["POST", "PUT"])
@pytest.mark.parametrize(
    ("raw", "code"),
    [(b"", "ERR_MALFORMED_REQUEST"), (b"{not json", "ERR_MALFORMED_REQUEST"), (b'{"a":1}', "ERR_MALFORMED_REQUEST")],
)
async def test_state_transaction_that_is_not_an_array_is_malformed(
    gw: GatewayClient, verb: str, raw: bytes, code: str
) -> None:
    status, body = await send(gw, verb, "/v1.0/actors/Counter/1/state", raw=raw)
    assert (status, body["errorCode"]) == (400, code)


@pytest.mark.parametrize(
    ("ops", "reason"),
    [
        ([{"operation": "merge", "request": {"key": "k"}}], "operation type merge not supported"),
        ([{"operation": "upsert", "request": {"value": 1}}], "missing key"),
        ([{"operation": "delete"}], "request data is empty"),
        ([{"operation": "", "request": {"key": "k"}}], "operation is empty"),
    ],
)
async def test_state_transaction_with_a_bad_operation_is_a_save_error_as_in_daprd(
    gw: GatewayClient, echo: EchoApp, actors_service: Any, ops: list[dict[str, Any]], reason: str
) -> None:
    await send(gw, "POST", "/v1.0/actors/Echo/1/method/hi")  # active: daprd checks that first
    status, body = await send(gw, "POST", "/v1.0/actors/Echo/1/state", ops)
    assert (status, body["errorCode"]) == (500, "ERR_ACTOR_STATE_TRANSACTION_SAVE")
    assert reason in body["message"]


async def test_state_transaction_on_an_inactive_actor_is_refused_as_in_daprd(
    gw: GatewayClient, echo: EchoApp, actors_service: Any
) -> None:
    ops = [{"operation": "upsert", "request": {"key": "a", "value": 1}}]
    status, body = await send(gw, "POST", "/v1.0/actors/Echo/never-called/state", ops)
    assert (status, body["errorCode"]) == (400, "ERR_ACTOR_INSTANCE_MISSING")
    assert await send(gw, "GET", "/v1.0/actors/Echo/never-called/state/a") == (204, b"")


@pytest.mark.parametrize("kind", ["reminders", "timers"])
@pytest.mark.parametrize("raw", [b"", b"[1,2]", b'{"dueTime": 5}', b'{"period": {"x": 1}}'])
async def test_reminder_or_timer_with_a_bad_body_is_malformed(gw: GatewayClient, kind: str, raw: bytes) -> None:
    status, body = await send(gw, "PUT", f"/v1.0/actors/Counter/1/{kind}/r1", raw=raw)
    assert (status, body["errorCode"]) == (400, "ERR_MALFORMED_REQUEST")


@pytest.mark.parametrize(
    "path",
    [
        "/v1.0/actors/Counter/1/reminders/a%01b",
        "/v1.0/actors/Counter/1/timers/a%23b",
        "/v1.0/actors/Counter/a%5Cb/method/Get",
        "/v1.0/actors/Count%3Fer/1/method/Get",
    ],
)
async def test_names_that_would_escape_their_segment_are_bad_requests(gw: GatewayClient, path: str) -> None:
    verb = "GET" if "/method/" in path else "PUT"
    status, body = await send(gw, verb, path, {"dueTime": "1s"})
    assert (status, body["errorCode"]) == (400, "ERR_BAD_REQUEST")


async def test_state_of_an_actor_type_without_the_actors_service_is_a_state_get_error(gw: GatewayClient) -> None:
    status, body = await send(gw, "GET", "/v1.0/actors/Counter/1/state/k")
    assert (status, body["errorCode"]) == (500, "ERR_ACTOR_STATE_GET")


async def test_method_of_an_actor_type_nobody_hosts_is_an_invoke_error(gw: GatewayClient) -> None:
    status, body = await send(gw, "PUT", "/v1.0/actors/Nobody/1/method/Get", {})
    assert (status, body["errorCode"]) == (500, "ERR_ACTOR_INVOKE_METHOD")
    assert "Nobody" in body["message"]


class EchoApp:
    """An HTTP actor app hosting `Echo`: each method name picks an answer daprd treats differently."""

    def __init__(self) -> None:
        self.deactivated: list[str] = []

    async def config(self, request: web.Request) -> web.Response:
        return web.json_response({"entities": ["Echo"]})

    async def method(self, request: web.Request) -> web.Response:
        name = request.match_info["method"]
        if name == "void":
            return web.Response(body=b"null", content_type="application/json")
        if name == "missing":
            return web.Response(status=404, text="no such method")
        if name == "boom":
            return web.Response(status=500, text="kaboom")
        if name == "created":
            return web.Response(status=201, text="made")
        if name == "flagged":
            return web.json_response({"msg": "actor failed"}, headers={"X-DaprErrorResponseHeader": "true"})
        return web.json_response(
            {
                "id": request.match_info["id"],
                "method": name,
                "body": (await request.read()).decode(),
                "contentType": request.headers.get("Content-Type"),
                "custom": request.headers.get("X-Custom"),
            },
            headers={"X-Reply": "yes"},
        )

    async def deactivate(self, request: web.Request) -> web.Response:
        self.deactivated.append(request.match_info["id"])
        return web.Response(text="ok")


@pytest.fixture
async def echo(nc: Client, subjects: Subjects) -> AsyncIterator[EchoApp]:
    echo = EchoApp()
    server = web.Application()
    server.router.add_get("/dapr/config", echo.config)
    server.router.add_put("/actors/Echo/{id}/method/{method}", echo.method)
    server.router.add_delete("/actors/Echo/{id}", echo.deactivate)
    runner = web.AppRunner(server, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    app = HttpApp("echo", port)
    await app.open()
    host = ActorHost(nc, subjects, HttpActorApp(app))
    assert await host.start()
    yield echo
    await host.stop()
    await app.close()
    await runner.cleanup()


async def test_method_reply_passes_through_with_its_headers(gw: GatewayClient, echo: EchoApp) -> None:
    headers = {"Content-Type": "text/plain", "X-Custom": "c1"}
    for verb in ("POST", "PUT", "GET", "DELETE"):
        async with gw.session.request(
            verb, gw.url("/v1.0/actors/Echo/a%20b/method/hi"), data=b"x", headers=headers
        ) as r:
            assert r.status == 200 and r.headers["X-Reply"] == "yes"
            assert await r.json() == {
                "id": "a b",
                "method": "hi",
                "body": "x",
                "contentType": "text/plain",
                "custom": "c1",
            }


async def test_void_reply_keeps_its_json_null(gw: GatewayClient, echo: EchoApp) -> None:
    async with gw.session.post(gw.url("/v1.0/actors/Echo/1/method/void")) as r:
        assert (r.status, await r.read(), r.content_type) == (200, b"null", "application/json")


@pytest.mark.parametrize(
    ("method", "reason"),
    [
        ("missing", "actor method not found"),
        ("boom", "error from actor service: (500) kaboom"),
        ("created", "error from actor service: (201) made"),
    ],
)
async def test_any_app_answer_but_200_is_err_actor_invoke_method(
    gw: GatewayClient, echo: EchoApp, method: str, reason: str
) -> None:
    status, body = await send(gw, "POST", f"/v1.0/actors/Echo/1/method/{method}")
    assert (status, body["errorCode"]) == (500, "ERR_ACTOR_INVOKE_METHOD")
    assert reason in body["message"]


async def test_actor_error_flagged_by_header_goes_back_as_the_app_wrote_it(gw: GatewayClient, echo: EchoApp) -> None:
    async with gw.session.post(gw.url("/v1.0/actors/Echo/1/method/flagged")) as r:
        assert r.status == 200 and r.headers["X-DaprErrorResponseHeader"] == "true"
        assert await r.json() == {"msg": "actor failed"}


@pytest.fixture
async def actors_service(nc: Client, subjects: Subjects) -> AsyncIterator[Any]:
    from services.actors.service import ActorsService

    service = ActorsService(nc, subjects=subjects)
    await service.start()
    yield service
    await service.stop()


@pytest.mark.parametrize("verb", ["POST", "PUT"])
async def test_state_transaction_then_get_with_204_for_missing(
    gw: GatewayClient, echo: EchoApp, actors_service: Any, verb: str
) -> None:
    await send(gw, "POST", "/v1.0/actors/Echo/s1/method/hi")  # active, as the SDKs' state managers are
    ops = [
        {"operation": "upsert", "request": {"key": "a", "value": {"n": 1}}},
        {"operation": "upsert", "request": {"key": "b", "value": "text", "metadata": {"ttlInSeconds": "60"}}},
        {"operation": "delete", "request": {"key": "c"}},
    ]
    assert await send(gw, verb, "/v1.0/actors/Echo/s1/state", ops) == (204, b"")
    async with gw.session.get(gw.url("/v1.0/actors/Echo/s1/state/a")) as r:
        assert (r.status, await r.read(), r.content_type) == (200, b'{"n":1}', "application/json")
    assert await send(gw, "GET", "/v1.0/actors/Echo/s1/state/b") == (200, "text")
    assert await send(gw, "GET", "/v1.0/actors/Echo/s1/state/c") == (204, b"")
    assert await send(gw, verb, "/v1.0/actors/Echo/s1/state", [{"operation": "delete", "request": {"key": "a"}}]) == (
        204,
        b"",
    )
    assert await send(gw, "GET", "/v1.0/actors/Echo/s1/state/a") == (204, b"")


@pytest.mark.parametrize(
    ("verb", "sent", "data"),
    [
        # The Python SDK: PUT, Go durations with a Greek μ, base64 data.
        ("PUT", {"dueTime": "0h5m0s0ms0μs", "period": "0h0m10s0ms0μs", "data": "aGVsbG8="}, "aGVsbG8="),
        # The JS SDK: POST, `5m`-style durations, plain JSON data.
        ("POST", {"period": "10s", "dueTime": "5m", "data": {"hello": "js"}}, {"hello": "js"}),
        # ISO 8601 with repetitions.
        ("PUT", {"dueTime": "PT5M", "period": "R3/PT10S", "data": [1, None]}, [1, None]),
    ],
)
async def test_reminder_create_get_delete_in_both_sdks_forms(
    gw: GatewayClient, actors_service: Any, verb: str, sent: dict[str, Any], data: Any
) -> None:
    path = "/v1.0/actors/Echo/r1/reminders/daily"
    assert await send(gw, verb, path, sent) == (204, b"")
    status, got = await send(gw, "GET", path)
    assert status == 200
    assert got["data"] == data and got["period"] == sent["period"]
    assert await send(gw, "DELETE", path) == (204, b"")
    status, gone = await send(gw, "GET", path)
    assert (status, gone["errorCode"]) == (404, "ERR_ACTOR_REMINDER_NOT_FOUND")


@pytest.mark.parametrize("period", ["every day", "R0/PT1S", "-5s"])
async def test_reminder_with_an_invalid_period_is_a_reminder_create_error(
    gw: GatewayClient, actors_service: Any, period: str
) -> None:
    status, body = await send(gw, "PUT", "/v1.0/actors/Echo/r2/reminders/bad", {"dueTime": "1s", "period": period})
    assert (status, body["errorCode"]) == (500, "ERR_ACTOR_REMINDER_CREATE")


async def test_timer_on_a_hosted_actor_is_created_and_deleted(gw: GatewayClient, echo: EchoApp) -> None:
    path = "/v1.0/actors/Echo/t1/timers/beat"
    sent = {"callback": "hi", "dueTime": "0h0m30s0ms0μs", "period": "0h0m30s0ms0μs", "data": {"x": 1}}
    assert await send(gw, "PUT", path, sent) == (204, b"")
    assert await send(gw, "DELETE", path) == (204, b"")
    status, body = await send(gw, "POST", path, {"callback": "hi", "dueTime": "soon"})
    assert (status, body["errorCode"]) == (500, "ERR_ACTOR_TIMER_CREATE")
