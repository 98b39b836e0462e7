"""The secrets block over the bus: sealed store, Dapr's local stores, scopes, and the errors daprd gives."""

from __future__ import annotations

import base64
import json
import os
import stat
import uuid
from pathlib import Path

import pytest
from nats.aio.client import Client
from nats.js.object_store import ObjectStore

from kernel.components import Component
from kernel.errors import NatriumError
from kernel.jetstream import component_bucket
from kernel.subjects import Subjects
from services.secrets.store import SEALED_TYPE
from tests.conftest import unique
from tests.secrets_runtime import (
    SecretsRuntime,
    drop_buckets,
    scopes_config,
    sealed_component,
    secrets_runtime,
    start_secrets,
    write_key,
)


async def raw_stream_bytes(nc: Client, stream: str) -> list[bytes]:
    """Every message of a stream, data and headers, read straight from JetStream."""
    js = nc.jetstream()
    info = await js.stream_info(stream)
    found = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        try:
            msg = await js.get_msg(stream, seq)
        except Exception:
            continue  # purged (an overwritten object's old chunk)
        found.append((msg.data or b"") + json.dumps(msg.headers or {}).encode())
    return found


# -- sealed store ---------------------------------------------------------------------------------


async def test_sealed_put_then_get_round_trips_over_the_bus(nc: Client, subjects: Subjects, tmp_path: Path) -> None:
    vault = sealed_component(write_key(tmp_path))
    async with secrets_runtime(nc, subjects, [vault]) as rt:
        await rt.call(vault.name, "put", {"name": "db-pass", "value": "s3cr3t"})
        await rt.call(vault.name, "put", {"name": "db", "value": {"user": "app", "password": "pw"}})
        assert await rt.call(vault.name, "get", {"name": "db-pass"}) == {"data": {"db-pass": "s3cr3t"}}
        assert await rt.call(vault.name, "get", {"name": "db"}) == {"data": {"user": "app", "password": "pw"}}
        await rt.call(vault.name, "put", {"name": "db-pass", "value": "rotated"})
        assert await rt.call(vault.name, "get", {"name": "db-pass"}) == {"data": {"db-pass": "rotated"}}
        bulk = await rt.call(vault.name, "bulk", {})
        assert bulk == {"data": {"db-pass": {"db-pass": "rotated"}, "db": {"user": "app", "password": "pw"}}}
        assert await rt.call(vault.name, "list", {}) == {"names": ["db", "db-pass"]}


async def test_raw_bucket_holds_no_plaintext(nc: Client, subjects: Subjects, tmp_path: Path) -> None:
    vault = sealed_component(write_key(tmp_path))
    plain, other = f"plaintext-{uuid.uuid4().hex}", f"other-{uuid.uuid4().hex}"
    async with secrets_runtime(nc, subjects, [vault]) as rt:
        await rt.call(vault.name, "put", {"name": "api-key", "value": plain})
        await rt.call(vault.name, "put", {"name": "multi", "value": {"k": other}})
        messages = await raw_stream_bytes(nc, rt.bucket_stream(vault.name))
        assert len(messages) >= 4  # a chunk and a meta record per secret
        for raw in messages:
            for secret in (plain, other):
                assert secret.encode() not in raw
                assert base64.b64encode(secret.encode()) not in raw
        assert (await rt.call(vault.name, "get", {"name": "api-key"}))["data"] == {"api-key": plain}


async def test_value_copied_to_another_name_does_not_open(nc: Client, subjects: Subjects, tmp_path: Path) -> None:
    vault = sealed_component(write_key(tmp_path))
    async with secrets_runtime(nc, subjects, [vault]) as rt:
        await rt.call(vault.name, "put", {"name": "admin", "value": "root-pass"})
        bucket = component_bucket(vault, "secrets")
        objects = ObjectStore(name=bucket, stream=f"OBJ_{bucket}", js=nc.jetstream())
        sealed = (await objects.get("admin")).data
        await objects.put("guest", sealed)  # an attacker with bucket access moves the sealed bytes
        with pytest.raises(NatriumError) as err:
            await rt.call(vault.name, "get", {"name": "guest"})
        assert (err.value.code, err.value.status) == ("ERR_SECRET_GET", 500)
        assert "cannot unseal" in err.value.message and "root-pass" not in err.value.message


