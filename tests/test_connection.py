"""Connection settings against real servers with auth, and the embedded server launcher."""

from __future__ import annotations

import os
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


# -- nkeys, credentials and TLS against servers configured for them --------------------------------


def _user_seed() -> tuple[bytes, str]:
    """A fresh user nkey: (seed, public key)."""
    import os

    import nkeys

    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    return seed, nkeys.from_seed(bytearray(seed)).public_key.decode()


async def test_nkey_seed_login_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seed, public = _user_seed()
    other_seed, _ = _user_seed()
    config = f"authorization {{ users = [ {{ nkey: {public} }} ] }}"
    server = await EmbeddedNatsServer(tmp_path / "data", port=0, extra_config=config).start()
    try:
        (tmp_path / "user.nk").write_bytes(seed)
        monkeypatch.setenv("NATS_NKEY_SEED", str(tmp_path / "user.nk"))
        nc = await connect(ConnectionSettings.from_env(server.url))
        require_jetstream_server(nc, server.url)
        await nc.close()
        (tmp_path / "other.nk").write_bytes(other_seed)
        monkeypatch.setenv("NATS_NKEY_SEED", str(tmp_path / "other.nk"))
        with pytest.raises(NatriumError) as err:
            await connect(ConnectionSettings.from_env(server.url), timeout=2)
        assert err.value.code == "ERR_NATS_UNREACHABLE"
    finally:
        await server.stop()


def _jwt(claims: dict[str, object], signer: object) -> str:
    """A NATS JWT (ed25519-nkey), signed with the issuer's key pair."""
    import base64
    import json
    import time

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    body = {"jti": b64(os.urandom(16)), "iat": int(time.time()), **claims}
    head = b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    payload = b64(json.dumps(body).encode())
    signature = signer.sign(f"{head}.{payload}".encode())  # type: ignore[attr-defined]
    return f"{head}.{payload}.{b64(signature)}"


def _key_pair(prefix: int) -> object:
    import nkeys

    return nkeys.from_seed(bytearray(nkeys.encode_seed(os.urandom(32), prefix)))


async def test_creds_file_login_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Decentralised auth: operator -> account -> user JWTs, the user's creds file in NATS_CREDS."""
    import nkeys

    operator, account = _key_pair(nkeys.PREFIX_BYTE_OPERATOR), _key_pair(nkeys.PREFIX_BYTE_ACCOUNT)
    system = _key_pair(nkeys.PREFIX_BYTE_ACCOUNT)
    user = _key_pair(nkeys.PREFIX_BYTE_USER)
    pub = {k: v.public_key.decode() for k, v in {"op": operator, "acc": account, "sys": system, "user": user}.items()}  # type: ignore[attr-defined]
    unlimited = {"subs": -1, "data": -1, "payload": -1}
    jetstream = {"mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1}
    op_jwt = _jwt({"iss": pub["op"], "sub": pub["op"], "nats": {"type": "operator", "version": 2}}, operator)

    def account_jwt(subject: str, name: str, js: bool = True) -> str:
        limits = {**unlimited, "imports": -1, "exports": -1, "conn": -1, "leaf": -1, **(jetstream if js else {})}
        claims = {
            "iss": pub["op"],
            "sub": subject,
            "name": name,
            "nats": {"type": "account", "version": 2, "limits": limits},
        }
        return _jwt(claims, operator)

    user_claims = {"iss": pub["acc"], "sub": pub["user"], "nats": {"type": "user", "version": 2, **unlimited}}
    creds = (
        f"-----BEGIN NATS USER JWT-----\n{_jwt(user_claims, account)}\n------END NATS USER JWT------\n\n"
        f"-----BEGIN USER NKEY SEED-----\n{user.seed.decode()}\n------END USER NKEY SEED------\n"  # type: ignore[attr-defined]
    )
    (tmp_path / "user.creds").write_text(creds)
    config = (
        f"operator: {op_jwt}\nsystem_account: {pub['sys']}\nresolver: MEMORY\n"
        f"resolver_preload: {{ {pub['acc']}: {account_jwt(pub['acc'], 'app')}, "
        f"{pub['sys']}: {account_jwt(pub['sys'], 'SYS', js=False)} }}"
    )
    server = await EmbeddedNatsServer(tmp_path / "data", port=0, extra_config=config).start()
    try:
        monkeypatch.setenv("NATS_CREDS", str(tmp_path / "user.creds"))
        nc = await connect(ConnectionSettings.from_env(server.url))
        await nc.jetstream().account_info()  # the account's JetStream, as the blocks need it
        await nc.close()
        monkeypatch.delenv("NATS_CREDS")
        with pytest.raises(NatriumError):
            await connect(ConnectionSettings.from_env(server.url), timeout=2)
    finally:
        await server.stop()


def _certificates(folder: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    def issue(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name, signer: ec.EllipticCurvePrivateKey,
              ca: bool, usage: list[x509.ObjectIdentifier]) -> x509.Certificate:  # fmt: skip
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if usage:
            builder = builder.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
            )
        return builder.sign(signer, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = issue("natrium test CA", ca_key, name("natrium test CA"), ca_key, True, [])
    paths: dict[str, Path] = {}

    def write(label: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | None) -> None:
        paths[f"{label}_cert"] = folder / f"{label}.pem"
        paths[f"{label}_cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        if key is not None:
            paths[f"{label}_key"] = folder / f"{label}-key.pem"
            paths[f"{label}_key"].write_bytes(
                key.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                )
            )

    write("ca", ca, None)
    for label, usage in (("server", ExtendedKeyUsageOID.SERVER_AUTH), ("client", ExtendedKeyUsageOID.CLIENT_AUTH)):
        key = ec.generate_private_key(ec.SECP256R1())
        write(label, issue(f"natrium {label}", key, ca.subject, ca_key, False, [usage]), key)
    return paths


async def test_mutual_tls_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pem = _certificates(tmp_path)
    config = (
        f'tls {{ cert_file: "{pem["server_cert"]}", key_file: "{pem["server_key"]}", '
        f'ca_file: "{pem["ca_cert"]}", verify: true, timeout: 2 }}'
    )
    server = await EmbeddedNatsServer(tmp_path / "data", port=0, extra_config=config).start()
    try:
        monkeypatch.setenv("NATS_TLS_CA", str(pem["ca_cert"]))
        monkeypatch.setenv("NATS_TLS_CERT", str(pem["client_cert"]))
        monkeypatch.setenv("NATS_TLS_KEY", str(pem["client_key"]))
        nc = await connect(ConnectionSettings.from_env(server.url))
        require_jetstream_server(nc, server.url)
        await nc.close()
        # Without a client certificate the server refuses the handshake.
        monkeypatch.delenv("NATS_TLS_CERT")
        monkeypatch.delenv("NATS_TLS_KEY")
        with pytest.raises(NatriumError) as err:
            await connect(ConnectionSettings.from_env(server.url), timeout=2)
        assert err.value.code == "ERR_NATS_UNREACHABLE"
    finally:
        await server.stop()
