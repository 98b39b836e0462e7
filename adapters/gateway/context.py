"""What every gateway route reaches for: the bus clients, the config, and request helpers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from nats.aio.client import Client

from adapters.actors.client import ActorClient
from adapters.actors.host import ActorHost
from adapters.resiliency import Resiliency
from adapters.resilient_bus import ResilientBusClient
from kernel.client import BusClient
from kernel.subjects import Subjects

__all__ = ["Gateway", "GatewayConfig", "GATEWAY", "gateway_of", "query_metadata"]

MiB = 1024 * 1024


@dataclass
class GatewayConfig:
    """How the HTTP gateway listens and whom it speaks for."""

    http_port: int = 3500
    host: str = "127.0.0.1"
    app_id: str | None = None
    """The app this gateway serves (`natrium run`); None for the shared `natrium up` gateway."""
    channel_id: str | None = None
    """The `natrium run` instance this gateway belongs to: its HTTP configuration subscriptions
    are delivered by that run's app channel only, and end with it."""
    api_token: str | None = None
    """When set, every request but the health checks must carry it in `dapr-api-token`."""
    max_body_size: int = 4 * MiB
    request_timeout: float = 5.0
    """How long one block request may take before the call fails."""
    invoke_timeout: float = 60.0
    """How long an invoked app may take, unless a Resiliency timeout says otherwise."""

    def __post_init__(self) -> None:
        if not 0 <= self.http_port < 65536:
            raise ValueError(f"invalid HTTP port {self.http_port}")
        if self.max_body_size < 1:
            raise ValueError("max body size must be positive")


@dataclass
class Gateway:
    nc: Client
    config: GatewayConfig
    subjects: Subjects = field(default_factory=Subjects)
    extended_metadata: dict[str, str] = field(default_factory=dict)
    resiliency: Resiliency = field(default_factory=Resiliency)
    actor_host: ActorHost | None = None
    """The actor host of this `natrium run` app, when it hosts actors (listed by `/v1.0/metadata`)."""
    subscriptions: list[dict[str, Any]] = field(default_factory=list)
    """The `natrium run` app's pub/sub subscriptions, as `/v1.0/metadata` lists them."""
    app_connection: dict[str, Any] = field(default_factory=dict)
    """The `natrium run` app's port, protocol and health check, as `/v1.0/metadata` lists them."""

    def __post_init__(self) -> None:
        self.bus: BusClient = ResilientBusClient(
            self.nc, self.subjects, self.resiliency, timeout=self.config.request_timeout
        )
        # Actor calls wait for the turn like invocations wait for the app; closed by the app cleanup.
        self.actors = ActorClient(self.nc, self.subjects, timeout=self.config.invoke_timeout)


GATEWAY = web.AppKey("gateway", Gateway)


def gateway_of(request: web.Request) -> Gateway:
    return request.app[GATEWAY]


def query_metadata(request: web.Request) -> dict[str, str]:
    """`?metadata.k=v` query parameters, prefix stripped, as daprd reads component metadata."""
    return {k[len("metadata.") :]: v for k, v in request.query.items() if k.startswith("metadata.")}
