"""Durable actor reminders on JetStream message schedules: the server keeps the time, not a scheduler.

One stream per subject root (`allow_msg_schedules`), three subjects per reminder:

- `def.<type>.<id>.<name>`: the reminder as created, plus `gen` (a nonce per create) and `next`
  (the number of the fire that is due). GET reads it; DELETE purges all three subjects.
- `sched.<...>`: one `Nats-Schedule: @at <time>` message whose target is the fire subject. The
  server copies it there at that time, from its store: it survives restarts of everything.
- `fire.<...>`: the copies, consumed by one durable consumer that every replica of the actors
  service shares. The consumer invokes the actor (activating it wherever placement says then),
  then advances `next` with compare-and-set, schedules the next fire (deduplicated by
  `Nats-Msg-Id`) and acks. A fire whose `gen` or number is stale (re-created, deleted, or
  already done) is acked without a call, so a redelivery or an owner move does not double it.
  No host for the type yet (a restart) means a nak with a delay: the fire waits, it is not lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import api
from nats.nuid import NUID

from adapters.actors.app import ActorCall, CallKind
from adapters.actors.client import ActorClient
from adapters.actors.placement import actor_replicas, reminders_stream
from kernel.durations import parse_due_time, parse_duration, parse_period, parse_ttl
from kernel.errors import Codes, NatriumError
from kernel.jetstream import (
    EXPECTED_LAST_SUBJECT_SEQUENCE,
    WRONG_LAST_SEQUENCE,
    JetStreamRejected,
    ensure_stream,
    last_by_subject,
    publish,
    transport_errors_as,
)
from kernel.subjects import Subjects, encode_token
from schemas.actors import ReminderRequest

__all__ = ["Reminders"]

log = logging.getLogger("natrium.actors.reminders")

_RETRY_CAP = 5.0
"""Longest delay between attempts of a fire that could not be delivered."""
_APP_ATTEMPTS = 4
"""A fire the app keeps failing is given up after this many deliveries (the next one is scheduled):
Dapr's default of 3 retries, unless the reminder's failurePolicy says otherwise."""
_POISON = 50
"""A fire that natrium itself fails to handle this many times is dropped (logged as an error)."""


def _stamp(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Reminders:
    """Create, get, delete and fire reminders; `start()` also runs the fire consumer."""

    def __init__(self, nc: Client, subjects: Subjects, client: ActorClient, replicas: int | None = None) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.subjects = subjects
        self.client = client
        self.replicas = actor_replicas() if replicas is None else replicas
        self.stream = reminders_stream(subjects)
        self.base = f"{subjects.root}.actorreminders"
        self.concurrency = 256
        self._nuid = NUID()
        self._consumer: asyncio.Task[None] | None = None
        self._subscription: Any = None
        self._inflight: set[asyncio.Task[None]] = set()

    def _subject(self, kind: str, actor_type: str, actor_id: str, name: str) -> str:
        return f"{self.base}.{kind}.{encode_token(actor_type)}.{encode_token(actor_id)}.{encode_token(name)}"

    async def start(self) -> None:
        config = api.StreamConfig(
            name=self.stream,
            description=f"natrium actor reminders {self.subjects.root}",
            subjects=[f"{self.base}.>"],
            allow_msg_schedules=True,
            allow_direct=True,
            allow_rollup_hdrs=True,
            max_msgs_per_subject=1,
            duplicate_window=120,
            num_replicas=self.replicas,
            storage=api.StorageType.FILE,
        )
        await ensure_stream(self.js, config)
        consumer = api.ConsumerConfig(
            durable_name="fire",
            filter_subject=f"{self.base}.fire.>",
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=self.client.timeout + 30,
            max_ack_pending=4 * self.concurrency,
            deliver_policy=api.DeliverPolicy.ALL,
        )
        subscription = await self.js.pull_subscribe(
            f"{self.base}.fire.>", durable="fire", stream=self.stream, config=consumer
        )
        self._subscription = subscription
        self._consumer = asyncio.create_task(self._consume(subscription), name="actor-reminders")

    async def stop(self) -> None:
        if self._consumer is not None:
            self._consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._consumer
        if self._inflight:
            await asyncio.wait(set(self._inflight), timeout=5)
        if self._subscription is not None:
            # Left subscribed, a cancelled fetch's inbox keeps the connection's drain waiting.
            with contextlib.suppress(Exception):
                await self._subscription.unsubscribe()
            self._subscription = None

    # -- the API ----------------------------------------------------------------------------------

    @transport_errors_as(Codes.ACTOR_REMINDER_CREATE)
    async def create(self, actor_type: str, actor_id: str, name: str, request: ReminderRequest) -> None:
        now = dt.datetime.now(dt.UTC)
        try:
            due = parse_due_time(request.due_time, now)
            period = parse_period(request.period)
            expires = parse_ttl(request.ttl, now)
        except ValueError as exc:
            raise NatriumError(Codes.ACTOR_REMINDER_CREATE, f"error creating actor reminder: {exc}") from None
        definition = {
            "actorType": actor_type,
            "actorId": actor_id,
            "name": name,
            "dueTime": request.due_time or "",
            "period": request.period or "",
            "ttl": request.ttl or "",
            "data": request.data,
            "gen": self._nuid.next().decode(),
            "next": 1,
            "interval": period.seconds if period else None,
            "repetitions": period.repetitions if period else None,
            "expires": _stamp(expires) if expires else None,
            "retry": _retry_policy(request),
        }
        try:
            await publish(self.nc, self._subject("def", actor_type, actor_id, name), _json(definition), None)
            await self._schedule(definition, 1, max(due, now))
        except JetStreamRejected as exc:
            raise NatriumError(
                Codes.ACTOR_REMINDER_CREATE, f"error creating actor reminder: {exc.description}"
            ) from None

    @transport_errors_as(Codes.ACTOR_REMINDER_GET)
    async def get(self, actor_type: str, actor_id: str, name: str) -> dict[str, Any] | None:
        found = await self._definition(actor_type, actor_id, name)
        if found is None:
            return None
        definition = found[1]
        reminder = {k: definition[k] for k in ("dueTime", "period", "data") if definition.get(k) not in (None, "")}
        if definition.get("ttl"):
            reminder["ttl"] = definition["ttl"]
        return reminder

    @transport_errors_as(Codes.ACTOR_REMINDER_DELETE)
    async def delete(self, actor_type: str, actor_id: str, name: str) -> None:
        for kind in ("sched", "def", "fire"):
            await self._purge(self._subject(kind, actor_type, actor_id, name))

    # -- firing -----------------------------------------------------------------------------------

    async def _schedule(self, definition: dict[str, Any], number: int, at: dt.datetime) -> None:
        actor_type, actor_id, name = definition["actorType"], definition["actorId"], definition["name"]
        headers = {
            "Nats-Schedule": f"@at {_stamp(at)}",
            "Nats-Schedule-Target": self._subject("fire", actor_type, actor_id, name),
            # A redelivered fire schedules the same next fire: the server keeps one.
            "Nats-Msg-Id": f"{definition['gen']}:{number}",
        }
        body = _json({"gen": definition["gen"], "n": number, "at": _stamp(at)})
        await publish(self.nc, self._subject("sched", actor_type, actor_id, name), body, headers)

    async def _consume(self, subscription: Any) -> None:
        slots = asyncio.Semaphore(self.concurrency)
        while True:
            try:
                messages = await subscription.fetch(batch=64, timeout=1)
            except TimeoutError:
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("reminder fetch failed", extra={"error": repr(exc)})
                await asyncio.sleep(0.5)
                continue
            for msg in messages:
                await slots.acquire()
                task = asyncio.create_task(self._fire(msg))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)
                task.add_done_callback(lambda _t: slots.release())

    async def _fire(self, msg: Msg) -> None:
        try:
            await self._fire_one(msg)
        except Exception as exc:
            # Not "no host yet" (that naks above and waits as long as it takes): a failure of our
            # own, e.g. the bus away for a moment. A message that fails every time is dropped.
            with contextlib.suppress(Exception):
                if _deliveries(msg) >= _POISON:
                    log.error("reminder fire dropped", extra={"subject": msg.subject, "error": repr(exc)})
                    await msg.term()
                else:
                    log.warning("reminder fire failed; retrying", extra={"subject": msg.subject, "error": repr(exc)})
                    await msg.nak(delay=_delay(msg))

    async def _fire_one(self, msg: Msg) -> None:
        fire = json.loads(msg.data or b"{}")
        _, _, rest = msg.subject.partition(f"{self.base}.fire.")
        found = await self._definition_at(self._def_subject_of(rest))
        if found is None or found[1].get("gen") != fire.get("gen") or found[1].get("next") != fire.get("n"):
            await msg.ack()  # deleted, re-created, or done already
            return
        sequence, definition = found
        now = dt.datetime.now(dt.UTC)
        expires = definition.get("expires")
        if expires and now >= dt.datetime.fromisoformat(expires.replace("Z", "+00:00")):
            await self._finish(sequence, definition)
            await msg.ack()
            return
        body = _json({"data": definition.get("data"), "dueTime": definition["dueTime"], "period": definition["period"]})
        call = ActorCall(definition["actorType"], definition["actorId"], CallKind.REMINDER, definition["name"], body)
        try:
            reply = await self.client.call(call)
        except NatriumError as exc:
            log.info("reminder not delivered yet", extra={"subject": msg.subject, "error": exc.message})
            await msg.nak(delay=_delay(msg))
            return
        if any(k.lower() == "x-daprremindercancel" and v.lower() == "true" for k, v in reply.headers.items()):
            await self._finish(sequence, definition)  # the app asked to stop it (newer daprd honours this)
            await msg.ack()
            return
        if not reply.ok:
            retry = definition.get("retry") or {}
            limit, pause = retry.get("attempts", _APP_ATTEMPTS), retry.get("interval")
            # The app's own failures, counted in the definition: the redeliveries spent waiting for
            # a host (a restart, a rebalance) do not use up the fire's retries.
            failures = int(definition.get("failures", 0)) + 1
            if limit is None or failures < limit:
                if await self._replace(sequence, {**definition, "failures": failures}):
                    await msg.nak(delay=_delay(msg) if pause is None else pause)
                else:
                    await msg.ack()  # re-created or deleted meanwhile: that version owns the schedule
                return
            log.warning("reminder fire failed in the app; given up", extra={"subject": msg.subject})
        await self._advance(sequence, definition, int(fire["n"]), fire.get("at"), now)
        await msg.ack()

    async def _advance(
        self, sequence: int, definition: dict[str, Any], number: int, at: str | None, now: dt.datetime
    ) -> None:
        interval, repetitions = definition.get("interval"), definition.get("repetitions")
        if interval is None or (repetitions is not None and number >= repetitions):
            await self._finish(sequence, definition)
            return
        definition = {k: v for k, v in definition.items() if k != "failures"} | {"next": number + 1}
        if not await self._replace(sequence, definition):
            return  # re-created or deleted meanwhile: that version owns the schedule now
        # Keep to the grid of due times (no drift), but never schedule a backlog of missed fires.
        previous = dt.datetime.fromisoformat(at.replace("Z", "+00:00")) if at else now
        following = previous + dt.timedelta(seconds=float(interval))
        await self._schedule(definition, number + 1, max(following, now))

    async def _replace(self, sequence: int, definition: dict[str, Any]) -> bool:
        """Write `definition` over exactly version `sequence`; False when another version won."""
        subject = self._subject("def", definition["actorType"], definition["actorId"], definition["name"])
        try:
            await publish(self.nc, subject, _json(definition), {EXPECTED_LAST_SUBJECT_SEQUENCE: str(sequence)})
        except JetStreamRejected as exc:
            if exc.err_code in WRONG_LAST_SEQUENCE:
                return False
            raise
        return True

    async def _finish(self, sequence: int, definition: dict[str, Any]) -> None:
        """The reminder fired its last time: delete its definition (exactly this version)."""
        request = json.dumps({"seq": sequence, "no_erase": True}).encode()
        await self.nc.request(f"$JS.API.STREAM.MSG.DELETE.{self.stream}", request, timeout=5)

    # -- reads ------------------------------------------------------------------------------------

    def _def_subject_of(self, rest: str) -> str:
        return f"{self.base}.def.{rest}"

    async def _definition(self, actor_type: str, actor_id: str, name: str) -> tuple[int, dict[str, Any]] | None:
        return await self._definition_at(self._subject("def", actor_type, actor_id, name))

    async def _definition_at(self, subject: str) -> tuple[int, dict[str, Any]] | None:
        try:
            # The sequence is compared and set: on replicas it must be the leader's latest.
            stored = await last_by_subject(self.nc, self.stream, subject, leader=self.replicas > 1)
        except JetStreamRejected as exc:
            raise NatriumError(Codes.ACTOR_REMINDER_GET, f"error getting actor reminder: {exc.description}") from None
        return None if stored is None else (stored.seq, json.loads(stored.data))

    async def _purge(self, subject: str) -> None:
        request = json.dumps({"filter": subject}).encode()
        reply = await self.nc.request(f"$JS.API.STREAM.PURGE.{self.stream}", request, timeout=5)
        error = json.loads(reply.data or b"{}").get("error")
        if error:
            raise NatriumError(
                Codes.ACTOR_REMINDER_DELETE, f"error deleting actor reminder: {error.get('description')}"
            )


def _retry_policy(request: ReminderRequest) -> dict[str, Any] | None:
    """Dapr's failurePolicy as deliveries of one fire: `attempts` (None: no end) and `interval`."""
    policy = request.failure_policy
    if policy is None:
        return None
    if policy.constant is not None:
        try:
            interval = parse_duration(policy.constant.interval)
        except ValueError as exc:
            raise NatriumError(Codes.ACTOR_REMINDER_CREATE, f"error creating actor reminder: {exc}") from None
        retries = policy.constant.max_retries
        return {"attempts": None if retries is None else retries + 1, "interval": interval}
    return {"attempts": 1, "interval": None}  # drop: one try, then on to the next fire


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _deliveries(msg: Msg) -> int:
    try:
        return int(msg.metadata.num_delivered)
    except Exception:
        return 1


def _delay(msg: Msg) -> float:
    return min(_RETRY_CAP, 0.25 * 2 ** min(_deliveries(msg), 6))
