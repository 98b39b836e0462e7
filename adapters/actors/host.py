"""An actor host: holds a placement lease, activates actors it claims, runs their turns and timers.

Guarantees and why they hold:

- *Single activation.* A turn runs only on an activation this host created after writing the
  actor's record itself (compare-and-set, adapters/actors/placement.py), and only while its lease
  is valid by its own clock (`_fence_at`). Another host may take the record over only once this
  host's lease key is gone, which the server does no earlier than `sent + ttl`, while this host
  stopped serving and cancelled its turns at `sent + ttl - margin`. A lease that lapsed is never
  resumed: the host drops every activation and comes back as a new incarnation.
- *Turns.* One `asyncio.Lock` per activation covers methods, timers and reminders. A call that
  carries the reentrancy id of the turn in progress enters it (reentrant types only), up to
  `maxStackDepth`; without reentrancy an A -> B -> A chain waits for its own turn and times out.
- *Deactivation* (idle, drain, rebalance, lease lost) takes the turn lock first, so it never cuts
  a turn short unless a timeout says so; calls that queued behind it activate the actor afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from opentelemetry import trace

from adapters.actors.app import ActorApp, ActorCall, ActorReply, CallKind
from adapters.actors.placement import HostDirectory, HostLease, Placement, host_subject, new_incarnation, rendezvous
from adapters.actors.settings import LeaseSettings, TypeSettings, type_settings
from adapters.actors.wire import REENTRANCY_HEADER, error_headers, pack, unpack
from kernel.durations import Period, parse_due_time, parse_period, parse_ttl
from kernel.errors import Codes, NatriumError
from kernel.jetstream import WRONG_LAST_SEQUENCE, JetStreamRejected
from kernel.subjects import Subjects
from kernel.tracing import extract, inject, span
from schemas.actors import TimerRequest

__all__ = ["ActorHost"]

log = logging.getLogger("natrium.actors.host")


class _Retry(Exception):
    """The activation went away while the call waited for its turn: route the call again."""


@dataclass(eq=False)
class _Activation:
    actor_type: str
    actor_id: str
    settings: TypeSettings
    sequence: int
    """Revision of the activation record this host wrote."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    chain: str | None = None
    """Reentrancy id of the turn in progress."""
    depth: int = 0
    pending: int = 0
    """Turns running or waiting."""
    last_used: float = field(default_factory=time.monotonic)
    timers: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    turns: set[asyncio.Task[Any]] = field(default_factory=set)
    dead: bool = False
    gone: asyncio.Event = field(default_factory=asyncio.Event)


