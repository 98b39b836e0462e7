"""A streaming pull consumer: keeps pull requests outstanding and hands each message to a task.

nats-py's `fetch(batch=n)` waits for the whole batch or the timeout once a first message came,
which adds up to the timeout to the latency of a lone message. This loop instead keeps requests
for up to `max_inflight` messages open on the server and starts a handler per message as it
arrives, the way nats.go's `Consume` does. Handlers ack themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable

from nats.aio.client import Client
from nats.aio.msg import Msg

__all__ = ["PullConsumer"]

log = logging.getLogger("natrium.pull")

Handler = Callable[[Msg], Awaitable[None]]


class PullConsumer:
    """Consume a durable pull consumer with at most `max_inflight` messages handled at once."""

    def __init__(
        self,
        nc: Client,
        stream: str,
        consumer: str,
        handler: Handler,
        *,
        max_inflight: int = 64,
        expires: float = 2.0,
    ) -> None:
        if max_inflight < 1:
            raise ValueError("max_inflight must be at least 1")
        self.nc = nc
        self.handler = handler
        self.max_inflight = max_inflight
        self.expires = expires
        self._next = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._inbox = nc.new_inbox()
        self._inflight = 0
        self._outstanding = 0
        self._last_activity = 0.0
        self._tasks: set[asyncio.Task[None]] = set()
        self._sub: object | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._stopped = False

    async def start(self) -> None:
        self._sub = await self.nc.subscribe(self._inbox, cb=self._on_msg)
        self._watchdog = asyncio.create_task(self._watch())
        await self._pull()

    async def stop(self, drain_timeout: float = 5.0, *, release: bool = False) -> None:
        """Stop asking for messages; let handlers in flight finish (unacked ones are redelivered).

        `release`: stay subscribed until the pull requests still open have expired, and give
        back at once what they deliver, instead of leaving it to wait out its ack wait.
        """
        self._stopped = True
        if self._watchdog:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        if release and self._outstanding:
            await asyncio.sleep(self.expires)
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()  # type: ignore[attr-defined]
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=drain_timeout)
            for task in pending:
                task.cancel()

    async def _on_msg(self, msg: Msg) -> None:
        self._last_activity = time.monotonic()
        status = msg.headers.get("Status") if msg.headers else None
        if status:
            if status == "100":
                return  # heartbeat
            # A request ended (expired, or refused): what it still owed will not come.
            pending = msg.headers.get("Nats-Pending-Messages") if msg.headers else None
            owed = int(pending) if pending and pending.isdigit() else self._outstanding
            self._outstanding = max(0, self._outstanding - owed)
            if status == "408":
                await self._pull()
            else:
                # No consumer (yet), no stream, too many waiting: ask again a little later.
                log.debug("pull request refused: %s %s", status, msg.headers)
                self._outstanding = 0
                asyncio.get_running_loop().call_later(1.0, self._pull_soon)
            return
        self._outstanding = max(0, self._outstanding - 1)
        if self._stopped:
            with contextlib.suppress(Exception):
                await msg.nak()  # a request still open when we stopped: let another consumer have it
            return
        self._inflight += 1
        task = asyncio.create_task(self._handle(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, msg: Msg) -> None:
        try:
            await self.handler(msg)
        except Exception:
            log.exception("work item handler failed", extra={"subject": msg.subject})
        finally:
            self._inflight -= 1
            if not self._stopped:
                with contextlib.suppress(Exception):
                    await self._pull()

    def _pull_soon(self) -> None:
        if not self._stopped:
            task = asyncio.create_task(self._pull())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pull(self) -> None:
        if self._stopped or self.nc.is_closed:
            return
        free = self.max_inflight - self._inflight - self._outstanding
        # Ask in chunks, not one message at a time, unless nothing is on order at all.
        if free <= 0 or (self._outstanding and free < max(1, self.max_inflight // 4)):
            return
        self._outstanding += free
        request = {"batch": free, "expires": int(self.expires * 1e9)}
        try:
            await self.nc.publish(self._next, json.dumps(request).encode(), reply=self._inbox)
        except Exception:
            self._outstanding -= free

    async def _watch(self) -> None:
        # A server restart forgets open pull requests without a word: ask again when nothing
        # has come back for longer than a request lives.
        while True:
            await asyncio.sleep(min(1.0, self.expires))
            if time.monotonic() - self._last_activity > self.expires * 1.5:
                self._outstanding = 0
                self._last_activity = time.monotonic()
                with contextlib.suppress(Exception):
                    await self._pull()
