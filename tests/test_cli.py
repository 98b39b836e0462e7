"""The real `natrium` command as a subprocess: `up`, restarts, and the errors a user sees."""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Mapping
from pathlib import Path

import aiohttp
import pytest

from kernel.nats_server import EmbeddedNatsServer
from tests.conftest import NATRIUM, REPO, free_port, subprocess_env, wait_until
from tests.natrium_process import NatriumProcess

pytestmark = pytest.mark.slow


class Up(NatriumProcess):
    """`natrium up` in a subprocess, stopped with SIGINT as Ctrl-C would."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.http_port = free_port()
        command = [*NATRIUM, "up", "--http-port", str(self.http_port), "--nats-port", str(free_port()), *args]
        super().__init__(command, "Ctrl-C stops everything", env or subprocess_env())

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


async def curl(method: str, url: str, body: object = None) -> tuple[int, Mapping[str, str], bytes]:
    async with aiohttp.ClientSession() as session:
        data = json.dumps(body).encode() if body is not None else None
        async with session.request(method, url, data=data, headers={"content-type": "application/json"}) as r:
            return r.status, r.headers.copy(), await r.read()  # type: ignore[return-value]


def run(*args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*NATRIUM, *args],
        cwd=REPO,
        env=subprocess_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


async def test_up_answers_the_readme_curls_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    up = await Up("--data-dir", str(tmp_path / "data")).start()
    try:
        status, _, _ = await curl("POST", f"{up.base}/v1.0/state/statestore", [{"key": "order-1", "value": {"qty": 3}}])
        assert status == 204
        status, headers, body = await curl("GET", f"{up.base}/v1.0/state/statestore/order-1")
        assert (status, json.loads(body)) == (200, {"qty": 3})
        assert headers["ETag"].isdigit()
        status, _, body = await curl("GET", f"{up.base}/v1.0/metadata")
        components = {c["name"]: c["type"] for c in json.loads(body)["components"]}
        # Each block's default component; other blocks add theirs as they land.
        expected = {"statestore": "state.nats-kv", "pubsub": "pubsub.jetstream", "configstore": "configuration.nats-kv"}
        expected["secretstore"] = "secretstores.nats.objectstore"
        assert status == 200 and components.items() >= expected.items()
    finally:
        code = await up.stop()
    assert code == 0
    assert "natrium stopped" in "".join(up.stderr)
    services = {line["service"] for line in json_lines(up.stderr) if line["level"] == "info"}
    assert {"up", "gateway", "service-state", "service-pubsub"} <= services


def json_lines(stderr: list[str]) -> list[dict[str, object]]:
    """The structured log lines of a run (stderr is no terminal here, so they are JSON)."""
    return [json.loads(line) for line in stderr if line.startswith("{")]


async def test_log_level_reaches_every_process_of_up(tmp_path: Path) -> None:
    up = await Up("--data-dir", str(tmp_path / "data"), "--log-level", "warning").start()
    try:
        status, _, _ = await curl("POST", f"{up.base}/v1.0/state/nostore", [{"key": "k", "value": 1}])
        assert status == 400
    finally:
        code = await up.stop()
    assert code == 0
    lines = json_lines(up.stderr)
    assert [line for line in lines if line["level"] in ("debug", "info")] == []
    for line in lines:  # what does get through is whole: who said it and where it ran
        assert {"time", "level", "service", "replica", "logger", "msg"} <= line.keys()


def free_port_range(count: int) -> int:
    """The first of `count` consecutive free ports."""
    from kernel.nats_server import port_is_free

    for _ in range(100):
        base = free_port()
        if base + count < 65536 and all(port_is_free(base + i) for i in range(count)):
            return base
    raise AssertionError(f"no {count} consecutive free ports")


async def test_up_serves_metrics_of_the_gateway_and_of_every_block(tmp_path: Path) -> None:
    from services import BLOCKS

    base = free_port_range(len(BLOCKS) + 1)
    up = await Up("--data-dir", str(tmp_path / "data"), "--metrics-port", str(base)).start()
    try:
        assert f":{base}/metrics" in "".join(up.stderr)
        await curl("POST", f"{up.base}/v1.0/state/statestore", [{"key": "m", "value": 1}])

        async def all_serve() -> bool:
            try:
                answers = [await curl("GET", f"http://127.0.0.1:{base + i}/metrics") for i in range(len(BLOCKS) + 1)]
            except aiohttp.ClientError:
                return False
            return all(status == 200 for status, _, _ in answers)

        await wait_until(all_serve, timeout=20, interval=0.2)
        _, _, gateway = await curl("GET", f"http://127.0.0.1:{base}/metrics")
        assert b"natrium" in gateway
    finally:
        await up.stop()


async def test_data_survives_a_restart_of_up_with_the_same_data_dir(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    up = await Up("--data-dir", data).start()
    try:
        await curl("POST", f"{up.base}/v1.0/state/statestore", [{"key": "durable", "value": "yes"}])
    finally:
        await up.stop()
    up = await Up("--data-dir", data).start()
    try:
        status, _, body = await curl("GET", f"{up.base}/v1.0/state/statestore/durable")
        assert (status, body) == (200, b'"yes"')
    finally:
        await up.stop()


async def test_up_with_components_folder_serves_those_stores(tmp_path: Path) -> None:
    components = tmp_path / "components"
    components.mkdir()
    (components / "orders.yaml").write_text(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: orders\n"
        "spec:\n  type: state.nats-kv\n  version: v1\n  metadata:\n  - name: keyPrefix\n    value: none\n"
    )
    up = await Up("--data-dir", str(tmp_path / "data"), "--components", str(components)).start()
    try:
        assert (await curl("POST", f"{up.base}/v1.0/state/orders", [{"key": "a", "value": 1}]))[0] == 204
        status, _, body = await curl("GET", f"{up.base}/v1.0/state/statestore/a")
        assert status == 400 and json.loads(body)["errorCode"] == "ERR_STATE_STORE_NOT_FOUND"
    finally:
        await up.stop()


async def test_crashed_service_is_restarted(tmp_path: Path) -> None:
    up = await Up("--data-dir", str(tmp_path / "data")).start()
    try:
        children = subprocess.run(
            ["pgrep", "-f", "-P", str(up.proc.pid), "adapters.cli.main service state"],  # type: ignore[union-attr]
            capture_output=True,
            text=True,
        ).stdout.split()
        assert len(children) == 1
        subprocess.run(["kill", "-9", children[0]], check=True)

        async def serving_again() -> bool:
            try:
                return (await curl("GET", f"{up.base}/v1.0/state/statestore/x"))[0] == 204
            except aiohttp.ClientError:
                return False

        await wait_until(serving_again, timeout=20, interval=0.2)
        assert "restarting" in "".join(up.stderr)
    finally:
        await up.stop()


async def test_taken_http_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = run("up", "--http-port", str(port), "--data-dir", str(tmp_path))
    assert result.returncode == 1
    assert f"HTTP port {port} is taken" in result.stderr and "Traceback" not in result.stderr


async def test_bad_component_yaml_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text("apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: [\n")
    result = run(
        "up",
        "--components",
        str(tmp_path),
        "--data-dir",
        str(tmp_path / "d"),
        "--http-port",
        str(free_port()),
    )
    assert result.returncode == 1
    assert "broken.yaml" in result.stderr and "ERR_COMPONENT_INVALID" in result.stderr
    assert "Traceback" not in result.stderr


async def test_unreachable_nats_url_is_a_clear_error() -> None:
    port = free_port()
    result = run("up", "--nats-url", f"nats://127.0.0.1:{port}", "--http-port", str(free_port()), timeout=30)
    assert result.returncode == 1
    assert f"cannot reach NATS at nats://127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


async def test_service_alone_with_unreachable_nats_exits_1() -> None:
    result = run("service", "state", "--nats-url", f"nats://127.0.0.1:{free_port()}", timeout=30)
    assert result.returncode == 1 and "ERR_NATS_UNREACHABLE" in result.stderr


async def test_too_old_nats_server_is_refused_naming_its_version() -> None:
    """The machine's Debian nats-server 2.9 on 4222, when it runs there."""
    try:
        with socket.create_connection(("127.0.0.1", 4222), timeout=1) as sock:
            banner = sock.recv(4096).decode(errors="replace")
    except OSError:
        pytest.skip("no NATS on 127.0.0.1:4222")
    info = json.loads(banner.split(" ", 1)[1])
    if tuple(int(p) for p in info["version"].split(".")[:2]) >= (2, 12):
        pytest.skip("the server on 4222 is new enough")
    result = run("up", "--nats-url", "nats://127.0.0.1:4222", "--http-port", str(free_port()), timeout=30)
    assert result.returncode == 1
    assert f"version {info['version']}" in result.stderr and "2.12.0 or newer" in result.stderr