async def test_wrong_key_gives_a_clear_error_never_plaintext(nc: Client, subjects: Subjects, tmp_path: Path) -> None:
    name = unique("vault-")
    first = sealed_component(write_key(tmp_path, "one.key"), name)
    service = await start_secrets(nc, subjects, [first])
    try:
        await SecretsRuntime(nc, subjects, service).call(name, "put", {"name": "token", "value": "tok-123"})
    finally:
        await service.stop()
    second = sealed_component(write_key(tmp_path, "two.key"), name)
    async with secrets_runtime(nc, subjects, [second]) as rt:
        with pytest.raises(NatriumError) as err:
            await rt.call(name, "get", {"name": "token"})
        assert (err.value.code, err.value.status) == ("ERR_SECRET_GET", 500)
        message = err.value.message
        assert message.startswith(f"failed getting secret with key token from secret store {name}: cannot unseal")
        assert "tok-123" not in message and "Traceback" not in message
        with pytest.raises(NatriumError, match="cannot unseal"):
            await rt.call(name, "bulk", {})


async def test_large_value_round_trips_across_object_chunks(nc: Client, subjects: Subjects, tmp_path: Path) -> None:
    vault = sealed_component(write_key(tmp_path))
    big = "x" * 300_000  # over the object store's 128 KiB chunk size
    async with secrets_runtime(nc, subjects, [vault]) as rt:
        await rt.call(vault.name, "put", {"name": "cert", "value": big})
        assert (await rt.call(vault.name, "get", {"name": "cert"}))["data"]["cert"] == big


async def test_delete_then_get_is_not_found_and_missing_delete_is_404(
    nc: Client, subjects: Subjects, tmp_path: Path
) -> None:
    vault = sealed_component(write_key(tmp_path))
    async with secrets_runtime(nc, subjects, [vault]) as rt:
        await rt.call(vault.name, "put", {"name": "gone", "value": "v"})
        await rt.call(vault.name, "delete", {"name": "gone"})
        with pytest.raises(NatriumError) as err:
            await rt.call(vault.name, "get", {"name": "gone"})
        assert (err.value.code, err.value.status) == ("ERR_SECRET_GET", 500)
        assert (
            err.value.message
            == f"failed getting secret with key gone from secret store {vault.name}: secret gone not found"
        )
        with pytest.raises(NatriumError) as err:
            await rt.call(vault.name, "delete", {"name": "gone"})
        assert (err.value.code, err.value.status) == ("ERR_SECRET_DELETE", 404)
        assert await rt.call(vault.name, "list", {}) == {"names": []}
        assert await rt.call(vault.name, "bulk", {}) == {"data": {}}


async def test_bad_requests_are_400(nc: Client, subjects: Subjects, tmp_path: Path) -> None:
    vault = sealed_component(write_key(tmp_path))
    async with secrets_runtime(nc, subjects, [vault]) as rt:
        for operation, body in [
            ("get", {"name": ""}),
            ("put", {"name": "x"}),
            ("put", {"name": "x", "value": 3}),
            ("put", {"name": "x", "value": {"k": 1}}),
        ]:
            with pytest.raises(NatriumError) as err:
                await rt.call(vault.name, operation, body)
            assert (err.value.code, err.value.status) == ("ERR_MALFORMED_REQUEST", 400), body
        with pytest.raises(NatriumError) as err:
            await rt.call(vault.name, "put", {"name": "x", "value": {}})
        assert (err.value.code, err.value.status) == ("ERR_SECRET_PUT", 400)


async def test_unknown_store_is_401(nc: Client, subjects: Subjects, tmp_path: Path) -> None:
    vault = sealed_component(write_key(tmp_path))
    async with secrets_runtime(nc, subjects, [vault]) as rt:
        with pytest.raises(NatriumError) as err:
            await rt.call("nope", "get", {"name": "x"})
        assert (err.value.code, err.value.status) == ("ERR_SECRET_STORE_NOT_FOUND", 401)
        assert err.value.message == "failed finding secret store with key nope"


# -- keys -----------------------------------------------------------------------------------------


async def test_missing_key_file_stops_startup_naming_component_and_file(
    nc: Client, subjects: Subjects, tmp_path: Path
) -> None:
    vault = sealed_component(tmp_path / "absent.key")
    with pytest.raises(NatriumError) as err:
        await start_secrets(nc, subjects, [vault])
    assert err.value.code == "ERR_COMPONENT_INVALID"
    assert vault.name in err.value.message and str(tmp_path / "absent.key") in err.value.message


