"""Read every message of one subject after a sequence in one request (batched direct get).

A stream with `allow_direct` answers `{"seq", "next_by_subj", "batch"}` with the messages
themselves, then an end-of-batch status; no consumer is created, so it costs one round trip.
Replies come back on one wildcard inbox per connection, so a read adds no subscription.
"""

from __future__ import annotations

import asyncio
import json
import weakref
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client

__all__ = ["StoredMessage", "read_subject"]

_BATCH = 1000


@dataclass(frozen=True)
class StoredMessage:
    seq: int
    data: bytes
    headers: dict[str, str]


class _Replies:
    """One `<inbox>.*` subscription; each read waits on its own token."""

    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self.prefix = nc.new_inbox()
        self.queues: dict[str, asyncio.Queue[tuple[bytes, dict[str, str]]]] = {}
        self.counter = 0

    async def open(self) -> None:
        await self.nc.subscribe(f"{self.prefix}.*", cb=self._deliver)

    async def _deliver(self, msg: Any) -> None:
        queue = self.queues.get(msg.subject.rsplit(".", 1)[1])
        if queue is not None:
            queue.put_nowait((msg.data, dict(msg.headers or {})))


_MUX: weakref.WeakKeyDictionary[Client, _Replies] = weakref.WeakKeyDictionary()
_OPENING: weakref.WeakKeyDictionary[Client, asyncio.Lock] = weakref.WeakKeyDictionary()


async def _replies(nc: Client) -> _Replies:
    replies = _MUX.get(nc)
    if replies is not None:
        return replies
    lock = _OPENING.setdefault(nc, asyncio.Lock())
    async with lock:
        replies = _MUX.get(nc)
        if replies is None:
            replies = _Replies(nc)
            await replies.open()
            _MUX[nc] = replies
    return replies


async def read_subject(
    nc: Client, stream: str, subject: str, after_seq: int = 0, timeout: float = 5.0
) -> list[StoredMessage]:
    """Messages of `subject` with a sequence above `after_seq`, in order."""
    out: list[StoredMessage] = []
    start = after_seq + 1
    while True:
        batch, more = await _one_batch(nc, stream, subject, start, timeout)
        out.extend(batch)
        if not more or not batch:
            return out
        start = batch[-1].seq + 1


async def _one_batch(
    nc: Client, stream: str, subject: str, start: int, timeout: float
) -> tuple[list[StoredMessage], bool]:
    replies = await _replies(nc)
    replies.counter += 1
    token = str(replies.counter)
    queue: asyncio.Queue[tuple[bytes, dict[str, str]]] = asyncio.Queue()
    replies.queues[token] = queue
    try:
        request = json.dumps({"seq": start, "next_by_subj": subject, "batch": _BATCH}).encode()
        await nc.publish(f"$JS.API.DIRECT.GET.{stream}", request, reply=f"{replies.prefix}.{token}")
        messages: list[StoredMessage] = []
        async with asyncio.timeout(timeout):
            while True:
                data, headers = await queue.get()
                status = headers.get("Status")
                if status == "404":
                    return messages, False
                if status == "204":  # end of batch: more may follow past the batch size
                    pending = headers.get("Nats-Num-Pending", "0")
                    return messages, len(messages) >= _BATCH and pending != "0"
                if status:
                    raise RuntimeError(f"direct get failed: {status} {headers.get('Description', '')}")
                messages.append(StoredMessage(int(headers["Nats-Sequence"]), data, headers))
    finally:
        del replies.queues[token]
