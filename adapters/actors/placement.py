"""Placement of actors on hosts, kept in one KV bucket with per-key TTL; no placement service.

Keys (all under `$KV.<bucket>.`):

- `hosts.<host>` -> `{"inc", "types", "subject"}`: a host's lease. Written with a per-message TTL
  and renewed with compare-and-set on its own last revision. `inc` is a fresh nonce per lease:
  a host whose lease lapsed comes back as a *new* incarnation, so nothing it held before counts.
- `act.<type>.<id>` -> `{"host", "inc"}`: the activation record. A host serves an actor only
  after it wrote this record itself, with compare-and-set:
  * create (expected last subject sequence = what the subject holds now, 0 or a marker), or
  * take over a record whose lease `(host, inc)` is gone (expected sequence = the record's).
  Exactly one contender's write lands (the server checks the sequence), so two hosts never both
  believe they own an id. Released by deleting exactly the record's sequence.

Why the lease is safe: the server counts the TTL from the moment it stored the renewal, which is
after the host sent it; the host stops serving `fence_margin` before `sent + ttl`. So by the time
the key is gone (the only moment another host may take over), the old host stopped serving
already and every turn it still ran was cancelled. It never serves those records again: its next
lease has a new `inc`, and for the new incarnation the old records are foreign ones to claim with
compare-and-set like anyone else.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import api

from kernel.errors import Codes, NatriumError
from kernel.jetstream import (
    EXPECTED_LAST_SUBJECT_SEQUENCE,
    KV_OPERATION,
    MSG_TTL,
    WRONG_LAST_SEQUENCE,
    JetStreamRejected,
    adopt_stream,
    ensure_stream,
    last_by_subject,
    publish,
)
from kernel.subjects import Subjects, decode_token, encode_token

__all__ = [
    "ACTORS_REPLICAS_ENV",
    "Claim",
    "HostDirectory",
    "HostLease",
    "Placement",
    "actor_replicas",
    "actor_streams",
    "host_subject",
    "placement_bucket",
    "reminders_stream",
    "rendezvous",
    "root_token",
    "state_bucket",
]

log = logging.getLogger("natrium.actors.placement")

_GONE_HEADERS = ("Nats-Marker-Reason",)
ACTORS_REPLICAS_ENV = "NATRIUM_ACTORS_REPLICAS"


def root_token(subjects: Subjects) -> str:
    """The subject root as one bucket/stream-name-safe token."""
    return subjects.root.replace(".", "_")


def placement_bucket(subjects: Subjects) -> str:
    return f"actors_{root_token(subjects)}_placement"


def state_bucket(subjects: Subjects) -> str:
    return f"actors_{root_token(subjects)}_state"


def reminders_stream(subjects: Subjects) -> str:
    return f"ACTORREMINDERS_{root_token(subjects)}"


def actor_streams(subjects: Subjects) -> tuple[str, ...]:
    """Every stream the actors of one subject root use (for `natrium status`)."""
    return (f"KV_{placement_bucket(subjects)}", f"KV_{state_bucket(subjects)}", reminders_stream(subjects))


def host_subject(subjects: Subjects, host_id: str) -> str:
    """Where a host takes calls. Outside `<root>.actors.*` so no actor type name can collide."""
    return f"{subjects.root}.actorhost.{encode_token(host_id)}"


def rendezvous(actor_type: str, actor_id: str, hosts: list[str]) -> str:
    """Highest-random-weight choice: stable, and only ids of a leaving/joining host move."""
    best, best_score = hosts[0], b""
    for host in hosts:
        score = hashlib.blake2b(f"{host}\x00{actor_type}\x00{actor_id}".encode(), digest_size=8).digest()
        if score > best_score:
            best, best_score = host, score
    return best


@dataclass(frozen=True)
class HostLease:
    """A host's identity on the bus for one lease: `inc` changes every time the lease is re-made."""

    host_id: str
    inc: str
    types: tuple[str, ...]
    subject: str

    def record(self) -> bytes:
        return json.dumps({"host": self.host_id, "inc": self.inc}).encode()


