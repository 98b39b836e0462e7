"""One reader at a time for an input source that replicas cannot share (`Driver.competing` False).

An MQTT broker, for one, keeps one session per client id: two bindings replicas subscribing with
the binding's `consumerID` would take the session from each other over and over. The replicas
instead hold a lease on the binding's own stream (subject `<root>.bindings.<name>.lease`): a
message written with `Nats-Expected-Last-Subject-Sequence` (so exactly one writer wins) and a
per-message TTL (so a dead holder's lease ends by itself). The holder renews it every third of the
TTL and stops reading as soon as a renewal fails, a margin before the server could let another
replica in; the others try again every half TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from nats.aio.client import Client
from nats.js.errors import NotFoundError

from kernel.jetstream import EXPECTED_LAST_SUBJECT_SEQUENCE, MSG_TTL, JetStreamRejected, publish

__all__ = ["ReaderLease"]

log = logging.getLogger("natrium.bindings")


class ReaderLease:
    """`run(read, stop)` waits for the lease, then runs `read` while it holds it."""

    def __init__(self, nc: Client, stream: str, subject: str, holder: str, ttl: float = 10.0) -> None:
        self.nc = nc
        self.stream = stream
        self.subject = subject
        self.holder = holder
        self.ttl = ttl
        self._sequence = 0

    async def _last_sequence(self) -> int | None:
        """The subject's last stored sequence, 0 when empty; None when a live lease is someone else's."""
        try:
            last = await self.nc.jetstream().get_last_msg(self.stream, self.subject)
        except NotFoundError:
            return 0
        return None if (last.data or b"").decode(errors="replace") != self.holder else int(last.seq or 0)

    async def _write(self, expected: int) -> bool:
        headers = {EXPECTED_LAST_SUBJECT_SEQUENCE: str(expected), MSG_TTL: f"{max(1, round(self.ttl))}s"}
        try:
            ack = await publish(self.nc, self.subject, self.holder.encode(), headers)
        except JetStreamRejected:
            return False  # another replica wrote first
        self._sequence = int(ack["seq"])
        return True

    async def acquire(self, stop: asyncio.Event) -> bool:
        """Wait until this replica holds the lease (True), or `stop` is set (False)."""
        while not stop.is_set():
            try:
                expected = await self._last_sequence()
                if expected is not None and await self._write(expected):
                    return True
            except Exception as exc:  # NATS unreachable: keep trying, never read without the lease
                log.debug("reader lease %s: %r", self.subject, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.ttl / 2)
        return False

    async def run(self, read: Callable[[], Coroutine[Any, Any, None]], stop: asyncio.Event) -> None:
        """Hold the lease while `read` runs; cancel `read` the moment a renewal fails."""
        if not await self.acquire(stop):
            return
        log.info("input binding reader lease taken", extra={"subject": self.subject, "holder": self.holder})
        reader: asyncio.Task[None] = asyncio.create_task(read())
        try:
            while not reader.done():
                renewed_at = time.monotonic()
                done, _ = await asyncio.wait({reader}, timeout=self.ttl / 3)
                if done:
                    break
                # A renewal that cannot land within a third of the TTL ends the reading: the
                # lease may lapse before the next try, and another replica would then read too.
                try:
                    ok = await asyncio.wait_for(self._write(self._sequence), self.ttl / 3)
                except Exception:
                    ok = False
                if not ok or time.monotonic() - renewed_at > 2 * self.ttl / 3:
                    log.warning("input binding reader lease lost; reading stops", extra={"subject": self.subject})
                    break
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
        if reader.done() and not reader.cancelled() and reader.exception() is not None:
            raise reader.exception()  # type: ignore[misc]
