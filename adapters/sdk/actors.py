"""Bus-native actors for Python apps: an `Actor` base class, its state manager, and typed proxies.

class Counter(Actor):
    async def incr(self, by: int = 1) -> int:
        n = await self.state.get("n", 0) + by
        self.state.set("n", n)          # saved as one transaction when the turn ends
        return n

app = App("counters")
app.register_actor(Counter)
app.configure_actors(actorIdleTimeout="10m", reentrancy={"enabled": True})
await app.run()

counter = client.actor(Counter, "c1")  # or client.actor("Counter", "c1")
await counter.incr(2)

Methods take at most one argument (the JSON body) and return anything JSON can carry; a void
method answers `null`, as Dapr's Python proxies expect. The runtime guarantees one turn at a time
per actor, so methods need no locks of their own.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from adapters.actors.app import ActorCall, ActorReply, CallKind
from adapters.actors.client import ActorClient
from adapters.actors.host import ActorHost
from adapters.actors.wire import REENTRANCY_HEADER
from kernel.errors import Codes, NatriumError
from schemas.actors import ActorConfig, ReminderRequest, StateOperation, TimerRequest

__all__ = ["Actor", "ActorProxy", "ActorRuntime", "StateManager"]

log = logging.getLogger("natrium.sdk.actors")

# The reentrancy id of the turn running in this task: calls made from it carry it on.
_chain: contextvars.ContextVar[str | None] = contextvars.ContextVar("natrium_actor_chain", default=None)
_MISSING = object()
A = TypeVar("A", bound="Actor")


class StateManager:
    """An actor's state: reads are cached, writes are kept until `save()`, which the runtime calls
    after each turn and which writes them all as one transaction."""

    def __init__(
        self, client: ActorClient, actor_type: str, actor_id: str, fence: Callable[[], bool] | None = None
    ) -> None:
        self._client = client
        self._fence = fence
        self._type = actor_type
        self._id = actor_id
        self._cache: dict[str, Any] = {}
        self._changes: dict[str, StateOperation] = {}

    async def get(self, key: str, default: Any = None) -> Any:
        value = self._cache.get(key, _MISSING)
        if value is _MISSING:
            raw = await self._client.get_state(self._type, self._id, key)
            value = json.loads(raw) if raw else _MISSING
            self._cache[key] = value
        return default if value is _MISSING else value

    async def contains(self, key: str) -> bool:
        return await self.get(key, _MISSING) is not _MISSING

    def set(self, key: str, value: Any, *, ttl_seconds: int | None = None) -> None:
        self._cache[key] = value
        request: dict[str, Any] = {"key": key, "value": value}
        if ttl_seconds is not None:
            request["metadata"] = {"ttlInSeconds": str(ttl_seconds)}
        self._changes[key] = StateOperation(operation="upsert", request=request)

    def remove(self, key: str) -> None:
        self._cache[key] = _MISSING
        self._changes[key] = StateOperation(operation="delete", request={"key": key})

    async def save(self) -> None:
        if not self._changes:
            return
        if self._fence is not None and not self._fence():
            # This host lost the actor (lease lapsed, drained) during the turn: another host may
            # own it now, and a write from here could overwrite what that one wrote.
            self.discard()
            raise NatriumError(
                Codes.ACTOR_INSTANCE_MISSING,
                f"actor {self._type}/{self._id} is no longer active on this host; changes not saved",
                status=400,
            )
        operations = list(self._changes.values())
        await self._client.transaction(self._type, self._id, operations)
        self._changes.clear()

    def discard(self) -> None:
        """Forget unsaved changes and the cache (a turn failed: the next one reads the store again)."""
        self._changes.clear()
        self._cache.clear()


class Actor:
    """Base class of bus-native actors; public async methods are callable from proxies and HTTP.

    `actor_type` defaults to the class name. Override `on_activate`, `on_deactivate` and
    `receive_reminder` as needed.
    """

    actor_type: ClassVar[str] = ""

    def __init__(self, runtime: ActorRuntime, actor_id: str) -> None:
        self.actor_id = actor_id
        self.runtime = runtime
        self.state = StateManager(runtime.client, self.type_name(), actor_id, functools.partial(runtime.owns, self))

    @classmethod
    def type_name(cls) -> str:
        return cls.__dict__.get("actor_type") or cls.__name__

    async def on_activate(self) -> None:
        """Runs inside the first turn of an activation."""

    async def on_deactivate(self) -> None:
        """Runs when the activation ends (idle, drain, rebalance)."""

    async def receive_reminder(self, name: str, data: Any, due_time: str, period: str) -> None:
        """A reminder fired."""

    async def register_timer(
        self,
        name: str,
        callback: str | Callable[..., Awaitable[Any]],
        data: Any = None,
        *,
        due_time: str = "0s",
        period: str | None = None,
        ttl: str | None = None,
    ) -> None:
        """Call `callback(data)` on this actor after `due_time`, every `period`; gone at deactivation."""
        method = callback if isinstance(callback, str) else callback.__name__
        request = TimerRequest(callback=method, data=data, dueTime=due_time, period=period, ttl=ttl)
        await self.runtime.client.create_timer(self.type_name(), self.actor_id, name, request)

    async def unregister_timer(self, name: str) -> None:
        await self.runtime.client.delete_timer(self.type_name(), self.actor_id, name)

    async def register_reminder(
        self, name: str, data: Any = None, *, due_time: str = "0s", period: str | None = None, ttl: str | None = None
    ) -> None:
        """A durable reminder: `receive_reminder` runs even after restarts, activating the actor."""
        request = ReminderRequest(dueTime=due_time, period=period, ttl=ttl, data=data)
        await self.runtime.client.create_reminder(self.type_name(), self.actor_id, name, request)

    async def unregister_reminder(self, name: str) -> None:
        await self.runtime.client.delete_reminder(self.type_name(), self.actor_id, name)

    def proxy(self, actor: str | type[A], actor_id: str) -> ActorProxy[A]:
        """A proxy to another actor (or this one): calls keep this turn's reentrancy chain."""
        return ActorProxy(self.runtime.client, actor, actor_id)


