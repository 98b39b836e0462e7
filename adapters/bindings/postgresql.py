"""`bindings.postgresql`: `exec`, `query` and `close` with asyncpg.

Request metadata `sql` holds the statement (`$1`, `$2`... placeholders) and `params` a JSON array.
`query` answers the rows as a JSON array of arrays; `exec` reports `rows-affected`. Both add
`operation`, `sql`, `start-time`, `end-time` and `duration`, as Dapr's driver does.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from typing import Any, ClassVar

import asyncpg

from adapters.bindings.base import BindingRequest, BindingResponse, Driver, DriverEnv, TargetError
from kernel.components import Component

__all__ = ["PostgresBinding"]


class PostgresBinding(Driver):
    operations: ClassVar[tuple[str, ...]] = ("exec", "query", "close")

    def __init__(self, component: Component, env: DriverEnv) -> None:
        super().__init__(component, env)
        self.dsn = self.required("connectionString", "url")
        self.timeout = self.duration("timeout", "20s")
        self.max_conns = component.meta_int("maxConns", 4)
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()
        self._closed = False

    async def _connections(self) -> asyncpg.Pool:
        async with self._opening:
            if self._pool is None:
                try:
                    self._pool = await asyncpg.create_pool(
                        self.dsn,
                        min_size=0,
                        max_size=self.max_conns,
                        timeout=self.timeout,
                        command_timeout=self.timeout,
                    )
                except (OSError, TimeoutError, asyncpg.PostgresError, ValueError) as exc:
                    raise TargetError(f"unable to connect to the DB: {_describe(exc)}") from None
            return self._pool

    async def invoke(self, request: BindingRequest) -> BindingResponse:
        if request.operation == "close":
            await self.close()
            return BindingResponse()
        if self._closed:
            raise TargetError("component is closed")
        sql = request.meta("sql")
        if not sql:
            raise TargetError("required metadata not set: sql")
        args = _params(request.meta("params"))
        started = dt.datetime.now(dt.UTC)
        metadata = {"operation": request.operation, "sql": sql, "start-time": _rfc3339(started)}
        pool = await self._connections()
        data: bytes | None = None
        try:
            if request.operation == "exec":
                status = await pool.execute(sql, *args, timeout=self.timeout)
                metadata["rows-affected"] = _rows_affected(status)
            else:
                rows = await pool.fetch(sql, *args, timeout=self.timeout)
                data = json.dumps([list(row.values()) for row in rows], default=_jsonable).encode()
        except TimeoutError:
            raise TargetError(f"error executing query: no answer within {self.timeout:g}s") from None
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, ValueError, TypeError) as exc:
            raise TargetError(f"error executing query: {_describe(exc)}") from None
        ended = dt.datetime.now(dt.UTC)
        metadata["end-time"] = _rfc3339(ended)
        metadata["duration"] = f"{(ended - started).total_seconds():g}s"
        return BindingResponse(data, metadata)

    async def close(self) -> None:
        self._closed = True
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()


def _params(raw: str) -> list[Any]:
    if not raw:
        return []
    try:
        parsed = json.loads(raw)
    except ValueError as exc:
        raise TargetError(f"invalid metadata property params: not JSON: {exc}") from None
    if not isinstance(parsed, list):
        raise TargetError("invalid metadata property params: must be a JSON array")
    return parsed


def _rows_affected(status: str) -> str:
    # asyncpg answers the command tag: "INSERT 0 3", "UPDATE 2", "CREATE TABLE".
    last = status.rsplit(" ", 1)[-1]
    return last if last.isdigit() else "0"


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    return str(value)  # Decimal, UUID, intervals, network types...


def _rfc3339(moment: dt.datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