@dataclass(frozen=True)
class Claim:
    """Result of a claim: `owned` with the record's `sequence`, or the live `owner` that has it."""

    owned: bool
    sequence: int = 0
    owner: str | None = None


def actor_replicas() -> int:
    """Replicas of the actor buckets and streams (`NATRIUM_ACTORS_REPLICAS`, default 1); every
    process of a deployment should see the same value, the first to start creates them."""
    raw = os.environ.get(ACTORS_REPLICAS_ENV, "1")
    try:
        replicas = int(raw)
    except ValueError:
        replicas = 0
    if not 1 <= replicas <= 5:
        raise NatriumError(Codes.COMPONENT_INVALID, f"{ACTORS_REPLICAS_ENV} must be 1 to 5, got {raw!r}")
    return replicas


@dataclass(frozen=True)
class _Entry:
    sequence: int
    value: dict[str, Any] | None
    """None for a KV delete/purge marker or a TTL marker: the key is gone."""


class Placement:
    """The KV operations of placement; `open()` creates the bucket if needed (every side may)."""

    def __init__(self, nc: Client, subjects: Subjects, replicas: int | None = None) -> None:
        self.nc = nc
        self.subjects = subjects
        self.bucket = placement_bucket(subjects)
        self.stream = f"KV_{self.bucket}"
        self.prefix = f"$KV.{self.bucket}."
        self.replicas = actor_replicas() if replicas is None else replicas
        self._opened = False

    async def open(self, *, owner: bool = False) -> None:
        """Create the bucket; the actors service (`owner`) also brings an existing one up to its
        config, hosts and clients take it as it is (and learn its replica count)."""
        if self._opened:
            return
        config = api.StreamConfig(
            name=self.stream,
            description=f"natrium actor placement {self.subjects.root}",
            subjects=[f"{self.prefix}>"],
            allow_direct=True,
            allow_rollup_hdrs=True,
            deny_delete=False,  # releases delete exactly one record sequence
            discard=api.DiscardPolicy.NEW,
            max_msgs_per_subject=1,
            num_replicas=self.replicas,
            allow_msg_ttl=True,
            # A lapsed lease leaves a marker, so watchers see the host go.
            subject_delete_marker_ttl=60,
            storage=api.StorageType.FILE,
        )
        if owner:
            await ensure_stream(self.nc.jetstream(), config)
        else:
            self.replicas = await adopt_stream(self.nc.jetstream(), config)
        self._opened = True

    @staticmethod
    def actor_key(actor_type: str, actor_id: str) -> str:
        return f"act.{encode_token(actor_type)}.{encode_token(actor_id)}"

    @staticmethod
    def host_key(host_id: str) -> str:
        return f"hosts.{encode_token(host_id)}"

    # -- reads ------------------------------------------------------------------------------------

    async def _read(self, key: str) -> _Entry | None:
        # On a replicated bucket only the leader is sure to have the latest write: a lease
        # decision needs it.
        stored = await last_by_subject(self.nc, self.stream, self.prefix + key, leader=self.replicas > 1)
        return None if stored is None else _entry(stored.seq, stored.headers, stored.data)

    async def owner(self, actor_type: str, actor_id: str) -> tuple[str, str] | None:
        """(host, inc) of the actor's record, None when it has none."""
        entry = await self._read(self.actor_key(actor_type, actor_id))
        if entry is None or entry.value is None:
            return None
        return str(entry.value.get("host")), str(entry.value.get("inc"))

    async def lease_alive(self, host_id: str, inc: str) -> bool:
        entry = await self._read(self.host_key(host_id))
        return entry is not None and entry.value is not None and entry.value.get("inc") == inc

    # -- host leases ------------------------------------------------------------------------------

    async def write_lease(
        self, lease: HostLease, ttl: float, expected: int | None, previous_inc: str | None = None
    ) -> int:
        """Create (`expected` None) or renew (compare-and-set on `expected`) a lease.

        Creating fails while a live lease holds the key, unless it is this host's own lapsed
        incarnation `previous_inc` (the host dropped everything it held under it already).
        """
        key = self.host_key(lease.host_id)
        body = json.dumps(
            {"inc": lease.inc, "types": list(lease.types), "subject": lease.subject, "started": time.time()}
        ).encode()
        headers = {MSG_TTL: f"{max(1, round(ttl))}s"}
        if expected is None:
            current = await self._read(key)
            if current is not None and current.value is not None and current.value.get("inc") != previous_inc:
                raise JetStreamRejected({"code": 409, "description": f"host id {lease.host_id!r} is in use"})
            expected = current.sequence if current else 0
        headers[EXPECTED_LAST_SUBJECT_SEQUENCE] = str(expected)
        ack = await publish(self.nc, self.prefix + key, body, headers)
        return int(ack["seq"])

    async def delete_lease(self, host_id: str, sequence: int) -> None:
        """End a lease now. A KV delete marker, not a message delete: watchers must see the host go.

        Only if the key still holds `sequence` (compare-and-set); the marker expires by itself.
        """
        headers = {KV_OPERATION: "DEL", MSG_TTL: "60s", EXPECTED_LAST_SUBJECT_SEQUENCE: str(sequence)}
        await publish(self.nc, self.prefix + self.host_key(host_id), b"", headers)

    # -- activation records -----------------------------------------------------------------------

    async def claim(self, actor_type: str, actor_id: str, lease: HostLease, attempts: int = 6) -> Claim:
        """Make `lease` the actor's owner unless a live host owns it; see the module docstring."""
        key = self.actor_key(actor_type, actor_id)
        for _ in range(attempts):
            entry = await self._read(key)
            if entry is not None and entry.value is not None:
                host, inc = str(entry.value.get("host")), str(entry.value.get("inc"))
                if host == lease.host_id and inc == lease.inc:
                    return Claim(True, entry.sequence)
                if await self.lease_alive(host, inc):
                    return Claim(False, owner=host)
            expected = entry.sequence if entry else 0
            try:
                ack = await publish(
                    self.nc, self.prefix + key, lease.record(), {EXPECTED_LAST_SUBJECT_SEQUENCE: str(expected)}
                )
            except JetStreamRejected as exc:
                if exc.err_code in WRONG_LAST_SEQUENCE:
                    continue  # another contender wrote first: look at what it wrote
                raise
            return Claim(True, int(ack["seq"]))
        # Kept changing under us: someone is claiming it now; let the caller retry later.
        return Claim(False)

    async def release(self, sequence: int) -> None:
        """Delete exactly this record revision; if it changed hands since, nothing happens."""
        await self._delete_sequence(sequence)

    async def _delete_sequence(self, sequence: int) -> None:
        request = json.dumps({"seq": sequence, "no_erase": True}).encode()
        await self.nc.request(f"$JS.API.STREAM.MSG.DELETE.{self.stream}", request, timeout=5)


