"""`bindings.mqtt3`: publish (`create`) and subscribe on an MQTT 3.1.1 broker with aiomqtt, QoS 1 by default.

Output waits for the broker's PUBACK. Input subscribes with the component's `consumerID` as the
client id and a persistent session (`cleanSession: false`): a message is acknowledged (PUBACK)
only after the event is stored in the binding's stream, so the broker redelivers anything not
stored when the connection comes back. One session per client id means one reader: replicas of
the bindings service take turns under a lease (services/bindings/lease.py, `readerLeaseTTL`).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import ClassVar
from urllib.parse import urlparse

import aiomqtt

from adapters.bindings.base import BindingRequest, BindingResponse, Driver, DriverEnv, Emit, InputEvent, TargetError
from adapters.bindings.base import invalid as invalid_metadata
from kernel.components import Component

__all__ = ["MqttBinding"]

_SCHEMES = {"tcp": 1883, "mqtt": 1883, "ssl": 8883, "tls": 8883, "mqtts": 8883, "tcps": 8883}


class MqttBinding(Driver):
    operations: ClassVar[tuple[str, ...]] = ("create",)
    reads: ClassVar[bool] = True
    # Two replicas with one client id would take the session from each other.
    competing: ClassVar[bool] = False

    def __init__(self, component: Component, env: DriverEnv) -> None:
        super().__init__(component, env)
        url = urlparse(self.required("url"))
        if url.scheme not in _SCHEMES or not url.hostname:
            raise invalid_metadata(component, f"metadata url must be tcp://host:port (or ssl://), got {url.geturl()!r}")
        self.host = url.hostname
        self.port = url.port or _SCHEMES[url.scheme]
        self.tls = url.scheme in ("ssl", "tls", "mqtts", "tcps")
        self.username, self.password = url.username, url.password
        self.topic = self.required("topic")
        self.qos = component.meta_int("qos", 1)
        if self.qos not in (0, 1, 2):
            raise invalid_metadata(component, f"metadata qos must be 0, 1 or 2, got {self.qos}")
        self.retain = component.meta_bool("retain")
        self.clean_session = component.meta_bool("cleanSession", False)
        self.consumer_id = component.meta("consumerID") or f"natrium-{component.name}"
        self.timeout = self.duration("timeout", "10s")
        self._publisher: aiomqtt.Client | None = None
        self._connecting = asyncio.Lock()

    def _client(self, identifier: str, clean_session: bool) -> aiomqtt.Client:
        tls = None
        if self.tls:
            import ssl

            tls = ssl.create_default_context()
        return aiomqtt.Client(
            self.host,
            self.port,
            username=self.username,
            password=self.password,
            identifier=identifier,
            protocol=aiomqtt.ProtocolVersion.V311,
            clean_session=clean_session,
            timeout=self.timeout,
            tls_context=tls,
        )

    async def _connected(self) -> aiomqtt.Client:
        async with self._connecting:
            if self._publisher is None:
                client = self._client(f"{self.consumer_id}-out-{uuid.uuid4().hex[:8]}", True)
                try:
                    await client.__aenter__()
                except aiomqtt.MqttError as exc:
                    raise TargetError(f"mqtt {self.host}:{self.port}: cannot connect: {exc}") from None
                self._publisher = client
            return self._publisher

    async def invoke(self, request: BindingRequest) -> BindingResponse:
        topic = request.meta("topic") or self.topic
        retain_flag = request.meta("retain")
        retain = retain_flag.lower() == "true" if retain_flag else self.retain
        client = await self._connected()
        try:
            await client.publish(topic, request.data, qos=self.qos, retain=retain, timeout=self.timeout)
        except aiomqtt.MqttError as exc:
            await self._drop_publisher()
            raise TargetError(f"mqtt {self.host}:{self.port}: publish to {topic} failed: {exc}") from None
        return BindingResponse()

    async def _drop_publisher(self) -> None:
        client, self._publisher = self._publisher, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.__aexit__(None, None, None)

    async def read(self, emit: Emit) -> None:
        client = self._client(self.consumer_id, self.clean_session)
        # aiomqtt acks on receipt; paho under it can leave the PUBACK to us, sent once stored.
        client._client.manual_ack_set(True)
        try:
            async with client:
                await client.subscribe(self.topic, qos=self.qos, timeout=self.timeout)
                async for message in client.messages:
                    payload = message.payload
                    data = payload if isinstance(payload, bytes) else str(payload or "").encode()
                    metadata = {"topic": message.topic.value}
                    if message.retain:
                        metadata["retained"] = "true"
                    await emit(InputEvent(data, metadata))
                    if message.qos > 0:
                        client._client.ack(message.mid, message.qos)
        except aiomqtt.MqttError as exc:
            raise TargetError(f"mqtt {self.host}:{self.port}: subscription to {self.topic} lost: {exc}") from None

    async def close(self) -> None:
        await self._drop_publisher()
