"""How every natrium process reaches NATS: one settings object, read from flags or the environment."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from dataclasses import dataclass, field
from typing import Any

import nats
from nats.aio.client import Client

from kernel.errors import NatriumError

__all__ = ["ConnectionSettings", "close_gracefully", "connect", "require_jetstream_server"]

log = logging.getLogger("natrium.connection")


@dataclass
class ConnectionSettings:
    """Where NATS is and how to authenticate; each field has an environment twin."""

    url: str = "nats://127.0.0.1:4222"
    """One or more server URLs, comma separated (`NATS_URL`)."""

    user: str | None = None
    """User name (`NATS_USER`)."""

    password: str | None = None
    """Password (`NATS_PASSWORD`)."""

    token: str | None = None
    """Auth token (`NATS_TOKEN`)."""

    nkey_seed: str | None = None
    """Path to an nkey seed file (`NATS_NKEY_SEED`)."""

    creds_file: str | None = None
    """Path to a JWT user credentials file (`NATS_CREDS`)."""

    tls_ca: str | None = None
    """CA bundle to verify the server (`NATS_TLS_CA`); setting any TLS field turns TLS on."""

    tls_cert: str | None = None
    """Client certificate for mutual TLS (`NATS_TLS_CERT`)."""

    tls_key: str | None = None
    """Client key for mutual TLS (`NATS_TLS_KEY`)."""

    name: str = "natrium"
    """Connection name shown by the server's monitoring."""

    extra: dict[str, Any] = field(default_factory=dict)
    """Further keyword arguments for `nats.connect` (tests use it for short timeouts)."""

    def __post_init__(self) -> None:
        if not self.url.strip():
            raise ValueError("NATS URL is empty")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("NATS_TLS_CERT and NATS_TLS_KEY must be given together")

    @classmethod
    def from_env(cls, url: str | None = None, name: str = "natrium") -> ConnectionSettings:
        env = os.environ.get
        return cls(
            url=url or env("NATS_URL") or cls.url,
            user=env("NATS_USER"),
            password=env("NATS_PASSWORD"),
            token=env("NATS_TOKEN"),
            nkey_seed=env("NATS_NKEY_SEED"),
            creds_file=env("NATS_CREDS"),
            tls_ca=env("NATS_TLS_CA"),
            tls_cert=env("NATS_TLS_CERT"),
            tls_key=env("NATS_TLS_KEY"),
            name=name,
        )

    def servers(self) -> list[str]:
        return [u.strip() for u in self.url.split(",") if u.strip()]

    def connect_options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {
            "servers": self.servers(),
            "name": self.name,
            # A runtime should ride out a server restart, not die with it.
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": 0.25,
            "connect_timeout": 2,
            "allow_reconnect": True,
        }
        if self.user:
            opts["user"] = self.user
            opts["password"] = self.password or ""
        if self.token:
            opts["token"] = self.token
        if self.nkey_seed:
            opts["nkeys_seed"] = self.nkey_seed
        if self.creds_file:
            opts["user_credentials"] = self.creds_file
        if self.tls_ca or self.tls_cert:
            ctx = ssl.create_default_context(cafile=self.tls_ca)
            if self.tls_cert and self.tls_key:
                ctx.load_cert_chain(self.tls_cert, self.tls_key)
            opts["tls"] = ctx
        opts.update(self.extra)
        return opts


async def connect(settings: ConnectionSettings, timeout: float = 5.0) -> Client:
    """Connect, or raise a NatriumError naming the URL that could not be reached within `timeout`.

    nats-py retries the first connect forever when reconnects are unlimited, so the deadline
    is ours; the last error seen is the one reported.
    """
    last: list[Exception] = []

    async def _on_error(exc: Exception) -> None:
        last.append(exc)
        del last[:-1]
        log.warning("nats connection error: %s", exc)

    async def _on_disconnect() -> None:
        log.warning("disconnected from nats")

    async def _on_reconnect() -> None:
        log.info("reconnected to nats")

    try:
        return await asyncio.wait_for(
            nats.connect(
                **settings.connect_options(),
                error_cb=_on_error,
                disconnected_cb=_on_disconnect,
                reconnected_cb=_on_reconnect,
            ),
            timeout,
        )
    except Exception as exc:  # nats-py raises a wide range of types for "unreachable"
        cause = last[-1] if last else exc
        raise NatriumError(
            "ERR_NATS_UNREACHABLE",
            f"cannot reach NATS at {settings.url}: {cause or type(cause).__name__}",
            status=503,
            retryable=True,
        ) from exc


def require_jetstream_server(nc: Client, url: str) -> None:
    """Refuse a server too old for per-key TTL and atomic batches, or one without JetStream."""
    from kernel.nats_server import MIN_SERVER_VERSION, parse_version

    info = nc._server_info  # nats-py keeps the server's INFO here and offers no public accessor
    found = str(info.get("version", "unknown"))
    version = parse_version(found)
    if version is None or version < MIN_SERVER_VERSION:
        need = ".".join(map(str, MIN_SERVER_VERSION))
        raise NatriumError(
            "ERR_NATS_TOO_OLD",
            f"nats-server at {url} is version {found}; natrium needs {need} or newer "
            "(per-key TTL, atomic batch publish, message schedules)",
        )
    if not info.get("jetstream"):
        raise NatriumError("ERR_NATS_NO_JETSTREAM", f"nats-server at {url} does not have JetStream enabled")


async def close_gracefully(nc: Client, timeout: float = 5.0) -> None:
    """Drain (deliver what is in flight), but never hang on a NATS that is gone: then just close."""
    try:
        await asyncio.wait_for(nc.drain(), timeout)
    except Exception:  # drain raises or hangs while reconnecting to a server that is not there
        with contextlib.suppress(Exception):
            await nc.close()
