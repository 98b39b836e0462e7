"""Instance histories as a worker reads them: incrementally, on top of what it saw last time.

Both worker front doors use it (the bus-native `WorkflowRuntime` and the gRPC adapter's
Durable Task work item stream): a step reads only the events appended since the last step.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any

from nats.aio.client import Client

from kernel.directget import read_subject
from schemas.workflow import EventType, WorkflowLayout, expand_event

__all__ = ["HistoryCache"]


class HistoryCache:
    """The last `capacity` instance histories this process read, refreshed by direct gets."""

    def __init__(self, nc: Client, layout: WorkflowLayout, capacity: int = 2048) -> None:
        self.nc = nc
        self.layout = layout
        self.capacity = capacity
        self._histories: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()

    async def read(self, instance_id: str) -> list[dict[str, Any]]:
        """The instance's current execution's events, each with its stream `seq`."""
        cached = self._histories.get(instance_id, [])
        after = cached[-1]["seq"] if cached else 0
        messages = await read_subject(self.nc, self.layout.history_stream, self.layout.history(instance_id), after)
        events = list(cached)
        for message in messages:
            stored = json.loads(message.data)
            stored["seq"] = message.seq
            for event in expand_event(stored):
                if event["type"] == EventType.EXECUTION_STARTED:
                    events = []  # a new execution (continue-as-new, or a reused id) starts over
                events.append(event)
        if events:
            self._histories[instance_id] = events
            self._histories.move_to_end(instance_id)
            while len(self._histories) > self.capacity:
                self._histories.popitem(last=False)
        return events
