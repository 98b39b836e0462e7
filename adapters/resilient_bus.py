"""The gateway's bus client: block requests under the component's `Resiliency` outbound policy."""

from __future__ import annotations

from typing import Any, TypeVar, overload

from nats.aio.client import Client
from pydantic import BaseModel

from adapters.resiliency import Resiliency, retriable_block_error
from kernel.client import BusClient
from kernel.subjects import Subjects

__all__ = ["ResilientBusClient"]

Reply = TypeVar("Reply", bound=BaseModel)


class ResilientBusClient(BusClient):
    """A `BusClient` that looks up the component of each block subject in `resiliency`: its
    timeout bounds each attempt, its retries repeat what may pass, its breaker opens on failures."""

    def __init__(self, nc: Client, subjects: Subjects, resiliency: Resiliency, *, timeout: float = 5.0) -> None:
        super().__init__(nc, timeout=timeout)
        self.subjects = subjects
        self.resiliency = resiliency

    @overload
    async def request(
        self, subject: str, body: BaseModel | dict[str, Any], reply_model: type[Reply], *, timeout: float | None = None
    ) -> Reply: ...

    @overload
    async def request(
        self, subject: str, body: BaseModel | dict[str, Any], reply_model: None = None, *, timeout: float | None = None
    ) -> Any: ...

    async def request(
        self,
        subject: str,
        body: BaseModel | dict[str, Any],
        reply_model: type[Reply] | None = None,
        *,
        timeout: float | None = None,
    ) -> Reply | Any:
        policies = self.resiliency.components
        policy = policies.get(self.subjects.component_of(subject)) if policies else None
        if policy is None:
            return await super().request(subject, body, reply_model, timeout=timeout)

        async def attempt(limit: float | None) -> Any:
            return await super(ResilientBusClient, self).request(subject, body, reply_model, timeout=limit or timeout)

        return await policy.call(attempt, lambda _reply: False, retriable_block_error)
