"""`natrium secrets ...`: operate secret stores through the secrets service on the bus.

Values are read from stdin (a hidden prompt on a terminal) or a file, never from the command
line, where `ps` and shell history would keep them. Errors go to stderr with exit code 1.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable
from typing import IO, Any, TypeVar, cast

import click

from adapters.cli.bus_command import fail, run_on_bus
from adapters.cli.options import nats_url_option, root_option
from kernel.client import BusClient
from kernel.subjects import Subjects
from schemas.secrets import GetSecretReply, ListSecretsReply

__all__ = ["secrets"]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


def _bus_options(f: F) -> F:
    timeout = click.option(
        "--timeout", type=float, default=5.0, show_default=True, help="Seconds to wait for the secrets service."
    )
    return cast(F, timeout(root_option(nats_url_option()(f))))


@click.group()
def secrets() -> None:
    """Put, read, list and delete secrets through the secrets service (it must be running)."""


@secrets.command("put")
@click.argument("store")
@click.argument("name")
@click.option(
    "--file", "source", type=click.File("rb"), default=None, help="Read the value from this file instead of stdin."
)
@click.option("--json", "as_json", is_flag=True, help='The value is a JSON object of keys: {"user": "u", "pass": "p"}.')
@_bus_options
def put(
    store: str, name: str, source: IO[bytes] | None, as_json: bool, nats_url: str | None, root: str, timeout: float
) -> None:
    """Seal and store secret NAME in STORE.

    The value comes from stdin (a hidden prompt on a terminal) or --file, never from an argument;
    one trailing newline is dropped.
    """
    value = _parse_value(_read_value(source), as_json)
    _run(
        nats_url,
        root,
        timeout,
        lambda bus, subjects: bus.request(subjects.block("secrets", store, "put"), {"name": name, "value": value}),
    )


@secrets.command("get")
@click.argument("store")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the secret as a JSON object of keys, always.")
@_bus_options
def get(store: str, name: str, as_json: bool, nats_url: str | None, root: str, timeout: float) -> None:
    """Print secret NAME of STORE.

    A secret with one key prints its value; one with several prints a JSON object.
    """
    reply: GetSecretReply = _run(
        nats_url,
        root,
        timeout,
        lambda bus, subjects: bus.request(subjects.block("secrets", store, "get"), {"name": name}, GetSecretReply),
    )
    if not as_json and list(reply.data) == [name]:
        click.echo(reply.data[name])
    else:
        click.echo(json.dumps(reply.data, indent=2, ensure_ascii=False))


@secrets.command("list")
@click.argument("store")
@_bus_options
def list_(store: str, nats_url: str | None, root: str, timeout: float) -> None:
    """Print the secret names in STORE (never values)."""
    reply: ListSecretsReply = _run(
        nats_url,
        root,
        timeout,
        lambda bus, subjects: bus.request(subjects.block("secrets", store, "list"), {}, ListSecretsReply),
    )
    for name in reply.names:
        click.echo(name)


@secrets.command("delete")
@click.argument("store")
@click.argument("name")
@_bus_options
def delete(store: str, name: str, nats_url: str | None, root: str, timeout: float) -> None:
    """Delete secret NAME from STORE."""
    _run(
        nats_url,
        root,
        timeout,
        lambda bus, subjects: bus.request(subjects.block("secrets", store, "delete"), {"name": name}),
    )
    click.echo(f"deleted {name} from {store}", err=True)


def _read_value(source: IO[bytes] | None) -> str:
    if source is None and sys.stdin.isatty():
        return str(click.prompt("value", hide_input=True, err=True))
    raw = (source or sys.stdin.buffer).read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        fail("the value must be UTF-8 text (Dapr secrets are strings)")
    # `echo value | natrium secrets put` and editors add one newline that is not part of the value.
    return text[:-2] if text.endswith("\r\n") else text[:-1] if text.endswith("\n") else text


def _parse_value(text: str, as_json: bool) -> str | dict[str, str]:
    if not as_json:
        return text
    try:
        value = json.loads(text)
    except ValueError as exc:
        fail(f"--json: the value is not valid JSON: {exc}")
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        fail('--json: the value must be a JSON object of string values, e.g. {"user": "u", "pass": "p"}')
    return value


def _run(nats_url: str | None, root: str, timeout: float, call: Callable[[BusClient, Subjects], Awaitable[T]]) -> T:
    return run_on_bus(nats_url, root, timeout, "secrets", call)