async def test_up_refuses_server_without_jetstream(tmp_path: Path) -> None:
    server = EmbeddedNatsServer(tmp_path, port=0)
    server._config = lambda port: f"host: 127.0.0.1\nport: {port}\n"  # type: ignore[method-assign]
    await server.start()
    try:
        result = run("up", "--nats-url", server.url, "--http-port", str(free_port()), timeout=30)
    finally:
        await server.stop()
    assert result.returncode == 1 and "does not have JetStream" in result.stderr


def test_help_on_every_command() -> None:
    for args in ([], ["up"], ["service"], ["gateway"], ["version"], ["schemas"], ["schemas", "export"]):
        result = run(*args, "--help")
        assert result.returncode == 0 and "Usage:" in result.stdout


def test_unknown_block_is_a_usage_error() -> None:
    result = run("service", "nope")
    assert result.returncode == 2 and "Invalid value" in result.stderr


def test_version_names_the_embedded_server() -> None:
    result = run("version")
    assert result.returncode == 0 and "natrium 0.1.0" in result.stdout and "nats-server: v2." in result.stdout


def test_schemas_export_writes_json_schema(tmp_path: Path) -> None:
    result = run("schemas", "export", "--out", str(tmp_path))
    assert result.returncode == 0
    document = json.loads((tmp_path / "state.json").read_text())
    assert set(document["operations"]) == {"get", "bulkget", "save", "delete", "transaction"}
    assert document["operations"]["save"]["request"]["properties"]["items"]["type"] == "array"
