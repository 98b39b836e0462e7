"""`natrium secrets ...` as real subprocesses against an in-process secrets service on its own root."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from nats.aio.client import Client

from kernel.components import Component
from kernel.nats_server import EmbeddedNatsServer
from kernel.subjects import Subjects
from tests.conftest import NATRIUM, REPO, subprocess_env, unique
from tests.secrets_runtime import SecretsRuntime, sealed_component, secrets_runtime, write_key
from tests.test_cli import Up, curl

pytestmark = pytest.mark.slow


@dataclass
class Result:
    code: int
    out: str
    err: str


@dataclass
class Cli:
    url: str
    root: str
    store: str
    rt: SecretsRuntime

    async def __call__(self, *args: str, stdin: bytes | None = None, root: str | None = None) -> Result:
        proc = await asyncio.create_subprocess_exec(
            *NATRIUM,
            "secrets",
            *args,
            "--nats-url",
            self.url,
            "--root",
            root or self.root,
            cwd=REPO,
            env=subprocess_env(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(stdin or b""), 60)
        assert proc.returncode is not None
        return Result(proc.returncode, out.decode(), err.decode())


@pytest.fixture
async def cli(nats_server: EmbeddedNatsServer, nc: Client, subjects: Subjects, tmp_path: Path) -> AsyncIterator[Cli]:
    vault = sealed_component(write_key(tmp_path))
    (tmp_path / "local.json").write_text(json.dumps({"a": "1"}))
    local = Component(
        name="local", type="secretstores.local.file", metadata={"secretsFile": str(tmp_path / "local.json")}
    )
    async with secrets_runtime(nc, subjects, [vault, local]) as rt:
        yield Cli(nats_server.url, subjects.root, vault.name, rt)


async def test_put_get_list_delete_round_trip(cli: Cli, tmp_path: Path) -> None:
    secret = "s3cr3t-" + unique()
    put = await cli("put", cli.store, "db-pass", stdin=secret.encode() + b"\n")
    assert put.code == 0, put.err
    assert secret not in put.out + put.err  # never echoed
    got = await cli("get", cli.store, "db-pass")
    assert (got.code, got.out) == (0, secret + "\n")  # the trailing newline of stdin is not part of the value
    assert await cli.rt.call(cli.store, "get", {"name": "db-pass"}) == {"data": {"db-pass": secret}}

    (tmp_path / "cert.pem").write_text("-----BEGIN-----\nabc\n-----END-----\n")
    assert (await cli("put", cli.store, "cert", "--file", str(tmp_path / "cert.pem"))).code == 0
    assert (await cli("get", cli.store, "cert")).out == "-----BEGIN-----\nabc\n-----END-----\n"

    multi = await cli("put", cli.store, "db", "--json", stdin=b'{"user": "app", "password": "pw"}')
    assert multi.code == 0, multi.err
    got = await cli("get", cli.store, "db")
    assert json.loads(got.out) == {"user": "app", "password": "pw"}
    assert json.loads((await cli("get", cli.store, "db-pass", "--json")).out) == {"db-pass": secret}

    listed = await cli("list", cli.store)
    assert (listed.code, listed.out) == (0, "cert\ndb\ndb-pass\n")
    deleted = await cli("delete", cli.store, "db-pass")
    assert deleted.code == 0 and "deleted db-pass" in deleted.err
    assert (await cli("list", cli.store)).out == "cert\ndb\n"


async def test_errors_go_to_stderr_with_exit_code_1(cli: Cli) -> None:
    missing = await cli("get", cli.store, "nothing")
    assert (missing.code, missing.out) == (1, "")
    assert "ERR_SECRET_GET" in missing.err and "secret nothing not found" in missing.err
    assert "Traceback" not in missing.err
    unknown = await cli("list", "nope")
    assert unknown.code == 1 and "ERR_SECRET_STORE_NOT_FOUND" in unknown.err
    read_only = await cli("put", "local", "x", stdin=b"v")
    assert read_only.code == 1 and "read-only" in read_only.err
    gone = await cli("delete", cli.store, "nothing")
    assert gone.code == 1 and "ERR_SECRET_DELETE" in gone.err
    bad_json = await cli("put", cli.store, "x", "--json", stdin=b"[1, 2]")
    assert bad_json.code == 1 and "JSON object" in bad_json.err
    nobody = await cli("list", cli.store, root=unique("root"))
    assert nobody.code == 1 and "is the secrets service running" in nobody.err
    assert "Traceback" not in nobody.err


async def test_every_command_has_help() -> None:
    for command in ("put", "get", "list", "delete"):
        proc = await asyncio.create_subprocess_exec(
            *NATRIUM, "secrets", command, "--help", cwd=REPO, env=subprocess_env(), stdout=asyncio.subprocess.PIPE
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0 and b"--nats-url" in out and b"--root" in out, command


async def test_fresh_up_serves_the_default_sealed_store(tmp_path: Path) -> None:
    env = subprocess_env(HOME=str(tmp_path))  # the default key file goes to $HOME/.natrium
    up = await Up("--data-dir", str(tmp_path / "data"), env=env).start()
    try:
        key_file = tmp_path / ".natrium" / "secrets.key"
        assert key_file.stat().st_mode & 0o777 == 0o600
        proc = await asyncio.create_subprocess_exec(
            *NATRIUM,
            "secrets",
            "put",
            "secretstore",
            "api-key",
            "--nats-url",
            up_nats_url(up),
            cwd=REPO,
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(b"k-123\n"), 60)
        assert proc.returncode == 0, err
        status, _, body = await curl("GET", f"{up.base}/v1.0/secrets/secretstore/api-key")
        assert (status, json.loads(body)) == (200, {"api-key": "k-123"})
        status, _, body = await curl("GET", f"{up.base}/v1.0/secrets/secretstore/bulk")
        assert (status, json.loads(body)) == (200, {"api-key": {"api-key": "k-123"}})
    finally:
        assert await up.stop() == 0


def up_nats_url(up: Up) -> str:
    """The embedded server's URL, from the `natrium up` banner."""
    for line in up.stderr:
        if line.strip().startswith("NATS"):
            return line.split()[1]
    raise AssertionError("no NATS line in the banner")
