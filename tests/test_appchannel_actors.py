"""`HttpActorApp`: the daprd actor callback protocol spoken to a real HTTP app."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from adapters.actors.app import ActorCall, CallKind
from adapters.appchannel.actors import HttpActorApp
from adapters.appchannel.http_app import HttpApp
from kernel.errors import Codes, NatriumError
from tests.conftest import free_port

CONFIG = {
    "entities": ["Counter", "Cart"],
    "actorIdleTimeout": "1h0m0s0ms0μs",
    "actorScanInterval": "30s",
    "drainOngoingCallTimeout": "5s",
    "drainRebalancedActors": False,
    "reentrancy": {"enabled": True, "maxStackDepth": 8},
    "entitiesConfig": [{"entities": ["Cart"], "actorIdleTimeout": "10s"}],
}


class Recorder:
    """An app that records every request and answers what the test set."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.config: tuple[int, bytes] = (200, json.dumps(CONFIG).encode())
        self.answer: tuple[int, bytes, dict[str, str]] = (200, b"null", {"Content-Type": "application/json"})

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(
            {
                "verb": request.method,
                "raw_path": request.raw_path,
                "headers": dict(request.headers),
                "body": await request.read(),
            }
        )
        if request.path == "/dapr/config":
            status, body = self.config
            return web.Response(status=status, body=body)
        status, body, headers = self.answer
        return web.Response(status=status, body=body, headers=headers)


@pytest.fixture
async def app() -> AsyncIterator[tuple[Recorder, HttpActorApp]]:
    recorder = Recorder()
    server = web.Application()
    server.router.add_route("*", "/{tail:.*}", recorder.handle)
    runner = web.AppRunner(server, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    http_app = HttpApp("actors-app", port, api_token="app-secret")
    await http_app.open()
    yield recorder, HttpActorApp(http_app, config_retries=2)
    await http_app.close()
    await runner.cleanup()


async def test_config_is_read_once_with_every_setting(app: tuple[Recorder, HttpActorApp]) -> None:
    recorder, actors = app
    config = await actors.actor_config()
    assert config.entities == ["Counter", "Cart"]
    assert config.actor_idle_timeout == "1h0m0s0ms0μs"
    assert config.drain_rebalanced_actors is False
    assert config.reentrancy.enabled and config.reentrancy.max_stack_depth == 8
    assert config.entities_config[0].entities == ["Cart"]
    assert config.entities_config[0].actor_idle_timeout == "10s"
    await actors.actor_config()
    assert [r["raw_path"] for r in recorder.requests] == ["/dapr/config"]
    assert recorder.requests[0]["headers"]["dapr-api-token"] == "app-secret"


@pytest.mark.parametrize(
    "answer",
    [(404, b"404: Not Found"), (200, b"<html>not json</html>"), (200, b'{"entities": "Counter"}'), (500, b"")],
)
async def test_an_app_without_a_valid_config_hosts_no_actors(
    app: tuple[Recorder, HttpActorApp], answer: tuple[int, bytes]
) -> None:
    recorder, actors = app
    recorder.config = answer
    assert (await actors.actor_config()).entities == []


async def test_method_call_is_a_put_with_body_and_headers_and_the_reply_comes_back_unchanged(
    app: tuple[Recorder, HttpActorApp],
) -> None:
    recorder, actors = app
    recorder.answer = (200, b'{"n":1}', {"Content-Type": "application/json", "X-Custom": "yes"})
    call = ActorCall(
        "Counter",
        "a b/c?d",
        CallKind.METHOD,
        "Add",
        b'{"by":2}',
        {
            "Content-Type": "application/json; charset=utf-8",
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "Dapr-Reentrancy-Id": "chain-1",
            "Content-Length": "999",
        },
    )
    reply = await actors.call(call)
    assert reply.ok and reply.status == 200 and reply.body == b'{"n":1}'
    assert reply.headers["X-Custom"] == "yes"
    assert "Content-Length" not in reply.headers
    sent = recorder.requests[0]
    assert sent["verb"] == "PUT"
    # One path segment per id: a space, `/` or `?` cannot change the route.
    assert sent["raw_path"] == "/actors/Counter/a%20b%2Fc%3Fd/method/Add"
    assert sent["body"] == b'{"by":2}'
    assert sent["headers"]["Content-Type"] == "application/json; charset=utf-8"
    assert sent["headers"]["Dapr-Reentrancy-Id"] == "chain-1"
    assert sent["headers"]["traceparent"].startswith("00-0af7651916cd43dd8448eb211c80319c-")
    assert sent["headers"]["dapr-api-token"] == "app-secret"


@pytest.mark.parametrize(("kind", "path"), [(CallKind.REMINDER, "remind/r1"), (CallKind.TIMER, "timer/t1")])
async def test_reminders_and_timers_go_to_their_callback_paths_as_json(
    app: tuple[Recorder, HttpActorApp], kind: CallKind, path: str
) -> None:
    recorder, actors = app
    body = json.dumps({"data": "aGk=", "dueTime": "1s", "period": ""}).encode()
    name = path.split("/")[1]
    reply = await actors.call(ActorCall("Counter", "7", kind, name, body, {"Content-Type": "text/plain"}))
    assert reply.ok
    sent = recorder.requests[0]
    assert (sent["verb"], sent["raw_path"]) == ("PUT", f"/actors/Counter/7/method/{path}")
    assert sent["headers"]["Content-Type"] == "application/json"
    assert json.loads(sent["body"]) == {"data": "aGk=", "dueTime": "1s", "period": ""}


async def test_app_errors_are_replies_not_exceptions(app: tuple[Recorder, HttpActorApp]) -> None:
    recorder, actors = app
    recorder.answer = (500, b'{"message":"boom","errorCode":"UNKNOWN"}', {"Content-Type": "application/json"})
    reply = await actors.call(ActorCall("Counter", "1", CallKind.METHOD, "Fail"))
    assert not reply.ok and reply.status == 500 and b"boom" in reply.body


async def test_deactivation_is_a_delete_and_a_refusal_does_not_raise(app: tuple[Recorder, HttpActorApp]) -> None:
    recorder, actors = app
    await actors.deactivate("Counter", "x/y")
    recorder.answer = (500, b"nope", {})
    await actors.deactivate("Counter", "z")
    assert [(r["verb"], r["raw_path"]) for r in recorder.requests] == [
        ("DELETE", "/actors/Counter/x%2Fy"),
        ("DELETE", "/actors/Counter/z"),
    ]


async def test_an_unreachable_app_is_an_invoke_error() -> None:
    http_app = HttpApp("gone", free_port())
    await http_app.open()
    actors = HttpActorApp(http_app, config_retries=1)
    try:
        with pytest.raises(NatriumError) as caught:
            await actors.call(ActorCall("Counter", "1", CallKind.METHOD, "Get"))
        assert caught.value.code == Codes.ACTOR_INVOKE_METHOD and caught.value.status == 500
        assert (await actors.actor_config()).entities == []
        await actors.deactivate("Counter", "1")  # logged, not raised
    finally:
        await http_app.close()
