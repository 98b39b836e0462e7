"""Input bindings for an HTTP app: events POSTed to `/{name}` (or the component's `route`).

At start the channel asks the bindings block which input bindings the app may receive. As
daprd does, it asks the app about each with `OPTIONS <route>` (404: the app does not listen;
any other answer: it does), unless the component's `direction` names input. Each event is
POSTed with its bytes as the body and its metadata as headers; only a 2xx answer acks it, any
other answer or no answer redelivers it later (adapters/bindings/inbox.py), so nothing is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiohttp
from nats.aio.client import Client

from adapters.appchannel.binding_reply import carry_out, work_from_json
from adapters.appchannel.http_app import HttpApp
from adapters.bindings.inbox import BindingEvent, BindingHandler, InputSubscription
from kernel.client import BusClient
from kernel.errors import Codes, NatriumError
from kernel.subjects import Subjects
from schemas.bindings import BindingInfo, InputBindingsReply, InputBindingsRequest

__all__ = ["BindingDelivery"]

log = logging.getLogger("natrium.appchannel.bindings")

_NOT_YET = {Codes.NO_RESPONDERS, Codes.TIMEOUT}


class BindingDelivery:
    """Delivers every input binding the app listens to; `start()` then `stop()`."""

    def __init__(
        self, nc: Client, subjects: Subjects, app_id: str, app: HttpApp, *, post_timeout: float = 60.0
    ) -> None:
        self.nc = nc
        self.subjects = subjects
        self.app_id = app_id
        self.app = app
        self.post_timeout = post_timeout
        self.bus = BusClient(nc)
        self.subscriptions: list[InputSubscription] = []
        self.ready = asyncio.Event()
        """Set once every binding the app listens to is being delivered."""
        self._task: asyncio.Task[None] | None = None
        self.gate: asyncio.Event | None = None
        """When set before `start()`: events are pulled only while it is set (the app's health)."""

    async def start(self) -> None:
        self._task = asyncio.create_task(self._connect())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for subscription in self.subscriptions:
            await subscription.stop()

    async def _connect(self) -> None:
        bindings = await self._input_bindings()
        pending = list(bindings)
        pause = 0.5
        while pending:
            for info in list(pending):
                try:
                    if info.declared or await self._listens(info):
                        subscription = InputSubscription(
                            self.nc, info.name, self.app_id, self._deliverer(info), self.subjects, gate=self.gate
                        )
                        await subscription.start()
                        self.subscriptions.append(subscription)
                        log.info("app %s receives input binding %s at %s", self.app_id, info.name, info.route)
                    pending.remove(info)
                except (NatriumError, aiohttp.ClientError, TimeoutError) as exc:
                    log.warning("input binding %s for app %s not ready yet: %s", info.name, self.app_id, exc)
            if pending:
                await asyncio.sleep(pause)
                pause = min(pause * 2, 10.0)
        self.ready.set()

    async def _input_bindings(self) -> list[BindingInfo]:
        """The bindings block's list, waited for while no replica answers (it may start after the app)."""
        bus = BusClient(self.nc)
        subject = self.subjects.block("bindings", "_", "inputs")
        pause = 0.5
        while True:
            try:
                reply = await bus.request(subject, InputBindingsRequest(app_id=self.app_id), InputBindingsReply)
                return reply.bindings
            except NatriumError as exc:
                if exc.code not in _NOT_YET:
                    raise
                log.debug("bindings service not answering yet: %s", exc.message)
            await asyncio.sleep(pause)
            pause = min(pause * 2, 10.0)

    async def _listens(self, info: BindingInfo) -> bool:
        status, _ = await self.app.send("OPTIONS", info.route, None, {}, self.post_timeout)
        if status == 404:
            log.info("app %s does not listen to input binding %s (OPTIONS %s: 404)", self.app_id, info.name, info.route)
            return False
        return True

    def _deliverer(self, info: BindingInfo) -> BindingHandler:
        async def deliver(event: BindingEvent) -> bool:
            headers = {"Content-Type": "application/json", **event.metadata}
            try:
                status, body = await self.app.send("POST", info.route, event.data, headers, self.post_timeout)
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.warning("input binding %s: app %s not reachable: %r", info.name, self.app_id, exc)
                return False
            if not 200 <= status < 300:
                log.warning(
                    "input binding %s: app %s answered %d; event %d redelivered later",
                    info.name,
                    self.app_id,
                    status,
                    event.sequence,
                )
                return False
            return await carry_out(self.bus, self.subjects, self.app_id, info.name, work_from_json(body))

        return deliver
