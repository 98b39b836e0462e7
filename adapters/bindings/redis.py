"""`bindings.redis`: `create`, `get`, `delete` and `increment` on keys, with redis-py's asyncio client.

Request metadata `key` names the key; `ttlInSeconds` on `create`/`increment` sets its expiry.
`get` of a missing key answers no data, as Dapr's driver does.
"""

from __future__ import annotations

from typing import ClassVar

import redis.asyncio as aioredis
import redis.exceptions

from adapters.bindings.base import BindingRequest, BindingResponse, Driver, DriverEnv, TargetError, invalid
from kernel.components import Component

__all__ = ["RedisBinding"]


class RedisBinding(Driver):
    operations: ClassVar[tuple[str, ...]] = ("create", "get", "delete", "increment")

    def __init__(self, component: Component, env: DriverEnv) -> None:
        super().__init__(component, env)
        host = self.required("redisHost")
        name, _, port = host.rpartition(":") if ":" in host else (host, "", "6379")
        if not port.isdigit():
            raise invalid(component, f"metadata redisHost must be host:port, got {host!r}")
        dial = self.duration("dialTimeout", "5s")
        read = self.duration("readTimeout", "5s")
        self.host = host
        self.client = aioredis.Redis(
            host=name,
            port=int(port),
            db=component.meta_int("redisDB", 0),
            username=component.meta("redisUsername") or None,
            password=component.meta("redisPassword") or None,
            ssl=component.meta_bool("enableTLS"),
            socket_connect_timeout=dial,
            socket_timeout=read,
            max_connections=component.meta_int("poolSize", 64),
        )

    async def invoke(self, request: BindingRequest) -> BindingResponse:
        key = request.meta("key")
        if not key:
            raise TargetError("redis binding: missing key in request metadata")
        ttl = _ttl(request.meta("ttlInSeconds"))
        try:
            if request.operation == "create":
                await self.client.set(key, request.data, ex=ttl)
                return BindingResponse()
            if request.operation == "get":
                value = await self.client.get(key)
                return BindingResponse(value.encode() if isinstance(value, str) else value)
            if request.operation == "delete":
                await self.client.delete(key)
                return BindingResponse()
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.incr(key)
                if ttl:
                    pipe.expire(key, ttl)
                await pipe.execute()
            return BindingResponse()
        except redis.exceptions.RedisError as exc:
            raise TargetError(f"redis binding: {self.host}: {type(exc).__name__}: {exc}") from None

    async def close(self) -> None:
        await self.client.aclose()


def _ttl(raw: str) -> int | None:
    if not raw:
        return None
    try:
        ttl = int(raw)
    except ValueError:
        raise TargetError(f"redis binding: ttlInSeconds must be an integer, got {raw!r}") from None
    return ttl if ttl > 0 else None
