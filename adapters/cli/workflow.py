"""`natrium workflow ...`: operate workflow instances through the workflow service on the bus.

Errors go to stderr with exit code 1; `--json` prints what the Dapr HTTP API would answer.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import click

from adapters.cli.bus_command import fail, run_on_bus
from adapters.cli.options import nats_url_option, root_option
from adapters.gateway.workflow import describe
from kernel.client import BusClient
from kernel.subjects import Subjects
from schemas.workflow import HistoryReply, InstanceState, ListReply, RuntimeStatus, StartReply

__all__ = ["workflow"]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")
Call = Callable[[BusClient, Callable[[str], str]], Awaitable[T]]


def _bus_options(f: F) -> F:
    component = click.option(
        "--component", "-c", default="dapr", show_default=True, help="The workflow component (Dapr's default: dapr)."
    )
    timeout = click.option(
        "--timeout", type=float, default=10.0, show_default=True, help="Seconds to wait for the workflow service."
    )
    return cast(F, component(timeout(root_option(nats_url_option()(f)))))


def _json_option(f: F) -> F:
    return cast(F, click.option("--json", "as_json", is_flag=True, help="Print JSON.")(f))


@click.group()
def workflow() -> None:
    """List, inspect, start, signal, terminate and purge workflow instances (the service must run)."""


@workflow.command("list")
@click.option(
    "--status", type=click.Choice([s.value for s in RuntimeStatus], case_sensitive=False), help="Only this status."
)
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@_json_option
@_bus_options
def list_(status: str | None, limit: int, as_json: bool, **bus: Any) -> None:
    """List instances with their status."""
    body: dict[str, Any] = {"limit": limit}
    if status:
        body["status"] = status.upper()
    reply: ListReply = _run(bus, lambda client, subject: client.request(subject("list"), body, ListReply))
    if as_json:
        click.echo(json.dumps([describe(s) for s in reply.instances], indent=2))
        return
    for state in reply.instances:
        click.echo(f"{state.instance_id}\t{state.name}\t{state.runtime_status.value}\t{state.last_updated_at}")


@workflow.command("get")
@click.argument("instance_id")
@click.option("--history", is_flag=True, help="Also print the instance's history events.")
@_json_option
@_bus_options
def get(instance_id: str, history: bool, as_json: bool, **bus: Any) -> None:
    """Print one instance: status, times, input, output, failure."""

    async def call(client: BusClient, subject: Callable[[str], str]) -> tuple[InstanceState, list[dict[str, Any]]]:
        state = await client.request(subject("get"), {"instanceId": instance_id}, InstanceState)
        events: list[dict[str, Any]] = []
        if history:
            events = (await client.request(subject("history"), {"instanceId": instance_id}, HistoryReply)).events
        return state, events

    state, events = _run(bus, call)
    if as_json:
        out = describe(state)
        if history:
            out["history"] = events
        click.echo(json.dumps(out, indent=2))
        return
    for key, value in describe(state).items():
        if key == "properties":
            for name, text in value.items():
                click.echo(f"{name}: {text}")
        else:
            click.echo(f"{key}: {value}")
    for event in events:
        extra = {k: v for k, v in event.items() if k not in ("type", "timestamp", "seq", "eventId")}
        click.echo(f"  {event['seq']:>6} {event['timestamp']} {event['type']} {json.dumps(extra) if extra else ''}")


@workflow.command("start")
@click.argument("name")
@click.option("--id", "instance_id", default=None, help="Instance id; a random one when omitted.")
@click.option("--input", "input_", default=None, help="Input as JSON text.")
@_bus_options
def start(name: str, instance_id: str | None, input_: str | None, **bus: Any) -> None:
    """Start workflow NAME; prints the instance id."""
    if input_ is not None:
        try:
            json.loads(input_)
        except ValueError as exc:
            fail(f"--input is not valid JSON: {exc}")
    body = {k: v for k, v in {"name": name, "instanceId": instance_id, "input": input_}.items() if v is not None}
    reply: StartReply = _run(bus, lambda client, subject: client.request(subject("start"), body, StartReply))
    click.echo(reply.instance_id)


@workflow.command("raise")
@click.argument("instance_id")
@click.argument("event_name")
@click.option("--data", default=None, help="Event payload as JSON text.")
@_bus_options
def raise_(instance_id: str, event_name: str, data: str | None, **bus: Any) -> None:
    """Raise EVENT_NAME on an instance."""
    if data is not None:
        try:
            json.loads(data)
        except ValueError as exc:
            fail(f"--data is not valid JSON: {exc}")
    body = {"instanceId": instance_id, "eventName": event_name}
    if data is not None:
        body["input"] = data
    _run(bus, lambda client, subject: client.request(subject("raise"), body))
    click.echo(f"raised {event_name} on {instance_id}", err=True)


def _simple(operation: str, done: str, help_text: str) -> None:
    @workflow.command(operation, help=help_text)
    @click.argument("instance_id")
    @_bus_options
    def command(instance_id: str, **bus: Any) -> None:
        _run(bus, lambda client, subject: client.request(subject(operation), {"instanceId": instance_id}))
        click.echo(f"{done} {instance_id}", err=True)


_simple("terminate", "terminated", "Terminate an instance (and its child workflows).")
_simple("purge", "purged", "Delete a COMPLETED, FAILED or TERMINATED instance: history, metadata, timers.")
_simple("pause", "paused", "Suspend an instance until it is resumed.")
_simple("resume", "resumed", "Resume a suspended instance.")


def _run(bus: dict[str, Any], call: Call[T]) -> T:
    component = str(bus["component"])

    async def on_component(client: BusClient, subjects: Subjects) -> T:
        return await call(client, lambda operation: subjects.block("workflow", component, operation))

    return run_on_bus(bus.get("nats_url"), str(bus["root"]), float(bus["timeout"]), "workflow", on_component)