class ActorHost:
    """Hosts the actor types `app` declares; `start()` joins placement, `stop()` drains and leaves."""

    def __init__(
        self,
        nc: Client,
        subjects: Subjects,
        app: ActorApp,
        host_id: str | None = None,
        *,
        lease: LeaseSettings | None = None,
    ) -> None:
        self.nc = nc
        self.subjects = subjects
        self.app = app
        self.host_id = host_id or f"host-{uuid.uuid4().hex[:12]}"
        self.lease_settings = lease or LeaseSettings.from_env()
        self.placement = Placement(nc, subjects)
        self.directory = HostDirectory(nc, self.placement, on_change=self._hosts_changed)
        self.types: dict[str, TypeSettings] = {}
        self.subject = host_subject(subjects, self.host_id)
        self._actors: dict[tuple[str, str], _Activation] = {}
        self._claims: dict[tuple[str, str], asyncio.Task[Any]] = {}
        self._lease: HostLease | None = None
        self._lease_seq = 0
        self._fence_at = 0.0
        self._stopping = False
        self._sub: Subscription | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._background: list[asyncio.Task[None]] = []
        self._rebalance_pending = False

    # -- lifecycle --------------------------------------------------------------------------------

    @property
    def hosting(self) -> bool:
        """True when the app declared actor types and the host joined placement."""
        return self._sub is not None

    def active_actors(self) -> dict[str, int]:
        """Active actors per type (for `/v1.0/metadata`)."""
        counts = dict.fromkeys(self.types, 0)
        for actor_type, _ in self._actors:
            counts[actor_type] = counts.get(actor_type, 0) + 1
        return counts

    def owns(self, actor_type: str, actor_id: str) -> bool:
        """True while this host may act for the actor: it is active here and the lease is valid.

        Check it right before a write on the actor's behalf (the SDK state manager does; an app
        channel's Dapr API can refuse actor state writes for actors it does not host, as daprd
        does): a write sent while this holds lands, on a working bus, well inside the fence margin
        before any other host could take the actor over.
        """
        # Not `dead`: that only stops new turns; the turn in progress still owns the actor until
        # its deactivation took the turn lock (and forgot the activation) or cancelled it.
        return (actor_type, actor_id) in self._actors and self._serving()

    async def start(self) -> bool:
        """Join placement with the app's types; False (and nothing started) when it declares none."""
        config = await self.app.actor_config()
        self.types = type_settings(config)
        if not self.types:
            return False
        await self.placement.open()
        # Listen before the lease is visible: a caller that sees the lease finds the subject served.
        self._sub = await self.nc.subscribe(self.subject, cb=self._on_request)
        try:
            await self._new_lease(previous_inc=None)
        except JetStreamRejected as exc:
            await self._sub.unsubscribe()
            self._sub = None
            raise NatriumError(Codes.ACTOR_RUNTIME_NOT_FOUND, f"actor host {self.host_id}: {exc.description}") from None
        await self.directory.start()
        self._background = [
            asyncio.create_task(self._keep_lease(), name=f"actor-lease-{self.host_id}"),
            asyncio.create_task(self._scan_idle(), name=f"actor-idle-{self.host_id}"),
        ]
        log.info("actor host started", extra={"host": self.host_id, "types": sorted(self.types)})
        return True

    async def stop(self) -> None:
        """Drain: finish (or, after drainOngoingCallTimeout, cancel) turns, deactivate all, leave."""
        if self._sub is None:
            return
        self._stopping = True
        lease = self._lease
        if lease is not None and self._serving():
            # Still holding the lease (records stay protected) but out of new placements.
            with contextlib.suppress(Exception):
                drained = HostLease(lease.host_id, lease.inc, (), lease.subject)
                self._lease_seq = await self.placement.write_lease(drained, self.lease_settings.ttl, self._lease_seq)
                self._lease = drained
        await asyncio.gather(
            *(self._deactivate(a, wait=a.settings.drain_timeout) for a in list(self._actors.values())),
            return_exceptions=True,
        )
        for task in self._background:
            task.cancel()
        for task in self._background:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._lease_seq:
            with contextlib.suppress(Exception):
                await self.placement.delete_lease(self.host_id, self._lease_seq)
        with contextlib.suppress(Exception):
            await self._sub.unsubscribe()
        self._sub = None
        await self.directory.stop()
        for task in list(self._tasks):
            task.cancel()
        log.info("actor host stopped", extra={"host": self.host_id})

    # -- lease ------------------------------------------------------------------------------------

    def _serving(self) -> bool:
        return time.monotonic() < self._fence_at

    async def _new_lease(self, previous_inc: str | None) -> None:
        lease = HostLease(self.host_id, new_incarnation(), tuple(sorted(self.types)), self.subject)
        sent = time.monotonic()
        self._lease_seq = await self.placement.write_lease(
            lease, self.lease_settings.ttl, None, previous_inc=previous_inc
        )
        self._lease = lease
        self._fence_at = sent + self.lease_settings.ttl - self.lease_settings.fence_margin

    async def _keep_lease(self) -> None:
        settings = self.lease_settings
        while True:
            wait = min(settings.renew_every, max(0.0, self._fence_at - time.monotonic()))
            await asyncio.sleep(wait)
            lease = self._lease
            if lease is None:
                return
            if not self._serving():
                await self._lapse("lease not renewed in time")
                continue
            sent = time.monotonic()
            try:
                # Never wait past the fence: a renewal that hangs must not keep turns running.
                renewal = self.placement.write_lease(lease, settings.ttl, self._lease_seq)
                self._lease_seq = await asyncio.wait_for(renewal, max(0.05, self._fence_at - sent))
                self._fence_at = sent + settings.ttl - settings.fence_margin
            except JetStreamRejected as exc:
                if exc.err_code in WRONG_LAST_SEQUENCE:
                    await self._lapse("lease lost")  # it lapsed at the server: never resume it
                else:
                    log.warning("lease renewal refused", extra={"host": self.host_id, "error": exc.description})
            except Exception as exc:  # NATS away: keep trying until the fence says stop
                log.warning("lease renewal failed", extra={"host": self.host_id, "error": repr(exc)})

    async def _lapse(self, why: str) -> None:
        """Drop every activation at once (others may own them soon), then re-join as a new incarnation."""
        old = self._lease
        log.warning("actor lease lapsed: dropping activations", extra={"host": self.host_id, "why": why})
        self._fence_at = 0.0
        await asyncio.gather(
            *(self._deactivate(a, wait=0.0) for a in list(self._actors.values())), return_exceptions=True
        )
        if self._stopping:
            return
        while not self._stopping:
            try:
                await self._new_lease(previous_inc=old.inc if old else None)
                return
            except Exception as exc:
                log.warning("could not re-join placement", extra={"host": self.host_id, "error": repr(exc)})
                await asyncio.sleep(self.lease_settings.renew_every)

    # -- requests ---------------------------------------------------------------------------------

    async def _on_request(self, msg: Msg) -> None:
        task = asyncio.create_task(self._serve(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, msg: Msg) -> None:
        try:
            request = unpack(msg.data)
            reply = await self._handle(request)
            await msg.respond(pack(reply))
        except NatriumError as exc:
            await self._respond_error(msg, exc)
        except asyncio.CancelledError:
            # Fenced, or drained past drainOngoingCallTimeout, mid-turn. Not a "retry": the turn
            # may have done part of its work, so running it again is the caller's decision.
            error = NatriumError(Codes.ACTOR_INVOKE_METHOD, "the actor's turn was cancelled: its activation ended")
            await self._respond_error(msg, error)
            raise
        except Exception as exc:
            log.exception("actor request failed", extra={"host": self.host_id})
            await self._respond_error(msg, NatriumError(Codes.ACTOR_INVOKE_METHOD, f"{type(exc).__name__}: {exc}"))

    async def _respond_error(self, msg: Msg, error: NatriumError) -> None:
        if msg.reply:
            with contextlib.suppress(Exception):
                await self.nc.publish(msg.reply, pack(error.to_body()), headers=error_headers(error))

    async def _handle(self, request: dict[str, Any]) -> dict[str, Any]:
        if not self._serving() or self._stopping:
            return {"retry": "host is not serving (draining or lease renewing)"}
        actor_type, actor_id = str(request["t"]), str(request["i"])
        if actor_type not in self.types:
            return {"retry": f"host does not host actor type {actor_type}"}
        op = request.get("op")
        for _ in range(5):
            found = await self._activation(actor_type, actor_id, redirected=bool(request.get("r")))
            if isinstance(found, dict):
                return found
            try:
                if op == "call":
                    reply = await self._call(found, request)
                    return {"s": reply.status, "b": reply.body, "h": reply.headers}
                if op == "timer.create":
                    self._create_timer(
                        found, str(request["n"]), TimerRequest.model_validate(request.get("timer") or {})
                    )
                    return {"s": 204}
                if op == "timer.delete":
                    task = found.timers.pop(str(request["n"]), None)
                    if task is not None:
                        task.cancel()
                    return {"s": 204}
                raise NatriumError(Codes.MALFORMED_REQUEST, f"unknown actor host operation {op!r}", status=400)
            except _Retry:
                continue
        return {"retry": "actor is being deactivated"}

    async def _activation(self, actor_type: str, actor_id: str, redirected: bool) -> _Activation | dict[str, Any]:
        key = (actor_type, actor_id)
        while True:
            activation = self._actors.get(key)
            if activation is not None:
                if not activation.dead:
                    return activation
                await activation.gone.wait()
                continue
            if not redirected:
                # Place new activations on the rendezvous winner: the caller's cache may point at
                # a host the actor was rebalanced away from. Once only (`r`), so views that differ
                # between hosts cannot bounce a call around.
                hosts = self.directory.hosts_for(actor_type)
                if hosts and self.host_id in hosts:
                    winner = rendezvous(actor_type, actor_id, hosts)
                    if winner != self.host_id:
                        return {"moved": winner}
            claim = self._claims.get(key)
            if claim is None:
                claim = asyncio.create_task(self._claim(actor_type, actor_id))
                self._claims[key] = claim
                claim.add_done_callback(functools.partial(self._claimed, key))
            result = await asyncio.shield(claim)
            if result is not None:
                return result
            # Claimed: the activation is in the map now (unless it died at once); look again.

    def _claimed(self, key: tuple[str, str], _task: asyncio.Task[Any]) -> None:
        self._claims.pop(key, None)

    async def _claim(self, actor_type: str, actor_id: str) -> dict[str, Any] | None:
        lease = self._lease
        if lease is None or not self._serving():
            return {"retry": "host is not serving"}
        claim = await self.placement.claim(actor_type, actor_id, lease)
        if not claim.owned:
            return {"moved": claim.owner} if claim.owner else {"retry": "actor is being claimed"}
        if self._lease is not lease or not self._serving():
            return {"retry": "lease changed while claiming"}
        self._actors[(actor_type, actor_id)] = _Activation(actor_type, actor_id, self.types[actor_type], claim.sequence)
        return None

    async def _call(self, activation: _Activation, request: dict[str, Any]) -> ActorReply:
        headers = {str(k): str(v) for k, v in (request.get("h") or {}).items()}
        call = ActorCall(
            activation.actor_type,
            activation.actor_id,
            CallKind(request.get("k") or CallKind.METHOD),
            str(request.get("n") or ""),
            bytes(request.get("b") or b""),
            headers,
        )
        name = f"actor {call.actor_type}.{call.name}" if call.kind is CallKind.METHOD else f"actor {call.kind.value}"
        with span(name, extract(headers), trace.SpanKind.SERVER, functools.partial(_attributes, call, self.host_id)):
            # The turn continues the caller's trace; the app gets the new span as its parent.
            inject(call.headers)
            return await self._turn(activation, call)

    async def _turn(self, activation: _Activation, call: ActorCall) -> ActorReply:
        settings = activation.settings
        chain = _header(call.headers, REENTRANCY_HEADER)
        if settings.reentrancy and not chain:
            chain = uuid.uuid4().hex
            call.headers[REENTRANCY_HEADER] = chain
        activation.last_used = time.monotonic()
        if settings.reentrancy and chain and activation.chain == chain:
            if not self._serving():
                raise _Retry
            if activation.depth >= settings.max_stack_depth:
                raise NatriumError(
                    Codes.ACTOR_STACK_DEPTH, f"maximum stack depth of {settings.max_stack_depth} exceeded", status=500
                )
            activation.depth += 1
            try:
                return await self._run(activation, call)
            finally:
                activation.depth -= 1
        activation.pending += 1
        try:
            async with activation.lock:
                if activation.dead or not self._serving():
                    raise _Retry
                activation.chain, activation.depth = chain, 1
                try:
                    return await self._run(activation, call)
                finally:
                    activation.chain, activation.depth = None, 0
                    activation.last_used = time.monotonic()
        finally:
            activation.pending -= 1

    async def _run(self, activation: _Activation, call: ActorCall) -> ActorReply:
        task = asyncio.current_task()
        if task is not None:
            activation.turns.add(task)
        try:
            return await self.app.call(call)
        except NatriumError:
            raise
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise NatriumError(
                Codes.ACTOR_INVOKE_METHOD, f"actor {call.actor_type}/{call.actor_id}: {type(exc).__name__}: {exc}"
            ) from None
        finally:
            if task is not None:
                activation.turns.discard(task)

    # -- timers -----------------------------------------------------------------------------------

    def _create_timer(self, activation: _Activation, name: str, request: TimerRequest) -> None:
        now = dt.datetime.now(dt.UTC)
        try:
            due = parse_due_time(request.due_time, now)
            period = parse_period(request.period)
            expires = parse_ttl(request.ttl, now)
        except ValueError as exc:
            raise NatriumError(Codes.ACTOR_TIMER_CREATE, f"error creating actor timer: {exc}", status=500) from None
        if not request.callback:
            raise NatriumError(Codes.ACTOR_TIMER_CREATE, "error creating actor timer: callback is empty", status=500)
        body = json.dumps(
            {
                "data": request.data,
                "callback": request.callback,
                "dueTime": request.due_time or "",
                "period": request.period or "",
            }
        ).encode()
        previous = activation.timers.pop(name, None)
        if previous is not None:
            previous.cancel()
        task = asyncio.create_task(self._timer(activation, name, body, due, period, expires))
        activation.timers[name] = task

    async def _timer(
        self,
        activation: _Activation,
        name: str,
        body: bytes,
        due: dt.datetime,
        period: Period | None,
        expires: dt.datetime | None,
    ) -> None:
        await asyncio.sleep(max(0.0, (due - dt.datetime.now(dt.UTC)).total_seconds()))
        fired = 0
        try:
            while not activation.dead:
                if expires is not None and dt.datetime.now(dt.UTC) >= expires:
                    break
                call = ActorCall(activation.actor_type, activation.actor_id, CallKind.TIMER, name, body, {})
                try:
                    reply = await self._turn(activation, call)
                    if not reply.ok:
                        log.warning("actor timer callback failed", extra={"timer": name, "status": reply.status})
                except _Retry:
                    break
                except NatriumError as exc:
                    log.warning("actor timer failed", extra={"timer": name, "error": exc.message})
                fired += 1
                if period is None or (period.repetitions is not None and fired >= period.repetitions):
                    break
                await asyncio.sleep(period.seconds)
        finally:
            if activation.timers.get(name) is asyncio.current_task():
                del activation.timers[name]

    # -- deactivation -----------------------------------------------------------------------------

    async def _deactivate(self, activation: _Activation, wait: float) -> None:
        """End an activation after its turn in progress, cancelling that turn after `wait` seconds.

        `dead` is set first: calls queued behind the turn then route again instead of running on
        an activation that is ending, and they find the next activation once `gone` is set.
        """
        if activation.dead:
            await activation.gone.wait()
            return
        activation.dead = True
        current = asyncio.current_task()
        for task in activation.timers.values():
            if task is not current:
                task.cancel()
        activation.timers.clear()
        acquire = asyncio.ensure_future(activation.lock.acquire())
        try:
            if activation.lock.locked() and not acquire.done():
                done, _ = await asyncio.wait({acquire}, timeout=wait) if wait > 0 else (set(), set())
                if acquire not in done:
                    for task in list(activation.turns):
                        task.cancel()
            await acquire
        except BaseException:
            acquire.cancel()
            self._forget(activation)
            raise
        try:
            try:
                await asyncio.wait_for(self.app.deactivate(activation.actor_type, activation.actor_id), 30)
            except Exception as exc:
                log.warning(
                    "actor deactivation failed in the app",
                    extra={"actor": f"{activation.actor_type}/{activation.actor_id}", "error": repr(exc)},
                )
            with contextlib.suppress(Exception):
                # Deletes exactly our revision: if the record changed hands meanwhile, nothing happens.
                await self.placement.release(activation.sequence)
        finally:
            self._forget(activation)
            activation.lock.release()

    def _forget(self, activation: _Activation) -> None:
        key = (activation.actor_type, activation.actor_id)
        if self._actors.get(key) is activation:
            del self._actors[key]
        activation.gone.set()

    async def _scan_idle(self) -> None:
        interval = min(s.scan_interval for s in self.types.values())
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            idle = [
                a
                for a in self._actors.values()
                if a.pending == 0
                and not a.lock.locked()
                and not a.dead
                and now - a.last_used >= a.settings.idle_timeout
            ]
            if idle:
                await asyncio.gather(
                    *(self._deactivate(a, wait=a.settings.drain_timeout) for a in idle), return_exceptions=True
                )

    # -- rebalancing ------------------------------------------------------------------------------

    def _hosts_changed(self) -> None:
        if self._rebalance_pending or self._stopping or not self._actors:
            return
        self._rebalance_pending = True
        task = asyncio.create_task(self._rebalance())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _rebalance(self) -> None:
        """Move actors whose rendezvous winner is now another live host (a host joined)."""
        await asyncio.sleep(0.05)  # let a burst of lease updates settle
        self._rebalance_pending = False
        moves = []
        for activation in list(self._actors.values()):
            hosts = self.directory.hosts_for(activation.actor_type)
            if self.host_id not in hosts:
                continue  # our own view is not current yet
            if rendezvous(activation.actor_type, activation.actor_id, hosts) != self.host_id:
                settings = activation.settings
                moves.append(
                    self._deactivate(activation, wait=settings.drain_timeout if settings.drain_rebalanced else 0)
                )
        if moves:
            log.info("rebalancing actors to a new host", extra={"host": self.host_id, "count": len(moves)})
            await asyncio.gather(*moves, return_exceptions=True)


def _attributes(call: ActorCall, host_id: str) -> dict[str, str]:
    return {
        "natrium.actor.type": call.actor_type,
        "natrium.actor.id": call.actor_id,
        "natrium.actor.call": call.kind.value,
        "natrium.actor.name": call.name,
        "natrium.actor.host": host_id,
    }


def _header(headers: dict[str, str], name: str) -> str | None:
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return None
