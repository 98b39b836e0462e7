"""An app object that collects subscription handlers and serves them on the bus.

app = App("orders", resources="./components")     # Subscription YAML routes to @app.route paths

@app.subscribe("pubsub", "orders", match='event.type == "order.created"')
async def created(event): ...

@app.subscribe("pubsub", "orders")                 # no match: the topic's default route
async def other(event): ...

@app.route("/audit")                               # target of a declarative route
async def audit(event): ...
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters import access
from adapters.actors.host import ActorHost
from adapters.delivery import Drop, Event, Handler, Status
from adapters.invocation import InvocationServer, InvokeRequest, InvokeResponse, to_response
from adapters.sdk.actors import Actor, ActorRuntime
from adapters.sdk.client import Client
from adapters.subscriptions import Rule, SubscriptionSpec, from_resources
from kernel.components import load_components
from kernel.errors import Codes, NatriumError

__all__ = ["App"]

MethodHandler = Callable[[InvokeRequest], Awaitable[Any]]


@dataclass
class _TopicRoutes:
    rules: list[Rule] = field(default_factory=list)
    default: str | None = None
    dead_letter_topic: str | None = None


class App:
    """Handlers by topic (programmatic) or by route path (declarative), served by `run()`."""

    def __init__(self, app_id: str, resources: str | Path | None = None) -> None:
        self.app_id = app_id
        self.resources = resources
        self.client: Client | None = None
        self._paths: dict[str, Handler] = {}
        self._programmatic: dict[tuple[str, str], _TopicRoutes] = {}
        self._methods: dict[str, Callable[[InvokeRequest], Awaitable[Any]]] = {}
        self._server: InvocationServer | None = None
        self._acl = access.AccessControl()
        """From the `Configuration` resources in `resources` scoped to this app (allow all without)."""
        self._actor_classes: list[type[Actor]] = []
        self._actor_config: dict[str, Any] = {}
        self.actor_host: ActorHost | None = None
        self.actor_host_id: str | None = None
        """The actor host's id in placement; None = a random one per start."""

    def method(self, name: str) -> Callable[[MethodHandler], MethodHandler]:
        """Serve `name` to callers (`invoke(app_id, name)`, or HTTP through any gateway), on the bus.

        The handler gets the InvokeRequest and returns an InvokeResponse, bytes, text, a JSON value or None.
        """

        def register(handler: MethodHandler) -> MethodHandler:
            self._methods[name.strip("/")] = handler
            return handler

        return register

    async def _serve_method(self, request: InvokeRequest) -> InvokeResponse:
        self._acl.check(request.caller, request.verb, request.method, self.app_id)
        handler = self._methods.get(request.method.strip("/"))
        if handler is None:
            body = json.dumps({"errorCode": "ERR_METHOD_NOT_FOUND", "message": f"no method {request.method}"})
            return InvokeResponse(404, {"Content-Type": "application/json"}, body.encode())
        return to_response(await handler(request))

    def register_actor(self, cls: type[Actor]) -> type[Actor]:
        """Host the `Actor` subclass `cls` on the bus when the app starts (usable as a decorator)."""
        if not (isinstance(cls, type) and issubclass(cls, Actor)):
            raise TypeError("register_actor takes a subclass of adapters.sdk.actors.Actor")
        self._actor_classes.append(cls)
        return cls

    def configure_actors(self, **settings: Any) -> None:
        """Actor runtime settings in Dapr's `/dapr/config` spelling: actorIdleTimeout="10m",
        actorScanInterval, drainOngoingCallTimeout, drainRebalancedActors, reentrancy={...},
        entitiesConfig=[...]."""
        self._actor_config.update(settings)

    def route(self, path: str) -> Callable[[Handler], Handler]:
        """Register the handler a declarative subscription's route `path` points to."""

        def register(handler: Handler) -> Handler:
            self._paths[path] = handler
            return handler

        return register

    def subscribe(
        self, pubsub: str, topic: str, *, match: str | None = None, dead_letter_topic: str | None = None
    ) -> Callable[[Handler], Handler]:
        """Handle a topic; with `match` (CEL over `event`) only matching events, rules tried in order."""

        def register(handler: Handler) -> Handler:
            path = f"handler:{len(self._paths)}:{getattr(handler, '__name__', 'handler')}"
            self._paths[path] = handler
            routes = self._programmatic.setdefault((pubsub, topic), _TopicRoutes())
            if match is None:
                routes.default = path
            else:
                routes.rules.append(Rule.compiled(match, path, f"@app.subscribe({topic!r})"))
            routes.dead_letter_topic = dead_letter_topic or routes.dead_letter_topic
            return handler

        return register

    def subscriptions(self) -> list[SubscriptionSpec]:
        """Every subscription this app serves: decorators plus the Subscription resources scoped to it."""
        specs = [
            SubscriptionSpec(pubsub, topic, tuple(r.rules), r.default, r.dead_letter_topic)
            for (pubsub, topic), r in self._programmatic.items()
        ]
        if self.resources is not None:
            declared = [
                s for s in from_resources(load_components(self.resources).resources) if s.applies_to(self.app_id)
            ]
            taken = {(s.pubsub, s.topic) for s in specs}
            for spec in declared:
                if (spec.pubsub, spec.topic) in taken:
                    raise NatriumError(
                        Codes.COMPONENT_INVALID,
                        f"topic {spec.topic} of {spec.pubsub} is subscribed both in code and by {spec.name!r}",
                    )
            specs += declared
        return specs

    def _dispatcher(self, spec: SubscriptionSpec) -> Handler:
        async def dispatch(event: Event) -> Status | str | None:
            path = spec.route(event.envelope)
            if path is None:
                raise Drop(f"no route matched event {event.id} on topic {spec.topic}")
            handler = self._paths.get(path)
            if handler is None:
                # Dapr's app would answer 404 for an unknown path, which means DROP.
                raise Drop(f"no handler registered for route {path}")
            return await handler(event)

        return dispatch

    async def start(self, url: str | None = None, *, client: Client | None = None) -> Client:
        """Subscribe everything, on `client` when given (its app id is used), else on a new connection."""
        specs = self.subscriptions()
        if self.resources is not None:
            self._acl = access.from_resources(load_components(self.resources).resources, self.app_id)
        self.client = client or await Client.connect(url, app_id=self.app_id)
        for spec in specs:
            await self.client.subscribe(
                spec.pubsub, spec.topic, self._dispatcher(spec), dead_letter_topic=spec.dead_letter_topic
            )
        if self._methods:
            self._server = InvocationServer(self.client.nc, self.client.subjects, self.app_id, self._serve_method)
            await self._server.start()
        if self._actor_classes:
            runtime = ActorRuntime(self.client.actors, self._actor_config)
            for cls in self._actor_classes:
                runtime.register(cls)
            self.actor_host = ActorHost(self.client.nc, self.client.subjects, runtime, self.actor_host_id)
            runtime.host = self.actor_host
            await self.actor_host.start()
        return self.client

    async def stop(self) -> None:
        if self.actor_host is not None:
            await self.actor_host.stop()  # drain the actors first: their turns may still use the bus
            self.actor_host = None
        if self._server is not None:
            await self._server.stop()
        if self.client is not None:
            for subscription in self.client._subscriptions:
                await subscription.stop()

    async def run(self, url: str | None = None, stop: asyncio.Event | None = None) -> None:
        client = await self.start(url)
        try:
            await (stop or asyncio.Event()).wait()
        finally:
            if self.actor_host is not None:
                await self.actor_host.stop()
                self.actor_host = None
            if self._server is not None:
                await self._server.stop()
            await client.close()
