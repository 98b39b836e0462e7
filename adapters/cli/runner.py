"""Run one async command: signals set a stop event, a NatriumError exits 1 with one line on stderr."""

from __future__ import annotations

import asyncio
import gc
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import click

from kernel import eventloop
from kernel.errors import NatriumError

__all__ = ["run_until_signal"]

T = TypeVar("T")


def run_until_signal(main: Callable[[asyncio.Event], Coroutine[Any, Any, T]]) -> T:
    """Run `main(stop)` and return its result; SIGINT/SIGTERM set `stop` so it can shut down in order."""

    async def runner() -> T:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        return await main(stop)

    # Everything a long-running process needs is imported by now: freezing it keeps full garbage
    # collections from rescanning ~70k import-time objects, which measured ~50 ms pauses and set
    # the p99 of bench/pubsub.py at high concurrency.
    gc.collect()
    gc.freeze()
    try:
        return eventloop.run(runner())
    except NatriumError as exc:
        click.echo(f"error: {exc.message} ({exc.code})", err=True)
        sys.exit(1)
    except KeyboardInterrupt:  # a second Ctrl-C while shutting down
        sys.exit(130)
