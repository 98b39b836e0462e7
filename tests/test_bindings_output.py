"""Output bindings over the bus, each driver against its real server, and the error paths."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from nats.aio.client import Client

from kernel.components import Component
from kernel.errors import NatriumError
from kernel.subjects import Subjects
from tests.bindings_runtime import POSTGRES, REDIS, binding, bindings_service, require
from tests.conftest import free_port, unique


@pytest.fixture
async def echo_server() -> AsyncIterator[str]:
    """An HTTP target that answers what it got; `/status/{code}` answers that status."""

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        answer = {
            "method": request.method,
            "path": request.path,
            "body": body.decode(),
            "token": request.headers.get("X-Token"),
            "custom": request.headers.get("X-Custom"),
        }
        return web.json_response(answer, headers={"X-Answer": "yes"})

    async def status(request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]), text="target says no")

    app = web.Application()
    app.router.add_route("*", "/api/status/{code}", status)
    app.router.add_route("*", "/{tail:.*}", echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_http_verbs_path_and_headers_reach_the_target_and_the_answer_comes_back(
    nc: Client, subjects: Subjects, echo_server: str
) -> None:
    component = binding("web", "http", url=echo_server + "/api", securityToken="s3", securityTokenHeader="X-Token")
    async with bindings_service(nc, subjects, component) as bindings:
        reply = await bindings.invoke("web", "post", b'{"a":1}', path="orders/7", **{"X-Custom": "c1"})
        answer = json.loads(reply["data"])
        assert answer == {"method": "POST", "path": "/api/orders/7", "body": '{"a":1}', "token": "s3", "custom": "c1"}
        assert reply["metadata"]["statusCode"] == "200"
        assert reply["metadata"]["X-Answer"] == "yes"

        got = json.loads((await bindings.invoke("web", "get"))["data"])
        assert (got["method"], got["body"]) == ("GET", "")
        created = json.loads((await bindings.invoke("web", "create", b"x"))["data"])
        assert created["method"] == "POST"  # `create` is POST, as in Dapr

        with pytest.raises(NatriumError) as refused:
            await bindings.invoke("web", "get", path="/status/503")
        assert refused.value.code == "ERR_INVOKE_OUTPUT_BINDING"
        assert refused.value.status == 500
        assert "received status code 503" in refused.value.message
        assert refused.value.details == [{"metadata": refused.value.details[0]["metadata"]}]
        assert refused.value.details[0]["metadata"]["statusCode"] == "503"
        # errorIfNot2XX=false: the answer is data, not an error
        kept = await bindings.invoke("web", "get", path="/status/404", errorIfNot2XX="false")
        assert (kept["data"], kept["metadata"]["statusCode"]) == (b"target says no", "404")


async def test_postgresql_exec_and_query_with_parameters(nc: Client, subjects: Subjects) -> None:
    require(POSTGRES, "PostgreSQL")
    table = unique("bind_")
    dsn = "postgres://postgres@127.0.0.1:5432/test"
    async with bindings_service(nc, subjects, binding("db", "postgresql", connectionString=dsn)) as bindings:
        await bindings.invoke("db", "exec", sql=f"CREATE TABLE {table} (id int PRIMARY KEY, name text, at timestamptz)")
        try:
            inserted = await bindings.invoke(
                "db",
                "exec",
                sql=f"INSERT INTO {table} (id, name, at) VALUES ($1, $2, now()), ($3, $4, now())",
                params=json.dumps([1, "ada", 2, "bob"]),
            )
            assert inserted["metadata"]["rows-affected"] == "2"
            assert inserted["metadata"]["operation"] == "exec"
            assert {"start-time", "end-time", "duration", "sql"} <= set(inserted["metadata"])
            rows = await bindings.invoke(
                "db", "query", sql=f"SELECT id, name FROM {table} WHERE id >= $1 ORDER BY id", params="[1]"
            )
            assert json.loads(rows["data"]) == [[1, "ada"], [2, "bob"]]
            stamped = await bindings.invoke("db", "query", sql=f"SELECT at FROM {table} LIMIT 1")
            assert isinstance(json.loads(stamped["data"])[0][0], str)

            with pytest.raises(NatriumError) as bad_sql:
                await bindings.invoke("db", "query", sql=f"SELECT nope FROM {table}")
            assert bad_sql.value.code == "ERR_INVOKE_OUTPUT_BINDING"
            assert "nope" in bad_sql.value.message
            with pytest.raises(NatriumError, match="params"):
                await bindings.invoke("db", "exec", sql="SELECT 1", params="{not json")
            with pytest.raises(NatriumError, match="sql"):
                await bindings.invoke("db", "exec")
        finally:
            await bindings.invoke("db", "exec", sql=f"DROP TABLE IF EXISTS {table}")
        await bindings.invoke("db", "close")
        with pytest.raises(NatriumError, match="closed"):
            await bindings.invoke("db", "query", sql="SELECT 1")


async def test_redis_create_get_delete_with_ttl(nc: Client, subjects: Subjects) -> None:
    require(REDIS, "Redis")
    key = unique("natrium-bind-")
    async with bindings_service(nc, subjects, binding("cache", "redis", redisHost="127.0.0.1:6379")) as bindings:
        assert "data" not in await bindings.invoke("cache", "create", b"\x00binary\xff", key=key, ttlInSeconds="60")
        assert (await bindings.invoke("cache", "get", key=key))["data"] == b"\x00binary\xff"
        ttl = await bindings.service.stores["cache"].driver.client.ttl(key)  # type: ignore[attr-defined]
        assert 0 < ttl <= 60
        await bindings.invoke("cache", "delete", key=key)
        assert "data" not in await bindings.invoke("cache", "get", key=key)  # missing: no data, not an error
        with pytest.raises(NatriumError, match="missing key"):
            await bindings.invoke("cache", "create", b"x")


async def test_localstorage_files_stay_under_the_root(nc: Client, subjects: Subjects, tmp_path: Path) -> None:
    root = tmp_path / "files"
    outside = tmp_path / "secret.txt"
    outside.write_text("do not read")
    async with bindings_service(nc, subjects, binding("disk", "localstorage", rootPath=str(root))) as bindings:
        made = await bindings.invoke("disk", "create", b'"hello world"', fileName="a/b.txt")
        assert json.loads(made["data"]) == {"fileName": "a/b.txt"}
        assert (root / "a/b.txt").read_text() == "hello world"  # a JSON string is stored as its text
        assert (await bindings.invoke("disk", "get", fileName="a/b.txt"))["data"] == b"hello world"
        named = json.loads((await bindings.invoke("disk", "create", b"aGk="))["data"])["fileName"]
        assert (root / named).read_bytes() == b"hi"  # base64 is decoded, as Dapr does
        listed = json.loads((await bindings.invoke("disk", "list"))["data"])
        assert sorted(listed) == sorted([str(root / "a/b.txt"), str(root / named)])

        (root / "link").symlink_to(outside)
        for escape in ("../secret.txt", str(outside), "a/../../secret.txt", "link"):
            for operation in ("get", "create", "delete"):
                with pytest.raises(NatriumError) as refused:
                    await bindings.invoke("disk", operation, b"overwrite", fileName=escape)
                assert refused.value.code == "ERR_INVOKE_OUTPUT_BINDING"
                assert "leaves rootPath" in refused.value.message
        assert outside.read_text() == "do not read"

        await bindings.invoke("disk", "delete", fileName="a/b.txt")
        with pytest.raises(NatriumError, match="file not found"):
            await bindings.invoke("disk", "get", fileName="a/b.txt")


async def test_nats_binding_publishes_and_requests_on_plain_subjects(nc: Client, subjects: Subjects) -> None:
    subject = unique("plain.")
    seen: list[bytes] = []

    async def answer(msg: object) -> None:
        data = msg.data  # type: ignore[attr-defined]
        seen.append(data)
        if msg.reply:  # type: ignore[attr-defined]
            await msg.respond(b"re:" + data)  # type: ignore[attr-defined]

    sub = await nc.subscribe(subject, cb=answer)
    try:
        async with bindings_service(nc, subjects, binding("bus", "nats", subject=subject)) as bindings:
            assert "data" not in await bindings.invoke("bus", "create", b"one")
            reply = await bindings.invoke("bus", "request", b"two")
            assert reply["data"] == b"re:two"
            assert seen == [b"one", b"two"]
    finally:
        await sub.unsubscribe()


async def test_unknown_binding_and_operation_are_daprs_errors(nc: Client, subjects: Subjects, tmp_path: Path) -> None:
    async with bindings_service(nc, subjects, binding("disk", "localstorage", rootPath=str(tmp_path))) as bindings:
        with pytest.raises(NatriumError) as unknown:
            await bindings.invoke("nope", "create")
        assert (unknown.value.code, unknown.value.status) == ("ERR_INVOKE_OUTPUT_BINDING", 500)
        assert "couldn't find output binding nope" in unknown.value.message

        with pytest.raises(NatriumError) as unsupported:
            await bindings.invoke("disk", "query")
        assert unsupported.value.code == "ERR_INVOKE_OUTPUT_BINDING"
        assert "does not support operation query" in unsupported.value.message
        assert "create get list delete" in unsupported.value.message

        with pytest.raises(NatriumError, match="operation field is missing"):
            await bindings.invoke("disk", "")


async def test_unreachable_targets_fail_within_the_component_timeout(nc: Client, subjects: Subjects) -> None:
    closed = free_port()
    components = [
        binding("web", "http", url=f"http://127.0.0.1:{closed}", responseTimeout="1s"),
        binding("cache", "redis", redisHost=f"127.0.0.1:{closed}", dialTimeout="1s"),
        binding("db", "postgresql", connectionString=f"postgres://postgres@127.0.0.1:{closed}/test", timeout="1s"),
        binding("mq", "rabbitmq", host=f"amqp://guest:guest@127.0.0.1:{closed}", queueName="q", timeout="1s"),
        binding("mqtt", "mqtt3", url=f"tcp://127.0.0.1:{closed}", topic="t", timeout="1s"),
        # a target that accepts the call and never answers: the binding's own `timeout` ends it
        binding("bus", "nats", subject=unique("silent."), timeout="1s"),
    ]
    async with bindings_service(nc, subjects, *components) as bindings:
        calls = {"web": "get", "cache": "get", "db": "query", "mq": "create", "mqtt": "create", "bus": "request"}
        loop = asyncio.get_running_loop()
        for name, operation in calls.items():
            started = loop.time()
            with pytest.raises(NatriumError) as failed:
                await bindings.invoke(name, operation, key="k", sql="SELECT 1", timeout=15)
            # Bounded by the 1s timeouts (plus a connect retry or two), far from the caller's 15s.
            assert loop.time() - started < 6, (name, loop.time() - started)
            assert failed.value.code == "ERR_INVOKE_OUTPUT_BINDING", (name, failed.value)
            assert failed.value.message.startswith(f"error invoking output binding {name}: "), failed.value.message


@pytest.mark.parametrize(
    ("kind", "metadata", "why"),
    [
        ("http", {}, "metadata url is required"),
        ("http", {"url": "ftp://x"}, "http:// or https://"),
        ("redis", {"redisHost": "h:port"}, "host:port"),
        ("mqtt3", {"url": "tcp://127.0.0.1:1883", "topic": "t", "qos": "7"}, "qos"),
        ("cron", {"schedule": "every day"}, "6 fields"),
        ("cron", {"schedule": "@every 100ms"}, "1s"),
        ("cron", {"schedule": "*/5 * * * * *", "direction": "output"}, "no output side"),
        ("localstorage", {"rootPath": "/proc/x"}, "disallowed"),
        ("http", {"url": "http://x", "timeout": "soon"}, "timeout"),
    ],
)
async def test_bad_metadata_stops_the_component_with_a_clear_error(
    nc: Client, subjects: Subjects, kind: str, metadata: dict[str, str], why: str
) -> None:
    with pytest.raises(NatriumError) as invalid:
        async with bindings_service(nc, subjects, binding("bad", kind, **metadata)):
            pass
    assert invalid.value.code == "ERR_COMPONENT_INVALID"
    assert why in invalid.value.message


async def test_a_scoped_binding_serves_only_the_apps_its_scopes_name(
    nc: Client, subjects: Subjects, tmp_path: Path
) -> None:
    from adapters.sdk import Client as SdkClient

    scoped = Component(
        name="private-disk", type="bindings.localstorage", metadata={"rootPath": str(tmp_path)}, scopes=("owner",)
    )
    async with bindings_service(nc, subjects, scoped):
        owner = SdkClient(nc, app_id="owner", subjects=subjects)
        await owner.invoke_binding("private-disk", "create", b'"mine!"', metadata={"fileName": "f"})
        assert (tmp_path / "f").read_bytes() == b"mine!"
        with pytest.raises(NatriumError) as refused:
            await SdkClient(nc, app_id="stranger", subjects=subjects).invoke_binding(
                "private-disk", "get", metadata={"fileName": "f"}
            )
        assert refused.value.code == "ERR_INVOKE_OUTPUT_BINDING" and "couldn't find" in refused.value.message
