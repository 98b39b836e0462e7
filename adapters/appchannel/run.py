"""`natrium run`: start an app and connect its HTTP port to the bus, the way `dapr run` adds a sidecar.

Beside the app it serves Dapr's HTTP API on `DAPR_HTTP_PORT` (the gateway code, speaking as the
app), answers the app's invocations from the bus (queue group per app id, access control from
`Configuration`), and delivers its subscriptions (`GET /dapr/subscribe` plus `Subscription`
resources) through the delivery engine, and the updates of its configuration subscriptions
(adapters/appchannel/configuration.py). Dapr's gRPC API is served on `DAPR_GRPC_PORT` too, and
with `--app-protocol grpc` the app is called through its `AppCallback` service (adapters/grpc/app.py)
instead of its HTTP port. It exits with the app's exit code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import click
from nats.aio.client import Client
from nats.nuid import NUID

from adapters import access, resiliency
from adapters.actors.host import ActorHost
from adapters.appchannel.actors import HttpActorApp
from adapters.appchannel.app_health import AppHealth, HealthCheck
from adapters.appchannel.bindings import BindingDelivery
from adapters.appchannel.configuration import ConfigurationDelivery
from adapters.appchannel.http_app import HttpApp
from adapters.delivery import BulkHandler, Drop, Event, Handler, Status, Subscription
from adapters.gateway.app import start_gateway
from adapters.gateway.context import Gateway, GatewayConfig
from adapters.gateway.health import SHUTDOWN
from adapters.grpc.app import GrpcApp
from adapters.grpc.app_bindings import GrpcBindingDelivery
from adapters.grpc.server import start_grpc_server, stop_grpc_server
from adapters.invocation import InvocationServer, InvokeRequest, InvokeResponse
from adapters.subscriptions import SubscriptionSpec, from_resources
from kernel.components import load_components
from kernel.connection import ConnectionSettings, close_gracefully, connect
from kernel.errors import NatriumError
from kernel.nats_server import port_is_free
from kernel.process import die_with_parent
from kernel.subjects import Subjects

__all__ = ["RunConfig", "run_app"]

log = logging.getLogger("natrium.run")


@dataclass
class RunConfig:
    app_id: str
    command: list[str]
    app_port: int | None = None
    dapr_http_port: int = 0
    nats_url: str | None = None
    components: str | None = None
    root: str = "natrium"
    app_port_timeout: float = 60.0
    api_token: str | None = None
    app_api_token: str | None = None
    app_protocol: str = "http"
    """How natrium calls the app: `http` (its HTTP port) or `grpc` (its AppCallback service)."""
    dapr_grpc_port: int = 0
    """The app's local Dapr gRPC API (DAPR_GRPC_PORT); a free port when 0."""
    health: HealthCheck | None = None
    """`--enable-app-health-check`: probe the app and hold its work while it fails."""

    def app_connection(self) -> dict[str, Any]:
        """daprd's `appConnectionProperties` of `/v1.0/metadata`."""
        if not self.app_port:
            return {}
        listing: dict[str, Any] = {"port": self.app_port, "protocol": self.app_protocol, "channelAddress": "127.0.0.1"}
        if self.health is not None:
            listing["health"] = self.health.listing()
        return listing


