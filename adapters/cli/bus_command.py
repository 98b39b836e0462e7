"""What the operator commands (`natrium secrets`, `natrium workflow`) share: one bus call, errors on stderr."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import NoReturn, TypeVar

import click

from kernel.client import BusClient
from kernel.connection import ConnectionSettings, connect
from kernel.errors import Codes, NatriumError
from kernel.subjects import Subjects

__all__ = ["fail", "run_on_bus"]

T = TypeVar("T")


def run_on_bus(
    nats_url: str | None,
    root: str,
    timeout: float,
    block: str,
    call: Callable[[BusClient, Subjects], Awaitable[T]],
) -> T:
    """Connect, make one call, disconnect; a NatriumError or a bad root ends the command with exit code 1."""

    async def main() -> T:
        subjects = Subjects(root)
        nc = await connect(ConnectionSettings.from_env(nats_url, name=f"natrium-{block}-cli"))
        try:
            return await call(BusClient(nc, timeout=timeout), subjects)
        finally:
            await nc.close()

    try:
        return asyncio.run(main())
    except NatriumError as exc:
        message = exc.message
        if exc.code == Codes.NO_RESPONDERS:
            message += f" (is the {block} service running, on this --root?)"
        fail(f"{exc.code}: {message}")
    except ValueError as exc:  # a subject root that is not valid
        fail(str(exc))


def fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)
