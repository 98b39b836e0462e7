"""Connection settings against real servers with auth, and the embedded server launcher."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from kernel.connection import ConnectionSettings, connect, require_jetstream_server
from kernel.errors import NatriumError
from kernel.nats_server import EmbeddedNatsServer


async def test_token_auth(tmp_path: Path) -> None:
    server = await EmbeddedNatsServer(tmp_path, port=0, extra_config="authorization { token: s3cret }").start()
    try:
        nc = await connect(ConnectionSettings(url=server.url, token="s3cret"))
        require_jetstream_server(nc, server.url)
        await nc.close()
        with pytest.raises(NatriumError) as err:
            await connect(ConnectionSettings(url=server.url, token="wrong"), timeout=2)
        assert err.value.code == "ERR_NATS_UNREACHABLE" and server.url in err.value.message
    finally:
        await server.stop()


async def test_user_password_auth_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = await EmbeddedNatsServer(
        tmp_path, port=0, extra_config="authorization { user: app, password: pw }"
    ).start()
    try:
        monkeypatch.setenv("NATS_USER", "app")
        monkeypatch.setenv("NATS_PASSWORD", "pw")
        nc = await connect(ConnectionSettings.from_env(server.url))
        assert nc.is_connected
        await nc.close()
    finally:
        await server.stop()


def test_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NATS_URL", "nats://a:1, nats://b:2")
    monkeypatch.setenv("NATS_CREDS", "/x.creds")
    settings = ConnectionSettings.from_env()
    assert settings.servers() == ["nats://a:1", "nats://b:2"]
    assert settings.connect_options()["user_credentials"] == "/x.creds"


def test_half_a_client_certificate_is_refused() -> None:
    with pytest.raises(ValueError, match="together"):
        ConnectionSettings(tls_cert="/c.pem")


async def test_unreachable_url_fails_fast_with_its_name() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(NatriumError, match=f"cannot reach NATS at nats://127.0.0.1:{port}"):
        await connect(ConnectionSettings(url=f"nats://127.0.0.1:{port}"), timeout=1)


async def test_embedded_server_takes_a_free_port_when_the_wanted_one_is_taken(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        taken = sock.getsockname()[1]
        server = await EmbeddedNatsServer(tmp_path, port=taken).start()
        try:
            assert server.port != taken
            nc = await connect(ConnectionSettings(url=server.url))
            assert (await nc.jetstream().account_info()) is not None
            await nc.close()
        finally:
            await server.stop()
    assert server.pid is None


async def test_embedded_server_that_cannot_start_says_why(tmp_path: Path) -> None:
    server = EmbeddedNatsServer(tmp_path, port=0, extra_config="this is { not valid")
    with pytest.raises(NatriumError) as err:
        await server.start()
    assert err.value.code == "ERR_NATS_SERVER_START"
