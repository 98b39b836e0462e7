"""What an app may answer to an input binding event, as daprd reads it.

An app that accepted an event may answer with more work for the runtime:

    {"storeName": "statestore", "state": [{"key": "k", "value": ...}],   # save these items
     "to": ["queue", "storage"], "data": ..., "concurrency": "parallel"}  # send `data` to these outputs

(over gRPC the same fields of `BindingEventResponse`). daprd saves the state and invokes each
output binding (operation `create`) on the app's behalf; natrium does the same over the bus with
the app's id, so its key prefix applies. Any failure means the event was not fully handled, and
the caller redelivers it: at least once, never lost.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from kernel.client import BusClient
from kernel.errors import NatriumError
from kernel.subjects import Subjects
from schemas.bindings import InvokeBindingReply

__all__ = ["BindingWork", "carry_out", "work_from_json"]

log = logging.getLogger("natrium.appchannel.bindings")


@dataclass
class BindingWork:
    store: str = ""
    items: list[dict[str, Any]] = field(default_factory=list)
    """State items as the state block's `save` takes them."""
    targets: list[str] = field(default_factory=list)
    data: bytes = b""
    """What each output binding in `targets` receives."""
    parallel: bool = False

    def __bool__(self) -> bool:
        return bool((self.store and self.items) or self.targets)


def work_from_json(body: bytes) -> BindingWork | None:
    """The work in an HTTP app's answer; None when the answer is not such an object."""
    try:
        reply = json.loads(body) if body.strip() else None
    except (ValueError, UnicodeDecodeError):
        return None  # any other answer is the app's own business
    if not isinstance(reply, dict):
        return None
    store, items, targets = reply.get("storeName"), reply.get("state"), reply.get("to")
    return BindingWork(
        store=store if isinstance(store, str) else "",
        items=[i for i in items if isinstance(i, dict)] if isinstance(items, list) else [],
        targets=[str(t) for t in targets] if isinstance(targets, list) else [],
        # JSON-encoded, as the gateway and daprd hand `data` to an output binding.
        data=json.dumps(reply.get("data"), separators=(",", ":"), ensure_ascii=False).encode(),
        parallel=str(reply.get("concurrency", "")).lower() == "parallel",
    )


async def carry_out(bus: BusClient, subjects: Subjects, app_id: str, binding: str, work: BindingWork | None) -> bool:
    """Do what the app asked for; False when any part failed (the event is then redelivered)."""
    if not work:
        return True
    try:
        if work.store and work.items:
            await bus.request(subjects.block("state", work.store, "save"), {"items": work.items, "appId": app_id})
        if work.parallel:
            await asyncio.gather(*(_send(bus, subjects, app_id, t, work.data) for t in work.targets))
        else:
            for target in work.targets:
                await _send(bus, subjects, app_id, target, work.data)
    except NatriumError as exc:
        log.warning("input binding %s: app %s asked for work that failed: %s", binding, app_id, exc.message)
        return False
    return True


async def _send(bus: BusClient, subjects: Subjects, app_id: str, target: str, data: bytes) -> None:
    request = {"operation": "create", "data": data, "metadata": {}, "appId": app_id}
    await bus.request(subjects.block("bindings", target, "invoke"), request, InvokeBindingReply)