class ActorProxy(Generic[A]):
    """Calls one actor: `await proxy.method(arg)` or `await proxy.invoke("method", arg)`.

    Built from an actor class, it refuses method names the class does not have.
    """

    def __init__(self, client: ActorClient, actor: str | type[A], actor_id: str) -> None:
        self._client = client
        self._class = actor if isinstance(actor, type) else None
        self.actor_type = actor.type_name() if isinstance(actor, type) else actor
        self.actor_id = actor_id

    async def invoke(self, method: str, data: Any = None, *, raw: bool = False) -> Any:
        """Call `method`; the reply is JSON-decoded (raw=True: the bytes). App errors raise."""
        body = b"" if data is None else data if isinstance(data, bytes) else json.dumps(data).encode()
        headers = {"Content-Type": "application/json"} if body else {}
        chain = _chain.get()
        if chain:
            headers[REENTRANCY_HEADER] = chain
        reply = await self._client.invoke(self.actor_type, self.actor_id, method, body, headers)
        if not reply.ok:
            raise NatriumError(
                Codes.ACTOR_INVOKE_METHOD,
                reply.body.decode(errors="replace") or f"actor method {method} failed",
                status=reply.status,
            )
        if raw:
            return reply.body
        return json.loads(reply.body) if reply.body else None

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        if name.startswith("_"):
            raise AttributeError(name)
        if self._class is not None and not _is_method(self._class, name):
            raise AttributeError(f"actor type {self.actor_type} has no method {name!r}")

        async def call(data: Any = None) -> Any:
            return await self.invoke(name, data)

        return call


# Per (class, method name), inspected once: `inspect` costs more than a whole small turn.
_METHODS: dict[tuple[type, str], bool] = {}
_ARGUMENTS: dict[tuple[type, str], tuple[bool, bool]] = {}


def _is_method(cls: type, name: str) -> bool:
    known = _METHODS.get((cls, name))
    if known is None:
        known = not name.startswith("_") and not hasattr(Actor, name)
        known = known and inspect.iscoroutinefunction(getattr(cls, name, None))
        if len(_METHODS) < 10_000:  # names come from callers: bound the cache
            _METHODS[(cls, name)] = known
    return known


