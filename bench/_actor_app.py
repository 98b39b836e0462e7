"""The actor host for bench/actors.py: a bus-native SDK app with one `Bench` actor type.

    python bench/_actor_app.py          (env: NATS_URL, NATRIUM_ROOT, FIRED_SUBJECT)

`ping` answers null; a reminder publishes `{"due": <epoch due>, "at": <epoch fired>}` on
FIRED_SUBJECT so the benchmark can measure the fire lag. Prints "ready" once it hosts.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from adapters.sdk import Actor, App  # noqa: E402


class Bench(Actor):
    async def ping(self) -> None:
        return None

    async def receive_reminder(self, name: str, data: Any, due_time: str, period: str) -> None:
        fired = json.dumps({"due": data["due"], "at": time.time()}).encode()
        await self.runtime.client.nc.publish(os.environ["FIRED_SUBJECT"], fired)


async def main() -> None:
    app = App("bench-actors")
    app.register_actor(Bench)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await app.start(os.environ["NATS_URL"])
    print("ready", flush=True)
    try:
        await stop.wait()
    finally:
        await app.stop()
        if app.client is not None:
            await app.client.close()


if __name__ == "__main__":
    asyncio.run(main())
