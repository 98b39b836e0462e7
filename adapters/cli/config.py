"""`natrium config`: read and write configuration stores over the bus, for operators.

Each command is one request to the configuration service (`natrium up` or
`natrium service configuration` must be running); errors go to stderr with exit code 1.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import click

from adapters.cli.options import nats_url_option, root_option
from adapters.sdk.configuration import delete_configuration, get_configuration, set_configuration
from kernel.client import BusClient
from kernel.connection import ConnectionSettings, connect
from kernel.errors import Codes, NatriumError
from kernel.logs import setup_logging
from kernel.subjects import Subjects

__all__ = ["config"]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])
Call = Callable[[BusClient, Subjects], Awaitable[T]]


def _bus_options(f: F) -> F:
    f = click.option(
        "--timeout", type=float, default=5.0, show_default=True, help="Seconds to wait for the service's reply."
    )(f)
    return root_option(nats_url_option()(f))  # type: ignore[return-value]


def _run(call: Call[T], nats_url: str | None, root: str, timeout: float) -> T:
    """Connect, make one call, disconnect; a NatriumError ends the command with exit code 1."""
    # The `error:` line is what an operator reads; logs only when NATRIUM_LOG_LEVEL asks for them.
    setup_logging("config", os.environ.get("NATRIUM_LOG_LEVEL", "error"))
    try:
        subjects = Subjects(root)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--root") from None

    async def main() -> T:
        nc = await connect(ConnectionSettings.from_env(nats_url, name="natrium-config"))
        try:
            return await call(BusClient(nc, timeout=timeout), subjects)
        finally:
            await nc.close()

    try:
        return asyncio.run(main())
    except NatriumError as exc:
        message = exc.message
        if exc.code == Codes.NO_RESPONDERS:
            message += " (is the configuration service running? natrium up, or natrium service configuration)"
        _fail(f"{message} ({exc.code})")


def _fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def _metadata(pairs: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{pair!r} is not k=v", param_hint="--metadata")
        out[name] = value
    return out


@click.group("config")
def config() -> None:
    """Read and write configuration stores (Dapr's configuration API) over the bus."""


@config.command("set")
@click.argument("store")
@click.argument("key")
@click.argument("value")
@click.option("--metadata", "-m", multiple=True, metavar="K=V", help="Item metadata; repeat for more.")
@_bus_options
def set_command(
    store: str, key: str, value: str, metadata: tuple[str, ...], nats_url: str | None, root: str, timeout: float
) -> None:
    """Set KEY to VALUE in STORE; subscribers see the change. Prints the new version."""
    meta = _metadata(metadata)
    versions = _run(
        lambda bus, subjects: set_configuration(bus, subjects, store, {key: value}, meta), nats_url, root, timeout
    )
    click.echo(f"{key} set, version {versions[key]}")


@config.command("get")
@click.argument("store")
@click.argument("keys", nargs=-1)
@_bus_options
def get_command(store: str, keys: tuple[str, ...], nats_url: str | None, root: str, timeout: float) -> None:
    """Print items of STORE as JSON ({key: {value, version, metadata}}); all items without KEYS.

    A KEY that does not exist is reported on stderr and makes the exit code 1.
    """
    items = _run(lambda bus, subjects: get_configuration(bus, subjects, store, list(keys)), nats_url, root, timeout)
    click.echo(json.dumps({k: v.model_dump() for k, v in items.items()}, indent=2, ensure_ascii=False))
    missing = [key for key in dict.fromkeys(keys) if key not in items]
    if missing:
        _fail(f"not found in configuration store {store}: {', '.join(missing)}")


@config.command("list")
@click.argument("store")
@_bus_options
def list_command(store: str, nats_url: str | None, root: str, timeout: float) -> None:
    """List every key of STORE: key, version and value (as a JSON string), tab separated."""
    items = _run(lambda bus, subjects: get_configuration(bus, subjects, store, []), nats_url, root, timeout)
    for key in sorted(items):
        item = items[key]
        click.echo(f"{key}\t{item.version}\t{json.dumps(item.value, ensure_ascii=False)}")


@config.command("delete")
@click.argument("store")
@click.argument("key")
@_bus_options
def delete_command(store: str, key: str, nats_url: str | None, root: str, timeout: float) -> None:
    """Delete KEY from STORE; subscribers see the delete. A missing KEY is an error."""
    deleted = _run(lambda bus, subjects: delete_configuration(bus, subjects, store, [key]), nats_url, root, timeout)
    if key not in deleted:
        _fail(f"no key {key!r} in configuration store {store}")
    click.echo(f"{key} deleted")
