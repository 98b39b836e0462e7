"""Input bindings for a gRPC app: the HTTP app's delivery (adapters/appchannel/bindings.py) with
daprd's gRPC questions: `ListInputBindings` instead of the OPTIONS probe, `OnBindingEvent` instead
of the POST. Any error redelivers the event later, as a non-2xx answer does over HTTP.
"""

from __future__ import annotations

import logging
from typing import Any

from dapr.proto.runtime.v1.appcallback_pb2 import BindingEventResponse
from grpc import aio
from nats.aio.client import Client

from adapters.appchannel.binding_reply import BindingWork, carry_out
from adapters.appchannel.bindings import BindingDelivery
from adapters.bindings.inbox import BindingEvent, BindingHandler
from adapters.grpc.app import GrpcApp
from kernel.subjects import Subjects
from schemas.bindings import BindingInfo

__all__ = ["GrpcBindingDelivery"]

log = logging.getLogger("natrium.appchannel.bindings")


class GrpcBindingDelivery(BindingDelivery):
    """Delivers every input binding the gRPC app lists; `start()` then `stop()`."""

    def __init__(
        self, nc: Client, subjects: Subjects, app_id: str, app: GrpcApp, *, post_timeout: float = 60.0
    ) -> None:
        super().__init__(nc, subjects, app_id, app, post_timeout=post_timeout)  # type: ignore[arg-type]
        self.grpc_app = app
        self._listed: set[str] | None = None

    async def _listens(self, info: BindingInfo) -> bool:
        if self._listed is None:
            self._listed = set(await self.grpc_app.input_bindings())
        listens = info.name in self._listed
        if not listens:
            log.info("app %s does not list input binding %s", self.app_id, info.name)
        return listens

    def _deliverer(self, info: BindingInfo) -> BindingHandler:
        async def deliver(event: BindingEvent) -> bool:
            try:
                reply = await self.grpc_app.binding_event(info.name, event.data, event.metadata, self.post_timeout)
            except aio.AioRpcError as exc:
                log.warning(
                    "input binding %s: app %s answered %s; event %d redelivered later",
                    info.name,
                    self.app_id,
                    exc.code().name,
                    event.sequence,
                )
                return False
            return await carry_out(self.bus, self.subjects, self.app_id, info.name, _work(reply))

        return deliver


def _work(reply: BindingEventResponse) -> BindingWork:
    """The work in a gRPC app's answer: values and data are bytes, stored and sent as they are."""
    items = []
    for item in reply.states:
        body: dict[str, Any] = {"key": item.key, "value": item.value, "metadata": dict(item.metadata)}
        if item.HasField("etag"):
            body["etag"] = item.etag.value
        items.append(body)
    parallel = reply.concurrency == BindingEventResponse.PARALLEL
    return BindingWork(store=reply.store_name, items=items, targets=list(reply.to), data=reply.data, parallel=parallel)
