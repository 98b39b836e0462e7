"""The event loop every natrium process runs on: uvloop where it is installed, else asyncio's.

uvloop's libuv loop measured 25-40% more bus requests per second through the state service on
this 2-core machine (bench/state.py); `NATRIUM_EVENT_LOOP=asyncio` falls back to the standard
loop, to rule the loop out when debugging.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["loop_factory", "run"]

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop constructor, or None for asyncio's default loop."""
    if os.environ.get("NATRIUM_EVENT_LOOP", "uvloop").lower() == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:  # not built for this platform (Windows): the standard loop serves
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` on the chosen loop."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
