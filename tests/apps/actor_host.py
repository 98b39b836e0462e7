"""A bus-native actor app (the Python SDK's `Actor`), run as its own process by the actor tests.

Env: NATS_URL, NATRIUM_ROOT, NATRIUM_ACTOR_LEASE_TTL, HOST_ID, ACTOR_IDLE (default 60s).
Prints "ready <host id>" once it hosts its actors.
"""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

from adapters.sdk import Actor, App


class Counter(Actor):
    """A deliberately slow read-modify-write: two turns at once would lose increments."""

    async def incr(self, by: int = 1) -> dict[str, Any]:
        n = await self.state.get("n", 0)
        await asyncio.sleep(0.002)
        self.state.set("n", n + by)
        return {"n": n + by, "host": os.environ.get("HOST_ID")}

    async def get(self) -> dict[str, Any]:
        return {"n": await self.state.get("n", 0), "host": os.environ.get("HOST_ID")}

    async def receive_reminder(self, name: str, data: Any, due_time: str, period: str) -> None:
        fired = await self.state.get("fired", [])
        self.state.set("fired", [*fired, {"name": name, "data": data, "host": os.environ.get("HOST_ID")}])


async def main() -> None:
    app = App(f"actors-{os.environ.get('HOST_ID', 'host')}")
    app.register_actor(Counter)
    app.actor_host_id = os.environ.get("HOST_ID")
    app.configure_actors(actorIdleTimeout=os.environ.get("ACTOR_IDLE", "60s"), actorScanInterval="1s")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await app.start(os.environ["NATS_URL"])
    assert app.actor_host is not None
    print(f"ready {app.actor_host.host_id}", flush=True)
    try:
        await stop.wait()
    finally:
        await app.stop()
        if app.client is not None:
            await app.client.close()


if __name__ == "__main__":
    asyncio.run(main())
