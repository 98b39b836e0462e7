"""A bus-native subscriber for crash tests: writes each event id to a file before acking it.

usage: python -m tests.apps.subscriber NATS_URL ROOT PUBSUB TOPIC GROUP OUTFILE
"""

from __future__ import annotations

import asyncio
import os
import sys

from adapters.sdk import Client, Event
from kernel.connection import ConnectionSettings, connect
from kernel.subjects import Subjects


async def main(url: str, root: str, pubsub: str, topic: str, group: str, out: str) -> None:
    client = Client(await connect(ConnectionSettings(url=url)), app_id=group, subjects=Subjects(root))
    with open(out, "a", encoding="utf-8") as sink:

        async def record(event: Event) -> None:
            await asyncio.sleep(0.005)  # a little work, so a kill lands mid-stream
            sink.write(event.id + "\n")
            sink.flush()
            os.fsync(sink.fileno())

        await client.subscribe(pubsub, topic, record, concurrency=8)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:7]))
