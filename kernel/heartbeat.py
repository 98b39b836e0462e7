"""Keep JetStream messages ours while a slow handler works on them.

A message not acked within the consumer's ackWait is redelivered, to this subscriber or another
one, while the first handler may still be running: a slow handler would then run twice or more.
`working_on` sends `+WPI` (in progress) for each message at a fraction of ackWait, which resets
the server's timer, until the block ends.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

from nats.aio.msg import Msg

__all__ = ["heartbeat_interval", "working_on"]


def heartbeat_interval(ack_wait: float) -> float:
    """How often to say "in progress": three times per ackWait leaves room for a lost one."""
    return max(ack_wait / 3, 0.05)


async def _beat(msgs: Sequence[Msg], every: float) -> None:
    while True:
        await asyncio.sleep(every)
        for msg in msgs:
            # A failed beat (a reconnect) only risks a redelivery, which at-least-once allows.
            with contextlib.suppress(Exception):
                await msg.in_progress()


@contextlib.asynccontextmanager
async def working_on(msgs: Sequence[Msg], ack_wait: float) -> AsyncIterator[None]:
    """While the block runs, tell the server every `heartbeat_interval(ack_wait)` that `msgs` are in progress."""
    beat = asyncio.create_task(_beat(msgs, heartbeat_interval(ack_wait)))
    try:
        yield
    finally:
        beat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beat