def _entry(sequence: int, headers: dict[str, str], data: bytes) -> _Entry:
    if headers.get(KV_OPERATION) in ("DEL", "PURGE") or any(h in headers for h in _GONE_HEADERS) or not data:
        return _Entry(sequence, None)
    try:
        value = json.loads(data)
    except ValueError:
        return _Entry(sequence, None)
    return _Entry(sequence, value if isinstance(value, dict) else None)


@dataclass
class _Host:
    host_id: str
    inc: str
    types: frozenset[str]


@dataclass
class HostDirectory:
    """The live hosts, from a watch on `hosts.>`; used to place new actors and to rebalance.

    The list only steers placement: a stale entry costs a retry (no responders, or "moved"),
    never a second activation, which only the compare-and-set records decide.
    """

    nc: Client
    placement: Placement
    on_change: Callable[[], None] | None = None
    _hosts: dict[str, _Host] = field(default_factory=dict)
    _suspects: dict[str, float] = field(default_factory=dict)
    suspect_for: float = 3.0
    """How long a host that did not answer is left out of placement (a dead one's lease lapses)."""
    _sub: Any = None
    _ready: asyncio.Event = field(default_factory=asyncio.Event)
    _staging: dict[str, _Host] | None = None
    _last_message: float = 0.0
    _last_refresh: float = 0.0
    _watchdog: asyncio.Task[None] | None = None
    _refreshing: asyncio.Lock = field(default_factory=asyncio.Lock)
    stale_after: float = 30.0
    """No lease renewal seen for this long while hosts are listed: the watch is dead; redo it."""

    async def start(self) -> None:
        if self._sub is not None:
            return
        await self._subscribe()
        if self._watchdog is None:
            self._watchdog = asyncio.create_task(self._watch(), name="actor-host-directory")

    async def _subscribe(self) -> None:
        """Watch `hosts.>` from the current values on; swap the list in once they all arrived."""
        await self.placement.open()
        js = self.nc.jetstream()
        self._staging, self._ready = {}, asyncio.Event()
        self._last_refresh = self._last_message = time.monotonic()
        self._sub = await js.subscribe(
            f"{self.placement.prefix}hosts.>",
            ordered_consumer=True,
            deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT,
            cb=self._update,
        )
        # Ready once the current values arrived (the last one says pending 0), or at once if none.
        info = await js.stream_info(self.placement.stream, subjects_filter=f"{self.placement.prefix}hosts.>")
        if not info.state.subjects:
            self._ready.set()
        try:
            await asyncio.wait_for(self._ready.wait(), 5)
        except TimeoutError:
            log.warning("host list not complete after 5s; going on with what arrived")
        staged, self._staging = self._staging or {}, None
        changed = _view(staged) != _view(self._hosts)
        self._hosts = staged
        if changed and self.on_change is not None:
            self.on_change()

    async def refresh(self, min_interval: float = 1.0) -> None:
        """Re-read the host list from scratch (after a reconnect, or when it looks empty)."""
        async with self._refreshing:
            if time.monotonic() - self._last_refresh < min_interval:
                return
            await self._unsubscribe()
            await self._subscribe()

    async def stop(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        await self._unsubscribe()

    async def _unsubscribe(self) -> None:
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except Exception:  # the connection may be gone already
                pass
            self._sub = None

    async def _watch(self) -> None:
        # Live hosts renew every few seconds, so a silent watch with hosts listed has died
        # (e.g. the server restarted and the ephemeral consumer went with it).
        while True:
            await asyncio.sleep(self.stale_after / 3)
            if self._hosts and time.monotonic() - self._last_message > self.stale_after:
                try:
                    await self.refresh()
                except Exception as exc:
                    log.warning("host list refresh failed", extra={"error": repr(exc)})

    async def _update(self, msg: Msg) -> None:
        self._last_message = time.monotonic()
        hosts = self._staging if self._staging is not None else self._hosts
        host_id = decode_token(msg.subject[len(self.placement.prefix) + len("hosts.") :])
        entry = _entry(msg.metadata.sequence.stream, dict(msg.headers or {}), msg.data)
        changed = False
        if entry.value is None:
            changed = hosts.pop(host_id, None) is not None
        else:
            host = _Host(host_id, str(entry.value.get("inc")), frozenset(entry.value.get("types") or ()))
            previous = hosts.get(host_id)
            hosts[host_id] = host
            changed = previous is None or previous.inc != host.inc or previous.types != host.types
            if previous is not None and previous.inc != host.inc:
                self._suspects.pop(host_id, None)
        if msg.metadata.num_pending == 0:
            self._ready.set()
        if changed and hosts is self._hosts and self.on_change is not None:
            self.on_change()

    def hosts_for(self, actor_type: str) -> list[str]:
        now = time.monotonic()
        return sorted(
            h.host_id for h in self._hosts.values() if actor_type in h.types and self._suspects.get(h.host_id, 0) <= now
        )

    def suspect(self, host_id: str) -> None:
        """Stop placing on a host that did not answer, until it renews with a new lease."""
        self._suspects[host_id] = time.monotonic() + self.suspect_for

    def types(self) -> set[str]:
        return {t for h in self._hosts.values() for t in h.types}


def _view(hosts: dict[str, _Host]) -> set[tuple[str, str, frozenset[str]]]:
    return {(h.host_id, h.inc, h.types) for h in hosts.values()}


def new_incarnation() -> str:
    return uuid.uuid4().hex[:12]
