"""`POST /v1.0/bindings/{name}` through the HTTP gateway, answered the way daprd answers it."""

from __future__ import annotations

import json
from pathlib import Path

from aiohttp import web
from nats.aio.client import Client

from adapters.gateway.context import GatewayConfig
from kernel.subjects import Subjects
from tests.bindings_runtime import binding, bindings_service
from tests.conftest import free_port, open_gateway


async def test_output_binding_over_http(nc: Client, subjects: Subjects, tmp_path: Path) -> None:
    async def refuse(request: web.Request) -> web.Response:
        return web.Response(status=503, text="busy", headers={"Retry-After": "3"})

    target = web.Application()
    target.router.add_get("/busy", refuse)
    target_runner = web.AppRunner(target, access_log=None)
    await target_runner.setup()
    target_port = free_port()
    await web.TCPSite(target_runner, "127.0.0.1", target_port).start()

    components = [
        binding("disk", "localstorage", rootPath=str(tmp_path)),
        binding("web", "http", url=f"http://127.0.0.1:{target_port}"),
    ]
    client, runner = await open_gateway(nc, subjects, GatewayConfig(http_port=free_port()))
    try:
        url = client.url("/v1.0/bindings/")
        # no bindings service yet: daprd's code, and a hint
        async with client.session.post(url + "disk", json={"operation": "list"}) as r:
            assert r.status == 500
            assert (await r.json())["errorCode"] == "ERR_INVOKE_OUTPUT_BINDING"

        async with bindings_service(nc, subjects, *components):
            body = {"operation": "create", "data": "hello", "metadata": {"fileName": "greeting.txt"}}
            async with client.session.post(url + "disk", json=body) as r:
                assert r.status == 200
                assert json.loads(await r.read()) == {"fileName": "greeting.txt"}
            assert (tmp_path / "greeting.txt").read_text() == "hello"

            # any JSON value is marshalled for the component; PUT works as POST
            body = {"operation": "create", "data": {"n": 1}, "metadata": {"fileName": "doc.json"}}
            async with client.session.put(url + "disk", json=body) as r:
                assert r.status == 200
            assert json.loads((tmp_path / "doc.json").read_text()) == {"n": 1}

            get = {"operation": "get", "metadata": {"fileName": "greeting.txt"}}
            async with client.session.post(url + "disk", json=get) as r:
                assert (r.status, await r.read()) == (200, b"hello")

            delete = {"operation": "delete", "metadata": {"fileName": "greeting.txt"}}
            async with client.session.post(url + "disk", json=delete) as r:
                assert (r.status, await r.read()) == (204, b"")

            # the target's metadata comes back as headers, also with the error
            async with client.session.post(url + "web", json={"operation": "get", "metadata": {"path": "busy"}}) as r:
                assert r.status == 500
                error = await r.json()
                assert error["errorCode"] == "ERR_INVOKE_OUTPUT_BINDING"
                assert "received status code 503" in error["message"]
                assert r.headers["metadata.statusCode"] == "503"
                assert r.headers["metadata.Retry-After"] == "3"

            async with client.session.post(url + "nope", json={"operation": "create"}) as r:
                assert r.status == 500
                assert (await r.json())["errorCode"] == "ERR_INVOKE_OUTPUT_BINDING"

            async with client.session.post(url + "disk", data=b"{not json") as r:
                assert r.status == 400
                assert (await r.json())["errorCode"] == "ERR_MALFORMED_REQUEST"
            async with client.session.post(url + "disk", json={"operation": "get", "metadata": {"n": 1}}) as r:
                assert r.status == 400
    finally:
        await client.session.close()
        await runner.cleanup()
        await target_runner.cleanup()
