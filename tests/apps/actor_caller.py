"""A separate caller process for the actor tests: N concurrent `incr` calls on one actor.

argv: actor type, actor id, calls, concurrency. Env: NATS_URL, NATRIUM_ROOT. Prints one JSON list
of the replies' `n` values.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

from adapters.sdk import Actor, ActorProxy, Client


async def main(actor_type: str, actor_id: str, calls: int, concurrency: int) -> None:
    client = await Client.connect(os.environ["NATS_URL"])
    slots = asyncio.Semaphore(concurrency)
    proxy: ActorProxy[Actor] = client.actor(actor_type, actor_id)

    async def one() -> int:
        async with slots:
            reply = await proxy.incr(1)
            return int(reply["n"])

    try:
        values = await asyncio.gather(*(one() for _ in range(calls)))
    finally:
        await client.close()
    print(json.dumps(values), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