async def test_missing_key_variable_stops_startup_naming_it(
    nc: Client, subjects: Subjects, monkeypatch: pytest.MonkeyPatch
) -> None:
    variable = unique("VAULT_KEY_").upper()
    monkeypatch.delenv(variable, raising=False)
    vault = Component(name=unique("vault-"), type=SEALED_TYPE, metadata={"keyEnv": variable})
    with pytest.raises(NatriumError) as err:
        await start_secrets(nc, subjects, [vault])
    assert err.value.code == "ERR_COMPONENT_INVALID"
    assert vault.name in err.value.message and f"environment variable {variable}" in err.value.message


@pytest.mark.parametrize("text", ["c2hvcnQ=", "not a key at all!", "ab" * 31, base64.b64encode(b"k" * 33).decode()])
async def test_malformed_key_is_refused_without_echoing_it(
    nc: Client, subjects: Subjects, monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    variable = unique("VAULT_KEY_").upper()
    monkeypatch.setenv(variable, text)
    vault = Component(name=unique("vault-"), type=SEALED_TYPE, metadata={"keyEnv": variable})
    with pytest.raises(NatriumError) as err:
        await start_secrets(nc, subjects, [vault])
    assert err.value.code == "ERR_COMPONENT_INVALID"
    assert variable in err.value.message and text not in err.value.message and "32" in err.value.message


async def test_hex_key_from_env_works(nc: Client, subjects: Subjects, monkeypatch: pytest.MonkeyPatch) -> None:
    variable = unique("VAULT_KEY_").upper()
    monkeypatch.setenv(variable, os.urandom(32).hex())
    vault = Component(name=unique("vault-"), type=SEALED_TYPE, metadata={"keyEnv": variable})
    async with secrets_runtime(nc, subjects, [vault]) as rt:
        await rt.call(vault.name, "put", {"name": "a", "value": "b"})
        assert await rt.call(vault.name, "get", {"name": "a"}) == {"data": {"a": "b"}}


async def test_without_key_metadata_a_key_file_is_created_once_with_mode_0600(
    nc: Client, subjects: Subjects, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("NATRIUM_SECRETS_KEY", raising=False)
    vault = Component(name=unique("vault-"), type=SEALED_TYPE)
    key_file = tmp_path / ".natrium" / "secrets.key"
    service = await start_secrets(nc, subjects, [vault])
    try:
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        first_key = key_file.read_text()
        assert len(base64.b64decode(first_key)) == 32
        await nc.request(
            subjects.block("secrets", vault.name, "put"),
            b'{"name":"n","value":"v"}',
            headers={"Content-Type": "application/json"},
        )
    finally:
        await service.stop()
    async with secrets_runtime(nc, subjects, [vault]) as rt:  # a restart reads the same key
        assert key_file.read_text() == first_key
        assert await rt.call(vault.name, "get", {"name": "n"}) == {"data": {"n": "v"}}


async def test_default_store_uses_natrium_secrets_key_and_writes_no_file(
    nc: Client, subjects: Subjects, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NATRIUM_SECRETS_KEY", base64.b64encode(os.urandom(32)).decode())
    default = Component(name="secretstore", type=SEALED_TYPE)
    service = await start_secrets(nc, subjects, [])  # no YAML: the built-in `secretstore`
    try:
        assert list(service.stores) == ["secretstore"]
        assert not (tmp_path / ".natrium").exists()
        body = b'{"name":"fresh","value":"install"}'
        hdr = {"Content-Type": "application/json"}
        await nc.request(subjects.block("secrets", "secretstore", "put"), body, headers=hdr)
        reply = await nc.request(subjects.block("secrets", "secretstore", "get"), b'{"name":"fresh"}', headers=hdr)
        assert json.loads(reply.data) == {"data": {"fresh": "install"}}
    finally:
        await service.stop()
        await drop_buckets(nc, [default])


# -- local stores ---------------------------------------------------------------------------------

NESTED = {
    "plain": "x",
    "db": {"user": "app", "password": "pw", "replicas": ["r1", "r2"]},
    "port": 5432,
    "tls": True,
}


async def test_local_file_flattens_nested_keys(nc: Client, subjects: Subjects, tmp_path: Path) -> None:
    (tmp_path / "secrets.json").write_text(json.dumps(NESTED))
    local = Component(
        name=unique("local-"), type="secretstores.local.file", metadata={"secretsFile": str(tmp_path / "secrets.json")}
    )
    async with secrets_runtime(nc, subjects, [local]) as rt:
        assert await rt.call(local.name, "get", {"name": "plain"}) == {"data": {"plain": "x"}}
        assert await rt.call(local.name, "get", {"name": "db:user"}) == {"data": {"db:user": "app"}}
        assert await rt.call(local.name, "get", {"name": "db:replicas:1"}) == {"data": {"db:replicas:1": "r2"}}
        assert await rt.call(local.name, "get", {"name": "port"}) == {"data": {"port": "5432"}}
        assert await rt.call(local.name, "get", {"name": "tls"}) == {"data": {"tls": "true"}}
        with pytest.raises(NatriumError) as err:
            await rt.call(local.name, "get", {"name": "db"})
        assert err.value.code == "ERR_SECRET_GET" and "secret db not found" in err.value.message
        names = (await rt.call(local.name, "bulk", {}))["data"]
        assert names["db:password"] == {"db:password": "pw"} and len(names) == 7
        with pytest.raises(NatriumError) as err:
            await rt.call(local.name, "put", {"name": "a", "value": "b"})
        assert (err.value.code, err.value.status) == ("ERR_SECRET_PUT", 400) and "read-only" in err.value.message


async def test_local_file_separator_and_multi_valued(nc: Client, subjects: Subjects, tmp_path: Path) -> None:
    (tmp_path / "secrets.json").write_text(json.dumps(NESTED))
    path = str(tmp_path / "secrets.json")
    dotted = Component(
        name=unique("dots-"), type="secretstores.local.file", metadata={"secretsFile": path, "nestedSeparator": "."}
    )
    multi = Component(
        name=unique("multi-"), type="secretstores.local.file", metadata={"secretsFile": path, "multiValued": "true"}
    )
    async with secrets_runtime(nc, subjects, [dotted, multi]) as rt:
        assert await rt.call(dotted.name, "get", {"name": "db.user"}) == {"data": {"db.user": "app"}}
        db = await rt.call(multi.name, "get", {"name": "db"})
        assert db == {"data": {"user": "app", "password": "pw", "replicas:0": "r1", "replicas:1": "r2"}}
        assert await rt.call(multi.name, "get", {"name": "plain"}) == {"data": {"plain": "x"}}


async def test_local_file_problems_stop_startup_with_the_file_named(
    nc: Client, subjects: Subjects, tmp_path: Path
) -> None:
    (tmp_path / "bad.json").write_text("{not json")
    for metadata, why in [
        ({}, "secretsFile"),
        ({"secretsFile": str(tmp_path / "none.json")}, "does not exist"),
        ({"secretsFile": str(tmp_path / "bad.json")}, "not valid JSON"),
    ]:
        local = Component(name=unique("local-"), type="secretstores.local.file", metadata=metadata)
        with pytest.raises(NatriumError) as err:
            await start_secrets(nc, subjects, [local])
        assert err.value.code == "ERR_COMPONENT_INVALID"
        assert local.name in err.value.message and why in err.value.message


async def test_local_env_reads_variables_with_prefix(
    nc: Client, subjects: Subjects, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = unique("APP").upper() + "_"
    monkeypatch.setenv(prefix + "TOKEN", "t0k")
    monkeypatch.setenv(prefix + "DB_PASS", "pw")
    monkeypatch.setenv("DAPR_API_TOKEN_SECRET_TEST", "never")
    plain = Component(name=unique("env-"), type="secretstores.local.env")
    prefixed = Component(name=unique("envp-"), type="secretstores.local.env", metadata={"prefix": prefix})
    async with secrets_runtime(nc, subjects, [plain, prefixed]) as rt:
        assert await rt.call(prefixed.name, "get", {"name": "TOKEN"}) == {"data": {"TOKEN": "t0k"}}
        assert await rt.call(plain.name, "get", {"name": prefix + "TOKEN"}) == {"data": {prefix + "TOKEN": "t0k"}}
        assert await rt.call(prefixed.name, "get", {"name": "UNSET"}) == {"data": {"UNSET": ""}}  # as daprd
        assert await rt.call(plain.name, "get", {"name": "DAPR_API_TOKEN_SECRET_TEST"}) == {
            "data": {"DAPR_API_TOKEN_SECRET_TEST": ""}
        }
        assert (await rt.call(prefixed.name, "bulk", {}))["data"] == {
            "TOKEN": {"TOKEN": "t0k"},
            "DB_PASS": {"DB_PASS": "pw"},
        }
        everything = (await rt.call(plain.name, "bulk", {}))["data"]
        assert prefix + "TOKEN" in everything
        assert not any(name.upper().startswith(("DAPR_", "NATRIUM_", "NATS_")) for name in everything)


async def test_unsupported_type_is_refused_unless_ignore_errors(nc: Client, subjects: Subjects) -> None:
    odd = Component(name=unique("odd-"), type="secretstores.hashicorp.vault")
    with pytest.raises(NatriumError, match="not supported"):
        await start_secrets(nc, subjects, [odd])
    ignored = odd.model_copy(update={"ignore_errors": True})
    async with secrets_runtime(nc, subjects, [ignored]) as rt:
        with pytest.raises(NatriumError) as err:
            await rt.call(odd.name, "get", {"name": "x"})
        assert (err.value.code, err.value.status) == ("ERR_SECRET_STORES_NOT_CONFIGURED", 500)


# -- scopes ---------------------------------------------------------------------------------------


async def test_scopes_allow_deny_and_default(nc: Client, subjects: Subjects, tmp_path: Path) -> None:
    vault = sealed_component(write_key(tmp_path))
    async with secrets_runtime(nc, subjects, [vault], scopes_config(vault.name)) as rt:
        for name in ("api-key", "root-pass", "other"):
            await rt.call(vault.name, "put", {"name": name, "value": f"{name}-value"})

        async def readable(app: str | None, name: str) -> bool:
            try:
                await rt.call(vault.name, "get", {"name": name, "appId": app})
            except NatriumError as exc:
                assert (exc.code, exc.status) == ("ERR_PERMISSION_DENIED", 403)
                assert exc.message == f"access denied by policy to get {name!r} from {vault.name!r}"
                return False
            return True

        # checkout: its own Configuration, deny by default, only api-key allowed
        assert [await readable("checkout", n) for n in ("api-key", "root-pass", "other")] == [True, False, False]
        # any other app (or none): the unscoped Configuration, allow by default, root-pass denied
        assert [await readable("billing", n) for n in ("api-key", "root-pass", "other")] == [True, False, True]
        assert [await readable(None, n) for n in ("api-key", "root-pass", "other")] == [True, False, True]
        # a denied secret that does not exist is still denied, before the store is asked
        assert not await readable("checkout", "missing")


async def test_bulk_is_filtered_by_scopes(nc: Client, subjects: Subjects, tmp_path: Path) -> None:
    vault = sealed_component(write_key(tmp_path))
    async with secrets_runtime(nc, subjects, [vault], scopes_config(vault.name)) as rt:
        for name in ("api-key", "root-pass", "other"):
            await rt.call(vault.name, "put", {"name": name, "value": "v"})
        assert set((await rt.call(vault.name, "bulk", {"appId": "checkout"}))["data"]) == {"api-key"}
        assert set((await rt.call(vault.name, "bulk", {"appId": "billing"}))["data"]) == {"api-key", "other"}


async def test_scopes_of_another_store_do_not_apply(nc: Client, subjects: Subjects, tmp_path: Path) -> None:
    vault = sealed_component(write_key(tmp_path))
    async with secrets_runtime(nc, subjects, [vault], scopes_config("elsewhere")) as rt:
        await rt.call(vault.name, "put", {"name": "root-pass", "value": "v"})
        assert await rt.call(vault.name, "get", {"name": "root-pass", "appId": "checkout"}) == {
            "data": {"root-pass": "v"}
        }


async def test_bad_secret_scopes_stop_startup(nc: Client, subjects: Subjects, tmp_path: Path) -> None:
    vault = sealed_component(write_key(tmp_path))
    config = scopes_config(vault.name)[:1]
    config[0]["spec"] = {"secrets": {"scopes": [{"storeName": vault.name, "defaultAccess": "maybe"}]}}
    with pytest.raises(NatriumError) as err:
        await start_secrets(nc, subjects, [vault], config)
    assert err.value.code == "ERR_COMPONENT_INVALID" and "defaultAccess 'maybe'" in err.value.message