class AppChannel:
    """Everything that runs beside one app, started and stopped in order."""

    def __init__(self, config: RunConfig, nc: Client, channel_id: str | None = None) -> None:
        self.config = config
        self.nc = nc
        self.channel_id = channel_id
        """This run's instance id: its gateway tags configuration subscriptions with it."""
        self.subjects = Subjects(config.root)
        self.resources = load_components(config.components).resources
        self.acl = access.from_resources(self.resources, config.app_id)
        self.app: HttpApp | GrpcApp | None = None
        self.server: InvocationServer | None = None
        self.configuration: ConfigurationDelivery | None = None
        self.bindings: BindingDelivery | None = None
        self.subscriptions: list[Subscription] = []
        self.listed_subscriptions: list[dict[str, Any]] = []
        """The app's subscriptions as `/v1.0/metadata` lists them (declarative and programmatic)."""
        self._retries: set[asyncio.Task[None]] = set()
        self.actor_host: ActorHost | None = None
        """Hosts the app's actor types when its `GET /dapr/config` lists any."""
        self.health: AppHealth | None = None
        self._gate: asyncio.Event | None = None
        """Set while the app is healthy, when its health is checked: deliveries pull only then."""

    async def connect_app(self, exited: asyncio.Event) -> None:
        assert self.config.app_port is not None
        kind = GrpcApp if self.config.app_protocol == "grpc" else HttpApp
        app = self.app = kind(self.config.app_id, self.config.app_port, api_token=self.config.app_api_token)
        await app.open()
        await app.wait_for_port(self.config.app_port_timeout, exited)
        check = self.config.health
        if check is not None:
            self.health = AppHealth(
                self.config.app_id, lambda timeout: app.health_probe(check.path, timeout), check, self._health_changed
            )
            self._gate = self.health.gate
        if isinstance(app, GrpcApp):
            await self._connect_grpc_app(app)
        else:
            await self._connect_http_app(app)
        if self.health is not None:
            self.health.start()

    async def _connect_http_app(self, app: HttpApp) -> None:
        self.server = InvocationServer(self.nc, self.subjects, self.config.app_id, self._invoked)
        await self.server.start()
        # Configuration callbacks for the subscriptions the app makes (or made) over HTTP.
        self.configuration = ConfigurationDelivery(
            self.nc, self.subjects, self.config.app_id, app, channel_id=self.channel_id
        )
        await self.configuration.start()
        # Input bindings the app listens to (asked with OPTIONS, as daprd does), in the background.
        self.bindings = BindingDelivery(self.nc, self.subjects, self.config.app_id, app)
        self.bindings.gate = self._gate
        await self.bindings.start()
        await self._host_actors()
        await self._subscribe()

    async def _connect_grpc_app(self, app: GrpcApp) -> None:
        """A gRPC app: invocations and events through its AppCallback service. It subscribes to
        configuration over its own stream, and hosts no actors (daprd calls actors over HTTP)."""
        self.server = InvocationServer(self.nc, self.subjects, self.config.app_id, self._invoked)
        await self.server.start()
        self.bindings = GrpcBindingDelivery(self.nc, self.subjects, self.config.app_id, app)
        self.bindings.gate = self._gate
        await self.bindings.start()
        await self._subscribe()

    async def _subscribe(self) -> None:
        assert self.app is not None
        declared = [s for s in from_resources(self.resources) if s.applies_to(self.config.app_id)]
        programmatic = await self.app.subscriptions()
        self.listed_subscriptions = [s.listing("DECLARATIVE") for s in declared]
        self.listed_subscriptions += [s.listing("PROGRAMMATIC") for s in programmatic]
        for spec in declared + programmatic:
            subscription = Subscription(
                self.nc,
                spec.pubsub,
                spec.topic,
                self.config.app_id,
                self._deliverer(spec),
                self.subjects,
                spec.dead_letter_topic,
                gate=self._gate,
            )
            if spec.bulk is not None and isinstance(self.app, HttpApp):  # gRPC apps get events one by one
                subscription.bulk = self._bulk_deliverer(spec, self.app)
                subscription.max_messages = spec.bulk.max_messages
                subscription.max_await = spec.bulk.max_await_ms / 1000
            try:
                await subscription.start()
            except NatriumError as exc:
                # The pubsub may simply not be up yet: keep trying, loudly, without failing the app.
                log.error("subscription to %s/%s failed, retrying: %s", spec.pubsub, spec.topic, exc.message)
                self._retries.add(asyncio.create_task(self._subscribe_later(subscription)))
                continue
            self.subscriptions.append(subscription)

    async def _subscribe_later(self, subscription: Subscription, every: float = 2.0) -> None:
        while True:
            await asyncio.sleep(every)
            try:
                await subscription.start()
            except NatriumError as exc:
                log.error("subscription to %s/%s still failing: %s", subscription.pubsub, subscription.topic, exc)
                continue
            self.subscriptions.append(subscription)
            log.info("subscribed to %s/%s", subscription.pubsub, subscription.topic)
            return

    async def _health_changed(self, healthy: bool) -> None:
        """Deliveries wait on the gate by themselves; invocations need the queue group left or joined."""
        if self.server is None:
            return
        if healthy:
            await self.server.start()
        else:
            await self.server.pause()

    async def _invoked(self, request: InvokeRequest) -> InvokeResponse:
        assert self.app is not None
        self.acl.check(request.caller, request.verb, request.method, self.config.app_id)
        return await self.app.forward(request)

    def _deliverer(self, spec: SubscriptionSpec) -> Handler:
        async def deliver(event: Event) -> Status:
            assert self.app is not None
            route = spec.route(event.envelope)
            if route is None:
                raise Drop(f"no route matched event {event.id} on topic {spec.topic}")
            return await self.app.deliver(route, event)

        return deliver

    def _bulk_deliverer(self, spec: SubscriptionSpec, app: HttpApp) -> BulkHandler:
        """A batch split by route, one bulk POST per route; an event no rule routes is dropped."""

        async def deliver(events: list[Event]) -> list[Status]:
            statuses = [Status.DROP] * len(events)
            by_route: dict[str, list[int]] = {}
            for index, event in enumerate(events):
                route = spec.route(event.envelope)
                if route is None:
                    log.warning("no route matched event %s on topic %s", event.id, spec.topic)
                else:
                    by_route.setdefault(route, []).append(index)
            for route, indexes in by_route.items():
                answers = await app.deliver_bulk(route, [events[i] for i in indexes])
                for index, status in zip(indexes, answers, strict=True):
                    statuses[index] = status
            return statuses

        return deliver

    async def _host_actors(self) -> None:
        assert self.app is not None
        assert isinstance(self.app, HttpApp)
        host = ActorHost(self.nc, self.subjects, HttpActorApp(self.app))
        if await host.start():  # False: the app's `GET /dapr/config` lists no actor types
            self.actor_host = host

    async def close(self) -> None:
        if self.health is not None:
            await self.health.stop()  # a delivery waiting on the gate is cancelled by its own stop
        # Actors drain first: their last turns and deactivations still need the app.
        if self.actor_host is not None:
            await self.actor_host.stop()
        for task in self._retries:
            task.cancel()
        for subscription in self.subscriptions:
            await subscription.stop()
        if self.server is not None:
            await self.server.stop()
        if self.configuration is not None:
            await self.configuration.stop()
        if self.bindings is not None:
            await self.bindings.stop()
        if self.app is not None:
            await self.app.close()


