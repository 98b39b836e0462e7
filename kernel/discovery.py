"""Find the running services through the NATS service protocol (`$SRV.INFO` scatter-gather)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from nats.aio.client import Client

__all__ = ["discover"]


async def discover(
    nc: Client, verb: str = "INFO", name: str | None = None, window: float = 0.15
) -> list[dict[str, Any]]:
    """Every reply to `$SRV.<verb>[.<name>]` that arrives within `window` seconds.

    There is no count of replicas to wait for, so a short quiet window ends the gathering.
    """
    subject = f"$SRV.{verb}" + (f".{name}" if name else "")
    inbox = nc.new_inbox()
    replies: list[dict[str, Any]] = []
    arrived = asyncio.Event()

    async def collect(msg: Any) -> None:
        try:
            replies.append(json.loads(msg.data))
        except ValueError:
            return
        arrived.set()

    sub = await nc.subscribe(inbox, cb=collect)
    try:
        await nc.publish(subject, b"", reply=inbox)
        await nc.flush()
        await asyncio.sleep(window)
    finally:
        await sub.unsubscribe()
    return replies