def _argument(cls: type, name: str) -> tuple[bool, bool]:
    """(takes an argument, the argument is required) of a method known to exist."""
    known = _ARGUMENTS.get((cls, name))
    if known is None:
        positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        parameters = [p for p in inspect.signature(getattr(cls, name)).parameters.values() if p.kind in positional]
        rest = parameters[1:]  # after self
        known = (bool(rest), bool(rest) and rest[0].default is inspect.Parameter.empty)
        _ARGUMENTS[(cls, name)] = known
    return known


@dataclass
class _Instance:
    actor: Actor


class ActorRuntime:
    """Runs registered `Actor` classes for an `ActorHost` (it is the host's `ActorApp`)."""

    def __init__(self, client: ActorClient, config: dict[str, Any] | None = None) -> None:
        self.client = client
        self.config = dict(config or {})
        """Dapr `/dapr/config` settings (actorIdleTimeout, reentrancy...), entities excepted."""
        self.classes: dict[str, type[Actor]] = {}
        self.host: ActorHost | None = None
        """Set by the app: state writes are refused once the host no longer owns the actor."""
        self._active: dict[tuple[str, str], Actor] = {}

    def owns(self, actor: Actor) -> bool:
        return self.host is None or self.host.owns(actor.type_name(), actor.actor_id)

    def register(self, cls: type[Actor]) -> None:
        if not (isinstance(cls, type) and issubclass(cls, Actor)):
            raise TypeError("register_actor takes a subclass of adapters.sdk.actors.Actor")
        self.classes[cls.type_name()] = cls

    async def actor_config(self) -> ActorConfig:
        return ActorConfig.model_validate({**self.config, "entities": sorted(self.classes)})

    async def call(self, call: ActorCall) -> ActorReply:
        cls = self.classes.get(call.actor_type)
        if cls is None:
            return _error(404, f"actor type {call.actor_type} is not hosted here")
        key = (call.actor_type, call.actor_id)
        actor = self._active.get(key)
        token = _chain.set(_header(call.headers, REENTRANCY_HEADER))
        try:
            if actor is None:
                actor = cls(self, call.actor_id)
                await actor.on_activate()
                self._active[key] = actor
            result = await self._dispatch(actor, call)
            await actor.state.save()
        except _NotFound as exc:
            return _error(404, str(exc))
        except Exception as exc:
            if actor is not None:
                actor.state.discard()
            where = f"{call.actor_type}/{call.actor_id}"
            log.warning("actor method failed", extra={"actor": where, "error": repr(exc)})
            return _error(500, f"{type(exc).__name__}: {exc}")
        finally:
            _chain.reset(token)
        return ActorReply(200, json.dumps(result).encode(), {"Content-Type": "application/json"})

    async def _dispatch(self, actor: Actor, call: ActorCall) -> Any:
        if call.kind is CallKind.REMINDER:
            body = json.loads(call.body or b"{}")
            await actor.receive_reminder(call.name, body.get("data"), body.get("dueTime", ""), body.get("period", ""))
            return None
        if call.kind is CallKind.TIMER:
            body = json.loads(call.body or b"{}")
            return await self._method(actor, str(body.get("callback") or ""), body.get("data"), True)
        data = json.loads(call.body) if call.body else None
        return await self._method(actor, call.name, data, call.body != b"")

    @staticmethod
    async def _method(actor: Actor, name: str, data: Any, has_argument: bool) -> Any:
        if not _is_method(type(actor), name):
            raise _NotFound(f"actor type {actor.type_name()} has no method {name!r}")
        method = getattr(actor, name)
        takes, required = _argument(type(actor), name)
        if takes and (has_argument or required):
            return await method(data)
        return await method()

    async def deactivate(self, actor_type: str, actor_id: str) -> None:
        actor = self._active.pop((actor_type, actor_id), None)
        if actor is not None:
            await actor.on_deactivate()


class _NotFound(Exception):
    pass


def _error(status: int, message: str) -> ActorReply:
    body = json.dumps({"errorCode": Codes.ACTOR_INVOKE_METHOD, "message": message}).encode()
    return ActorReply(status, body, {"Content-Type": "application/json"})


def _header(headers: dict[str, str], name: str) -> str | None:
    lowered = name.lower()
    return next((v for k, v in headers.items() if k.lower() == lowered), None)
