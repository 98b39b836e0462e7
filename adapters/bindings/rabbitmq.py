"""`bindings.rabbitmq`: publish (`create`) to and consume from one queue with aio-pika.

The queue is declared `durable` (the default) and messages are published persistent with
publisher confirms, so `create` answers once the broker has taken the message. Input consumes
with manual acks: a message is acked only after the event is stored in the binding's stream,
and put back on the queue (nack, requeue) when it could not be.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, ClassVar

import aio_pika
import aio_pika.abc
import aiormq.exceptions

from adapters.bindings.base import BindingRequest, BindingResponse, Driver, DriverEnv, Emit, InputEvent, TargetError
from adapters.bindings.base import invalid as invalid_metadata
from kernel.components import Component

__all__ = ["RabbitBinding"]

_FAILURES = (aio_pika.exceptions.AMQPError, aiormq.exceptions.AMQPError, OSError, ConnectionError, TimeoutError)


class RabbitBinding(Driver):
    operations: ClassVar[tuple[str, ...]] = ("create",)
    reads: ClassVar[bool] = True

    def __init__(self, component: Component, env: DriverEnv) -> None:
        super().__init__(component, env)
        self.url = self.required("host", "connectionString")
        if not self.url.startswith(("amqp://", "amqps://")):
            raise invalid_metadata(
                component, "metadata host must be an amqp:// URL, e.g. amqp://guest:guest@localhost:5672"
            )
        self.queue_name = self.required("queueName")
        self.durable = component.meta_bool("durable", True)
        self.auto_delete = component.meta_bool("deleteWhenUnused", False)
        self.exclusive = component.meta_bool("exclusive", False)
        self.prefetch = component.meta_int("prefetchCount", 16)
        self.ttl = component.meta_int("ttlInSeconds", 0)
        self.max_priority = component.meta_int("maxPriority", 0)
        self.content_type = component.meta("contentType") or "text/plain"
        self.timeout = self.duration("timeout", "10s")
        self._connection: aio_pika.abc.AbstractConnection | None = None
        self._channel: aio_pika.abc.AbstractChannel | None = None
        self._connecting = asyncio.Lock()

    def _queue_arguments(self) -> dict[str, Any]:
        arguments: dict[str, Any] = {}
        if self.ttl > 0:
            arguments["x-message-ttl"] = self.ttl * 1000
        if self.max_priority > 0:
            arguments["x-max-priority"] = self.max_priority
        return arguments

    async def _open(self) -> tuple[aio_pika.abc.AbstractConnection, aio_pika.abc.AbstractChannel]:
        connection = await aio_pika.connect(self.url, timeout=self.timeout)
        try:
            channel = await connection.channel(publisher_confirms=True)
            await channel.declare_queue(
                self.queue_name,
                durable=self.durable,
                auto_delete=self.auto_delete,
                exclusive=self.exclusive,
                arguments=self._queue_arguments(),
                timeout=self.timeout,
            )
        except BaseException:
            await connection.close()
            raise
        return connection, channel

    async def _publisher(self) -> aio_pika.abc.AbstractChannel:
        async with self._connecting:
            if self._channel is None or self._channel.is_closed:
                await self._drop()
                try:
                    self._connection, self._channel = await self._open()
                except _FAILURES as exc:
                    raise TargetError(f"rabbitmq: cannot open queue {self.queue_name}: {_describe(exc)}") from None
            return self._channel

    async def invoke(self, request: BindingRequest) -> BindingResponse:
        channel = await self._publisher()
        ttl = request.meta("ttlInSeconds")
        priority = request.meta("priority")
        try:
            message = aio_pika.Message(
                request.data,
                content_type=request.meta("contentType") or self.content_type,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT
                if self.durable
                else aio_pika.DeliveryMode.NOT_PERSISTENT,
                expiration=int(ttl) if ttl else None,
                priority=int(priority) if priority else None,
            )
        except ValueError as exc:
            raise TargetError(f"rabbitmq: bad request metadata: {exc}") from None
        try:
            await channel.default_exchange.publish(message, routing_key=self.queue_name, timeout=self.timeout)
        except _FAILURES as exc:
            await self._drop()
            raise TargetError(f"rabbitmq: publish to {self.queue_name} failed: {_describe(exc)}") from None
        return BindingResponse()

    async def read(self, emit: Emit) -> None:
        try:
            connection, channel = await self._open()
        except _FAILURES as exc:
            raise TargetError(f"rabbitmq: cannot open queue {self.queue_name}: {_describe(exc)}") from None
        try:
            await channel.set_qos(prefetch_count=self.prefetch)
            queue = await channel.get_queue(self.queue_name, ensure=False)
            async with queue.iterator() as messages:
                async for message in messages:
                    metadata = {"queueName": self.queue_name}
                    if message.content_type:
                        metadata["contentType"] = message.content_type
                    try:
                        await emit(InputEvent(message.body, metadata, message.message_id))
                    except Exception:
                        await message.nack(requeue=True)
                        raise
                    await message.ack()
        except _FAILURES as exc:
            raise TargetError(f"rabbitmq: consuming {self.queue_name} failed: {_describe(exc)}") from None
        finally:
            with contextlib.suppress(Exception):
                await connection.close()

    async def _drop(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close()

    async def close(self) -> None:
        await self._drop()


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".rstrip(": ")
