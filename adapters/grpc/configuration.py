"""Configuration RPCs: get as `/v1.0/configuration/{store}`, subscribe as a server stream.

A subscription asks the configuration service for its watch plan (delivery `watch`: the caller
follows the store itself, as the Python SDK does) and follows it with the SDK's watcher. As daprd
does, the first message carries only the subscription id, then each change arrives as one message
with the key that changed; a delete is an empty item. The subscription lives as long as the stream:
the client closing it, or `UnsubscribeConfiguration` with its id, ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from dapr.proto.common.v1 import common_pb2
from dapr.proto.runtime.v1 import configuration_pb2 as pb
from grpc import aio

from adapters.gateway.errors import transport_as
from adapters.grpc.errors import grpc_status
from adapters.grpc.rpc import Rpcs, abort, check_token, rpc
from adapters.sdk.configuration import ConfigurationSubscription, ConfigurationUpdate
from kernel.errors import Codes, NatriumError
from schemas.configuration import ConfigurationItem, GetReply, SubscribeReply, UnsubscribeReply

__all__ = ["ConfigurationRpcs"]


def _item(item: ConfigurationItem) -> common_pb2.ConfigurationItem:
    return common_pb2.ConfigurationItem(value=item.value, version=item.version, metadata=item.metadata)


class ConfigurationRpcs(Rpcs):
    _streams: dict[str, asyncio.Event]

    async def _configuration(self, store: str, operation: str, body: dict[str, Any], code: str, **kwargs: Any) -> Any:
        gateway = self.gateway
        subject = gateway.subjects.block("configuration", store, operation)
        try:
            return await gateway.bus.request(subject, body, **kwargs)
        except NatriumError as exc:
            raise transport_as(exc, code, Codes.CONFIGURATION_STORE_NOT_CONFIGURED) from None

    @rpc
    async def GetConfiguration(self, request: pb.GetConfigurationRequest, context: Any) -> pb.GetConfigurationResponse:
        body = {"keys": list(request.keys), "metadata": dict(request.metadata)}
        reply: GetReply = await self._configuration(
            request.store_name, "get", body, Codes.CONFIGURATION_GET, reply_model=GetReply
        )
        return pb.GetConfigurationResponse(items={key: _item(item) for key, item in reply.items.items()})

    GetConfigurationAlpha1 = GetConfiguration

    async def SubscribeConfiguration(
        self, request: pb.SubscribeConfigurationRequest, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.SubscribeConfigurationResponse]:
        await check_token(self.gateway, context)
        updates: asyncio.Queue[ConfigurationUpdate] = asyncio.Queue()
        body = {"keys": sorted(request.keys), "metadata": dict(request.metadata), "delivery": "watch"}
        try:
            plan: SubscribeReply = await self._configuration(
                request.store_name, "subscribe", body, Codes.CONFIGURATION_SUBSCRIBE, reply_model=SubscribeReply
            )
            watcher = ConfigurationSubscription(
                self.gateway.nc, self.gateway.subjects, request.store_name, list(request.keys), updates.put_nowait
            )
            await watcher.start(plan)
        except NatriumError as exc:
            await abort(context, grpc_status(exc))
            return
        stop = asyncio.Event()
        self._streams[plan.id] = stop
        try:
            yield pb.SubscribeConfigurationResponse(id=plan.id)
            stopped = asyncio.create_task(stop.wait())
            update: asyncio.Task[ConfigurationUpdate] | None = None
            try:
                while True:
                    update = asyncio.create_task(updates.get())
                    done, _ = await asyncio.wait({update, stopped}, return_when=asyncio.FIRST_COMPLETED)
                    if update not in done:
                        return
                    change = update.result()
                    item = change.item if change.item is not None else ConfigurationItem()
                    yield pb.SubscribeConfigurationResponse(id=plan.id, items={change.key: _item(item)})
            finally:
                stopped.cancel()
                if update is not None:
                    update.cancel()
        finally:
            self._streams.pop(plan.id, None)
            with contextlib.suppress(Exception):
                await watcher.stop()

    SubscribeConfigurationAlpha1 = SubscribeConfiguration

    @rpc
    async def UnsubscribeConfiguration(
        self, request: pb.UnsubscribeConfigurationRequest, context: Any
    ) -> pb.UnsubscribeConfigurationResponse:
        stop = self._streams.pop(request.id, None)
        if stop is not None:
            stop.set()  # the stream ends, and its watch with it
            return pb.UnsubscribeConfigurationResponse(ok=True)
        # Not a stream of this server: perhaps an HTTP subscription of this app, recorded by the service.
        try:
            await self._configuration(
                request.store_name,
                "unsubscribe",
                {"id": request.id},
                Codes.CONFIGURATION_UNSUBSCRIBE,
                reply_model=UnsubscribeReply,
            )
        except NatriumError as exc:
            message = f"failed to unsubscribe to configuration request {request.id}: {exc.message}"
            return pb.UnsubscribeConfigurationResponse(ok=False, message=message)
        return pb.UnsubscribeConfigurationResponse(ok=True)

    UnsubscribeConfigurationAlpha1 = UnsubscribeConfiguration
