"""An actor app written with the official Dapr Python SDK (FastAPI extension), nothing natrium-specific.

`ROLE=host` (default) hosts the actor types `Counter` and `Chain` (reentrant, max stack depth 4);
`ROLE=caller` serves `POST /call/{id}/{method}?type=Counter|Chain` (JSON `{"arg": ...}`) and makes
the call with the SDK's `ActorProxy`, answering `{"result": ...}` or, when the SDK raised,
`{"error", "errorCode", "status"}` with status 502.

Env: APP_PORT (given by the test), DAPR_HTTP_PORT / APP_ID (set by natrium run), DEACTIVATIONS (a
file each `Counter` deactivation appends "<id> <app port>" to).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import uvicorn
from dapr.actor import Actor, ActorId, ActorInterface, ActorProxy, Remindable, actormethod
from dapr.actor.runtime.config import ActorReentrancyConfig, ActorRuntimeConfig, ActorTypeConfig
from dapr.actor.runtime.runtime import ActorRuntime
from dapr.ext.fastapi import DaprActor
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse


class CounterInterface(ActorInterface):
    @actormethod(name="Increment")
    async def increment(self, by: int) -> int: ...

    @actormethod(name="SlowIncrement")
    async def slow_increment(self, by: int) -> int: ...

    @actormethod(name="AddAll")
    async def add_all(self, numbers: list) -> int: ...

    @actormethod(name="Get")
    async def get(self) -> dict: ...

    @actormethod(name="Remind")
    async def remind(self, payload: str) -> None: ...

    @actormethod(name="StartTimer")
    async def start_timer(self) -> None: ...

    @actormethod(name="StopTimer")
    async def stop_timer(self) -> None: ...

    @actormethod(name="Fail")
    async def fail(self) -> None: ...


class Counter(Actor, CounterInterface, Remindable):
    """Counts; records reminders and timer ticks in its own state, so any host can report them."""

    async def _read(self, key: str, default: Any = 0) -> Any:
        found, value = await self._state_manager.try_get_state(key)
        return value if found else default

    async def increment(self, by: int) -> int:
        count = await self._read("count") + by
        await self._state_manager.set_state("count", count)
        return count

    async def add_all(self, numbers: list) -> int:
        # The JS SDK's proxy sends its arguments as one JSON array.
        return await self.increment(sum(numbers))

    async def slow_increment(self, by: int) -> int:
        # Read, wait, write: only one turn at a time per actor keeps this exact.
        count = await self._read("count")
        await asyncio.sleep(0.02)
        await self._state_manager.set_state("count", count + by)
        return count + by

    async def get(self) -> dict:
        return {
            "count": await self._read("count"),
            "reminded": await self._read("reminded"),
            "reminder_payload": await self._read("reminder_payload", None),
            "ticks": await self._read("ticks"),
            "host_port": os.environ.get("APP_PORT"),
        }

    async def remind(self, payload: str) -> None:
        await self.register_reminder("once", payload.encode(), timedelta(seconds=1), None)

    async def start_timer(self) -> None:
        await self.register_timer("beat", self.on_beat, {"step": 1}, timedelta(seconds=0.2), timedelta(seconds=0.3))

    async def stop_timer(self) -> None:
        await self.unregister_timer("beat")

    async def fail(self) -> None:
        raise RuntimeError("failing on purpose")

    async def _on_deactivate(self) -> None:
        # The SDK says no state changes here: the record goes to a file the test reads.
        record = os.environ.get("DEACTIVATIONS")
        if record:
            await asyncio.to_thread(_append, record, f"{self.id.id} {os.environ.get('APP_PORT')}\n")

    async def on_beat(self, state: dict) -> None:
        await self._state_manager.set_state("ticks", await self._read("ticks") + state["step"])

    async def receive_reminder(
        self, name: str, state: bytes, due_time: timedelta, period: timedelta, ttl: timedelta | None = None
    ) -> None:
        await self._state_manager.set_state("reminded", await self._read("reminded") + 1)
        await self._state_manager.set_state("reminder_payload", state.decode())


def _append(path: str, line: str) -> None:
    with open(path, "a") as f:
        f.write(line)


class ChainInterface(ActorInterface):
    @actormethod(name="Reenter")
    async def reenter(self, depth: int) -> int: ...


class Chain(Actor, ChainInterface):
    """Calls itself through an ActorProxy in the middle of a turn: only reentrancy lets that finish."""

    async def reenter(self, depth: int) -> int:
        if depth <= 1:
            return 1
        proxy = ActorProxy.create("Chain", self.id, ChainInterface)
        return await proxy.Reenter(depth - 1) + 1


def host_app() -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await actor.register_actor(Counter)
        await actor.register_actor(Chain)
        yield

    chain = ActorTypeConfig("Chain", reentrancy=ActorReentrancyConfig(enabled=True, maxStackDepth=4))
    config = ActorRuntimeConfig(drain_ongoing_call_timeout=timedelta(seconds=5), actor_type_configs=[chain])
    ActorRuntime.set_actor_config(config)
    app = FastAPI(lifespan=lifespan)
    actor = DaprActor(app)
    return app


def caller_app() -> FastAPI:
    from dapr.clients.exceptions import DaprHttpError

    app = FastAPI()

    @app.post("/call/{actor_id}/{method}")
    async def call(actor_id: str, method: str, request: Request) -> JSONResponse:
        body = await request.json() if await request.body() else {}
        actor_type = request.query_params.get("type", "Counter")
        interface = ChainInterface if actor_type == "Chain" else CounterInterface
        proxy = ActorProxy.create(actor_type, ActorId(actor_id), interface)
        try:
            result = await (getattr(proxy, method)(body["arg"]) if "arg" in body else getattr(proxy, method)())
        except DaprHttpError as exc:
            answer = {"error": exc.message, "errorCode": exc.error_code, "status": exc.status_code}
            return JSONResponse(answer, status_code=502)
        return JSONResponse({"result": result})

    return app


if __name__ == "__main__":
    application = caller_app() if os.environ.get("ROLE") == "caller" else host_app()
    uvicorn.run(application, host="127.0.0.1", port=int(os.environ["APP_PORT"]), log_level="warning")
