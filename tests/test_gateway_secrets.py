"""Dapr's HTTP secrets API through the gateway: bodies and status codes as daprd gives them."""

from __future__ import annotations

import json
from pathlib import Path

from nats.aio.client import Client

from adapters.gateway.context import GatewayConfig
from kernel.components import Component
from kernel.subjects import Subjects
from tests.conftest import GatewayClient, free_port, open_gateway, unique
from tests.secrets_runtime import SecretsRuntime, scopes_config, sealed_component, secrets_runtime, write_key


async def get(http: GatewayClient, path: str) -> tuple[int, object]:
    async with http.session.get(http.url(path)) as r:
        raw = await r.read()
        if raw:
            assert r.headers["Content-Type"].startswith("application/json")
        return r.status, json.loads(raw) if raw else None


class Gateway:
    """An in-process gateway on the runtime's root, speaking for `app_id`."""

    def __init__(self, nc: Client, subjects: Subjects, app_id: str | None = None) -> None:
        self.nc, self.subjects, self.app_id = nc, subjects, app_id

    async def __aenter__(self) -> GatewayClient:
        config = GatewayConfig(http_port=free_port(), app_id=self.app_id)
        self.client, self.runner = await open_gateway(self.nc, self.subjects, config)
        return self.client

    async def __aexit__(self, *exc: object) -> None:
        await self.client.session.close()
        await self.runner.cleanup()


async def put(rt: SecretsRuntime, store: str, name: str, value: object) -> None:
    await rt.call(store, "put", {"name": name, "value": value})


async def test_get_returns_the_secret_map(nc: Client, subjects: Subjects, tmp_path: Path) -> None:
    vault = sealed_component(write_key(tmp_path))
    async with secrets_runtime(nc, subjects, [vault]) as rt, Gateway(nc, subjects) as http:
        await put(rt, vault.name, "db-pass", "s3cr3t")
        await put(rt, vault.name, "db", {"user": "app", "password": "pw"})
        assert await get(http, f"/v1.0/secrets/{vault.name}/db-pass") == (200, {"db-pass": "s3cr3t"})
        assert await get(http, f"/v1.0/secrets/{vault.name}/db") == (200, {"user": "app", "password": "pw"})
        assert await get(http, f"/v1.0/secrets/{vault.name}/db-pass?metadata.version=2") == (200, {"db-pass": "s3cr3t"})


async def test_bulk_returns_every_secret(nc: Client, subjects: Subjects, tmp_path: Path) -> None:
    vault = sealed_component(write_key(tmp_path))
    async with secrets_runtime(nc, subjects, [vault]) as rt, Gateway(nc, subjects) as http:
        assert await get(http, f"/v1.0/secrets/{vault.name}/bulk") == (200, {})
        await put(rt, vault.name, "a", "1")
        await put(rt, vault.name, "b", {"x": "2", "y": "3"})
        assert await get(http, f"/v1.0/secrets/{vault.name}/bulk") == (
            200,
            {"a": {"a": "1"}, "b": {"x": "2", "y": "3"}},
        )


async def test_local_file_secret_with_separator_in_its_name(nc: Client, subjects: Subjects, tmp_path: Path) -> None:
    (tmp_path / "s.json").write_text(json.dumps({"db": {"user": "app"}}))
    local = Component(
        name=unique("local-"), type="secretstores.local.file", metadata={"secretsFile": str(tmp_path / "s.json")}
    )
    async with secrets_runtime(nc, subjects, [local]), Gateway(nc, subjects) as http:
        assert await get(http, f"/v1.0/secrets/{local.name}/db:user") == (200, {"db:user": "app"})
        assert await get(http, f"/v1.0/secrets/{local.name}/bulk") == (200, {"db:user": {"db:user": "app"}})


async def test_errors_have_daprs_codes_and_statuses(nc: Client, subjects: Subjects, tmp_path: Path) -> None:
    vault = sealed_component(write_key(tmp_path))
    async with secrets_runtime(nc, subjects, [vault]), Gateway(nc, subjects) as http:
        status, body = await get(http, "/v1.0/secrets/nope/x")
        assert status == 401
        assert body == {
            "errorCode": "ERR_SECRET_STORE_NOT_FOUND",
            "message": "failed finding secret store with key nope",
        }
        status, body = await get(http, "/v1.0/secrets/nope/bulk")
        assert status == 401 and body["errorCode"] == "ERR_SECRET_STORE_NOT_FOUND"  # type: ignore[index]
        status, body = await get(http, f"/v1.0/secrets/{vault.name}/missing")
        assert status == 500
        why = f"failed getting secret with key missing from secret store {vault.name}: secret missing not found"
        assert body == {"errorCode": "ERR_SECRET_GET", "message": why}


async def test_no_secrets_service_is_500_not_configured(nc: Client, subjects: Subjects) -> None:
    async with Gateway(nc, subjects) as http:
        status, body = await get(http, "/v1.0/secrets/secretstore/x")
        assert status == 500 and body["errorCode"] == "ERR_SECRET_STORES_NOT_CONFIGURED"  # type: ignore[index]


async def test_scopes_deny_with_403_and_filter_bulk(nc: Client, subjects: Subjects, tmp_path: Path) -> None:
    vault = sealed_component(write_key(tmp_path))
    resources = scopes_config(vault.name)
    async with secrets_runtime(nc, subjects, [vault], resources) as rt, Gateway(nc, subjects, "checkout") as http:
        for name in ("api-key", "other"):
            await put(rt, vault.name, name, "v")
        assert await get(http, f"/v1.0/secrets/{vault.name}/api-key") == (200, {"api-key": "v"})
        status, body = await get(http, f"/v1.0/secrets/{vault.name}/other")
        assert status == 403
        assert body == {
            "errorCode": "ERR_PERMISSION_DENIED",
            "message": f"access denied by policy to get 'other' from '{vault.name}'",
        }
        assert await get(http, f"/v1.0/secrets/{vault.name}/bulk") == (200, {"api-key": {"api-key": "v"}})
