"""`SubscribeTopicEventsAlpha1`: a pub/sub subscription that lives as long as a bidirectional stream.

What the Python SDK's `DaprClient.subscribe()` uses: the client opens the stream with the pubsub,
topic and dead-letter topic, natrium answers `initial_response` once the subscription is in
place, then each event goes down the stream and waits for the client's `event_processed` with its
id. The events come through the same delivery engine as every other subscriber
(adapters/delivery.py): SUCCESS acks, RETRY redelivers with the component's back-off, DROP
dead-letters. The consumer group is the app id (as daprd's, one per app); the shared `natrium up`
gateway has none, so a client there names its group with the `consumerID` metadata entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from dapr.proto.runtime.v1 import pubsub_pb2
from grpc import aio

from adapters.delivery import Event, Retry, Status, Subscription
from adapters.grpc.app import event_status, topic_event_request
from adapters.grpc.errors import grpc_status
from adapters.grpc.rpc import Rpcs, abort, check_token
from kernel.errors import Codes, NatriumError

__all__ = ["StreamingRpcs"]

log = logging.getLogger("natrium.grpc")


class _Stream:
    """One open stream: events written down it, and the client's answers matched back by id."""

    def __init__(self, context: aio.ServicerContext[Any, Any]) -> None:
        self.context = context
        self.answers: dict[str, asyncio.Future[Status]] = {}
        self._writing = asyncio.Lock()  # grpc.aio allows one write at a time per call
        self.closed = asyncio.Event()

    async def handle(self, event: Event) -> Status:
        if self.closed.is_set():
            raise Retry("the subscriber's stream is closed")
        request = topic_event_request(event)
        answer = self.answers[request.id] = asyncio.get_running_loop().create_future()
        try:
            async with self._writing:
                await self.context.write(pubsub_pb2.SubscribeTopicEventsResponseAlpha1(event_message=request))
            return await answer
        finally:
            self.answers.pop(request.id, None)

    def answered(self, processed: pubsub_pb2.SubscribeTopicEventsRequestProcessedAlpha1) -> None:
        answer = self.answers.get(processed.id)
        if answer is not None and not answer.done():
            answer.set_result(event_status(processed.status.status))

    def close(self) -> None:
        self.closed.set()
        for answer in self.answers.values():
            if not answer.done():
                answer.set_exception(Retry("the subscriber's stream closed before it answered"))


class StreamingRpcs(Rpcs):
    async def SubscribeTopicEventsAlpha1(
        self,
        requests: AsyncIterator[pubsub_pb2.SubscribeTopicEventsRequestAlpha1],
        context: aio.ServicerContext[Any, Any],
    ) -> None:
        await check_token(self.gateway, context)
        first = await anext(requests, None)
        if first is None or not first.HasField("initial_request"):
            error = NatriumError(Codes.MALFORMED_REQUEST, "the stream must start with an initial_request", status=400)
            await abort(context, grpc_status(error))
            return
        initial = first.initial_request
        group = self.gateway.config.app_id or initial.metadata.get("consumerID")
        if not initial.pubsub_name or not initial.topic or not group:
            missing = "pubsub_name" if not initial.pubsub_name else "topic" if not initial.topic else "an app id"
            message = f"streaming subscription needs {missing} (on `natrium up`, metadata consumerID names the group)"
            await abort(context, grpc_status(NatriumError(Codes.MALFORMED_REQUEST, message, status=400)))
            return
        stream = _Stream(context)
        subscription = Subscription(
            self.gateway.nc,
            initial.pubsub_name,
            initial.topic,
            group,
            stream.handle,
            self.gateway.subjects,
            initial.dead_letter_topic or None,
        )
        try:
            await subscription.start()
        except NatriumError as exc:
            await abort(context, grpc_status(exc))
            return
        log.info("streaming subscription", extra={"pubsub": initial.pubsub_name, "topic": initial.topic})
        try:
            initial_response = pubsub_pb2.SubscribeTopicEventsResponseInitialAlpha1()
            await context.write(pubsub_pb2.SubscribeTopicEventsResponseAlpha1(initial_response=initial_response))
            async for message in requests:
                if message.HasField("event_processed"):
                    stream.answered(message.event_processed)
        finally:
            stream.close()
            with contextlib.suppress(Exception):
                await subscription.stop()
