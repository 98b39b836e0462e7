"""`natrium config` as a real subprocess against an in-process configuration service."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from nats.aio.client import Client

from kernel.nats_server import EmbeddedNatsServer
from kernel.subjects import Subjects
from tests.configuration_runtime import ConfigRuntime, Updates, config_runtime
from tests.conftest import NATRIUM, REPO, free_port, subprocess_env, unique

pytestmark = pytest.mark.slow


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
async def config(nc: Client, subjects: Subjects) -> AsyncIterator[ConfigRuntime]:
    async with config_runtime(nc, subjects) as runtime:
        yield runtime


async def natrium(*args: str, timeout: float = 60) -> Result:
    """Run the CLI without blocking the loop: the configuration service answering it runs on this loop."""
    proc = await asyncio.create_subprocess_exec(
        *NATRIUM,
        *args,
        cwd=REPO,
        env=subprocess_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())


async def config_cli(runtime: ConfigRuntime, server: EmbeddedNatsServer, *args: str) -> Result:
    return await natrium("config", *args, "--nats-url", server.url, "--root", runtime.subjects.root)


async def test_set_get_list_delete_round_trip(config: ConfigRuntime, nats_server: EmbeddedNatsServer) -> None:
    result = await config_cli(config, nats_server, "set", config.store, "color", "blue", "--metadata", "owner=ops")
    assert result.returncode == 0, result.stderr
    version = result.stdout.strip().rsplit(" ", 1)[-1]
    assert result.stdout.strip() == f"color set, version {version}" and version.isdigit()
    await config_cli(config, nats_server, "set", config.store, "size", "L")

    result = await config_cli(config, nats_server, "get", config.store, "color")
    assert result.returncode == 0
    assert json.loads(result.stdout) == {"color": {"value": "blue", "version": version, "metadata": {"owner": "ops"}}}

    result = await config_cli(config, nats_server, "get", config.store)
    assert set(json.loads(result.stdout)) == {"color", "size"}

    result = await config_cli(config, nats_server, "list", config.store)
    lines = result.stdout.splitlines()
    assert [line.split("\t")[0] for line in lines] == ["color", "size"]
    assert lines[0] == f'color\t{version}\t"blue"'

    result = await config_cli(config, nats_server, "delete", config.store, "color")
    assert (result.returncode, result.stdout.strip()) == (0, "color deleted")
    assert list(await config.client.get_configuration(config.store)) == ["size"]


async def test_a_subscriber_sees_what_the_cli_sets(config: ConfigRuntime, nats_server: EmbeddedNatsServer) -> None:
    updates = Updates()
    await config.client.subscribe_configuration(config.store, ["flag"], updates)
    await config_cli(config, nats_server, "set", config.store, "flag", "on")
    await config_cli(config, nats_server, "delete", config.store, "flag")
    first, second = await updates.wait(2)
    assert first.item is not None and first.item.value == "on" and second.deleted


async def test_values_with_spaces_and_unicode(config: ConfigRuntime, nats_server: EmbeddedNatsServer) -> None:
    await config_cli(config, nats_server, "set", config.store, "greeting", "hello wörld\nline 2")
    result = await config_cli(config, nats_server, "list", config.store)
    assert result.stdout == f'greeting\t{result.stdout.split(chr(9))[1]}\t"hello wörld\\nline 2"\n'


async def test_missing_key_on_get_is_an_error_after_the_found_ones(
    config: ConfigRuntime, nats_server: EmbeddedNatsServer
) -> None:
    await config.set({"here": "1"})
    result = await config_cli(config, nats_server, "get", config.store, "here", "missing")
    assert result.returncode == 1
    assert list(json.loads(result.stdout)) == ["here"]
    assert result.stderr.strip() == f"error: not found in configuration store {config.store}: missing"


async def test_deleting_a_missing_key_is_an_error(config: ConfigRuntime, nats_server: EmbeddedNatsServer) -> None:
    result = await config_cli(config, nats_server, "delete", config.store, "never")
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: no key 'never' in configuration store {config.store}"


async def test_unknown_store_is_a_clear_error(config: ConfigRuntime, nats_server: EmbeddedNatsServer) -> None:
    result = await config_cli(config, nats_server, "get", "no-such-store")
    assert result.returncode == 1
    assert "configuration store no-such-store not found (ERR_CONFIGURATION_STORE_NOT_FOUND)" in result.stderr
    assert "Traceback" not in result.stderr


async def test_no_configuration_service_says_so(nats_server: EmbeddedNatsServer) -> None:
    result = await natrium("config", "list", "configstore", "--nats-url", nats_server.url, "--root", unique("root"))
    assert result.returncode == 1
    assert "ERR_NO_RESPONDERS" in result.stderr and "is the configuration service running?" in result.stderr
    assert "Traceback" not in result.stderr


async def test_unreachable_nats_is_a_clear_error() -> None:
    result = await natrium("config", "list", "configstore", "--nats-url", f"nats://127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert "ERR_NATS_UNREACHABLE" in result.stderr and "Traceback" not in result.stderr


async def test_bad_metadata_is_a_usage_error(nats_server: EmbeddedNatsServer) -> None:
    result = await natrium("config", "set", "s", "k", "v", "--metadata", "novalue", "--nats-url", nats_server.url)
    assert result.returncode == 2 and "'novalue' is not k=v" in result.stderr


@pytest.mark.parametrize("command", [[], ["set"], ["get"], ["list"], ["delete"]])
async def test_help_on_every_config_command(command: list[str]) -> None:
    result = await natrium("config", *command, "--help")
    assert result.returncode == 0 and "Usage:" in result.stdout
    if command:
        assert "--nats-url" in result.stdout and "--root" in result.stdout


async def test_up_serves_configuration_to_the_cli_and_over_http(tmp_path: Path) -> None:
    from tests.test_cli import Up, curl

    up = await Up("--data-dir", str(tmp_path / "data")).start()
    try:
        url = f"nats://127.0.0.1:{up.args[up.args.index('--nats-port') + 1]}"
        result = await natrium("config", "set", "configstore", "feature", "on", "--nats-url", url)
        assert result.returncode == 0, result.stderr
        status, _, body = await curl("GET", f"{up.base}/v1.0/configuration/configstore?key=feature")
        assert status == 200 and json.loads(body)["feature"]["value"] == "on"
    finally:
        assert await up.stop() == 0
