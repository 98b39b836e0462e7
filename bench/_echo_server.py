"""The raw baseline's callee for bench/invoke.py: a nats-py subscriber that answers every request with its body.

    python bench/_echo_server.py NATS_URL SUBJECT

Runs until SIGTERM or SIGINT. No natrium code: this is the floor any request/reply over NATS pays.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import nats
from nats.aio.msg import Msg


async def main(url: str, subject: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    nc = await nats.connect(url, name="natrium-bench-echo")

    async def echo(msg: Msg) -> None:
        await msg.respond(msg.data)

    await nc.subscribe(subject, cb=echo)
    await nc.flush()
    await stop.wait()
    await nc.drain()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