async def run_app(config: RunConfig, stop: asyncio.Event) -> int:
    """Run the app until it exits or `stop` is set; returns the app's exit code."""
    # Ports left at 0 are bound to whatever the OS gives and held from then on: picking a free
    # port first and binding it later races every other process that does the same.
    if config.dapr_http_port and not port_is_free(config.dapr_http_port):
        raise NatriumError("ERR_PORT_IN_USE", f"--dapr-http-port {config.dapr_http_port} is taken")
    if config.dapr_grpc_port and not port_is_free(config.dapr_grpc_port):
        raise NatriumError("ERR_PORT_IN_USE", f"--dapr-grpc-port {config.dapr_grpc_port} is taken")
    nc = await connect(ConnectionSettings.from_env(config.nats_url, name=f"natrium-run-{config.app_id}"))
    # One id per run: replicas of an app id, and later runs of it, do not deliver each other's
    # configuration subscriptions. Without an app port there is no channel to deliver them at all.
    channel_id = NUID().next().decode() if config.app_port else None
    channel = AppChannel(config, nc, channel_id)
    gateway = Gateway(
        nc,
        GatewayConfig(
            http_port=config.dapr_http_port, app_id=config.app_id, api_token=config.api_token, channel_id=channel_id
        ),
        channel.subjects,
        resiliency=resiliency.from_resources(channel.resources, config.app_id),
    )
    runner = await start_gateway(gateway)
    config.dapr_http_port = gateway.config.http_port
    try:  # Dapr's gRPC API beside the HTTP one, for the SDKs' gRPC clients
        grpc_server, config.dapr_grpc_port = await start_grpc_server(
            gateway, config.dapr_grpc_port, shutdown=runner.app[SHUTDOWN]
        )
    except BaseException:
        await runner.cleanup()
        raise
    # The app dies with its channel (even on SIGKILL): an app left behind would answer nobody.
    child = await asyncio.create_subprocess_exec(
        *config.command, env=_child_env(config, nc), preexec_fn=die_with_parent
    )
    exited = asyncio.Event()
    watcher = asyncio.create_task(_watch(child, exited))
    try:
        started = not config.app_port or await _unless_stopped(channel.connect_app(exited), stop)
        if started:
            gateway.actor_host = channel.actor_host
            gateway.subscriptions = channel.listed_subscriptions
            gateway.app_connection = config.app_connection()
            click.echo(
                f"app {config.app_id} is up: Dapr HTTP API on port {config.dapr_http_port}, "
                f"gRPC API on port {config.dapr_grpc_port}, "
                f"{len(channel.subscriptions)} subscription(s), pid {child.pid}",
                err=True,
            )
            stopper = asyncio.create_task(stop.wait())
            await asyncio.wait({watcher, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
        else:
            log.info("stopped while the app was starting", extra={"app_id": config.app_id})
    finally:
        await channel.close()
        await _stop_child(child)
        watcher.cancel()
        await stop_grpc_server(grpc_server)
        await runner.cleanup()
        await close_gracefully(nc)
    return _exit_code(config, child)


async def _unless_stopped(work: Coroutine[Any, Any, None], stop: asyncio.Event) -> bool:
    """Run `work` unless `stop` comes first (then cancel it): a Ctrl-C while the app is still
    starting stops the run at once, not after --app-port-timeout."""
    task = asyncio.create_task(work)
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    if task.done():
        task.result()  # its error, if it failed
        return True
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return False


def _exit_code(config: RunConfig, child: asyncio.subprocess.Process) -> int:
    """The exit code of a run: the app's (after it stopped)."""
    code = child.returncode if child.returncode is not None else 1
    if code < 0:  # killed by a signal: report it the way a shell does
        code = 128 - code
    click.echo(f"app {config.app_id} exited with code {code}", err=True)
    return code


def _child_env(config: RunConfig, nc: Client) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "APP_ID": config.app_id,
            "DAPR_HTTP_PORT": str(config.dapr_http_port),
            "DAPR_GRPC_PORT": str(config.dapr_grpc_port),
            "NATRIUM_ROOT": config.root,
            "NATS_URL": nc.connected_url.geturl() if nc.connected_url else (config.nats_url or ""),
        }
    )
    if config.app_port:
        env["APP_PORT"] = str(config.app_port)
    if config.api_token:
        env["DAPR_API_TOKEN"] = config.api_token
    return env


async def _watch(child: asyncio.subprocess.Process, exited: asyncio.Event) -> None:
    await child.wait()
    exited.set()


async def _stop_child(child: asyncio.subprocess.Process, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if the app ignores it."""
    if child.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        child.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(child.wait(), timeout)
    except TimeoutError:
        child.kill()
        await child.wait()
