"""`natrium status`: the block service replicas and JetStream streams of one subject root.

Replicas are found with the NATS service protocol (`$SRV.INFO` and `$SRV.STATS` scatter-gather),
streams with the JetStream stream list; nothing is asked of the block services themselves, so the
command works against any natrium, also one started by other means than `natrium up`.
Exit codes: 0 all is well, 1 NATS unreachable, 3 an expected block has no replica.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

import click
from nats.aio.client import Client

from adapters.actors.placement import actor_streams
from adapters.cli.options import nats_url_option, root_option
from kernel.connection import ConnectionSettings, connect
from kernel.discovery import discover
from kernel.errors import NatriumError
from kernel.logs import setup_logging
from kernel.subjects import Subjects, encode_token
from schemas.configuration import app_subscriptions_bucket, safe_bucket_token
from services import BLOCKS

__all__ = ["EXIT_MISSING", "Replica", "Status", "StreamStatus", "gather", "status"]

EXIT_MISSING = 3

# Stream descriptions natrium writes (services/*/store.py, services/pubsub/stream.py); the rest
# of the description is the component's name.
_DESCRIPTIONS = (
    ("natrium state store ", "state"),
    ("natrium lock store ", "lock"),
    ("natrium configuration store ", "configuration"),
    ("natrium sealed secret store ", "secrets"),
    ("natrium pubsub ", "pubsub"),
    ("natrium workflow histories of ", "workflow"),
    ("natrium workflow work items of ", "workflow"),
    ("natrium workflow timers of ", "workflow"),
    ("natrium input binding ", "bindings"),
)
# Streams named per root and component by `Subjects.stream` (`<KIND>_<root>_<component>`).
_ROOT_SCOPED = (
    ("WFHISTORY", "workflow"),
    ("WFWORK", "workflow"),
    ("WFTIMER", "workflow"),
    ("KV_WFMETA", "workflow"),
    ("BINDINGS", "bindings"),
)
# Default stream names (`bucket` metadata unset) for streams made without a description.
_DEFAULT_NAMES = (
    ("KV_state-", "state"),
    ("KV_lock-", "lock"),
    ("KV_config-", "configuration"),
    ("OBJ_secrets-", "secrets"),
)


@dataclass
class EndpointStatus:
    name: str
    subject: str
    requests: int = 0
    errors: int = 0
    average_latency_ms: float = 0.0
    last_error: str = ""


@dataclass
class Replica:
    """One running block service replica, from its `$SRV.INFO` and `$SRV.STATS` replies."""

    block: str
    name: str
    version: str
    id: str
    started: str = ""
    process: str = ""
    """`host:pid`, as the replica's log lines name it (their `replica` field)."""
    components: list[dict[str, Any]] = field(default_factory=list)
    endpoints: list[EndpointStatus] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return sum(e.requests for e in self.endpoints)

    @property
    def errors(self) -> int:
        return sum(e.errors for e in self.endpoints)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "requests": self.requests, "errors": self.errors}


@dataclass
class StreamStatus:
    name: str
    kind: str
    """`kv`, `object` or `stream`."""
    block: str | None
    component: str | None
    description: str
    messages: int
    bytes: int
    consumers: int


@dataclass
class Status:
    root: str
    server: dict[str, Any]
    expected: list[str]
    replicas: list[Replica]
    streams: list[StreamStatus]
    streams_error: str | None = None

    @property
    def missing(self) -> list[str]:
        running = {r.block for r in self.replicas}
        return [b for b in self.expected if b not in running]

    def to_json(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "server": self.server,
            "expected": self.expected,
            "missing": self.missing,
            "replicas": [r.to_json() for r in self.replicas],
            "streams": [asdict(s) for s in self.streams],
            "streamsError": self.streams_error,
        }


# -- gathering ------------------------------------------------------------------------------------


async def gather(nc: Client, root: str, expected: list[str], window: float, all_streams: bool = False) -> Status:
    """Everything `natrium status` shows for `root`, read from the bus."""
    infos, stats = await asyncio.gather(discover(nc, "INFO", window=window), discover(nc, "STATS", window=window))
    replicas = _replicas(root, infos, stats)
    streams: list[StreamStatus] = []
    streams_error = None
    try:
        streams = await _streams(nc, root, replicas, all_streams)
    except Exception as exc:  # no JetStream, no permission: the replicas are still worth showing
        streams_error = f"{type(exc).__name__}: {exc}".rstrip(": ")
    info = nc._server_info  # nats-py keeps the server's INFO here and offers no public accessor
    server = {
        "url": nc.connected_url.geturl() if nc.connected_url else "",
        "name": str(info.get("server_name", "")),
        "version": str(info.get("version", "")),
    }
    return Status(root, server, expected, replicas, streams, streams_error)


def _replicas(root: str, infos: list[dict[str, Any]], stats: list[dict[str, Any]]) -> list[Replica]:
    stats_by_id = {s.get("id"): s for s in stats}
    order = list(BLOCKS)
    found: list[Replica] = []
    for info in infos:
        metadata = info.get("metadata") or {}
        if metadata.get("natrium.root") != root or "natrium.block" not in metadata:
            continue
        stat = stats_by_id.get(info.get("id"), {})
        counts = {e.get("name"): e for e in stat.get("endpoints") or []}
        endpoints = []
        for ep in info.get("endpoints") or []:
            count = counts.get(ep.get("name"), {})
            endpoints.append(
                EndpointStatus(
                    name=str(ep.get("name", "")),
                    subject=str(ep.get("subject", "")),
                    requests=int(count.get("num_requests") or 0),
                    errors=int(count.get("num_errors") or 0),
                    average_latency_ms=round(int(count.get("average_processing_time") or 0) / 1e6, 3),
                    last_error=str(count.get("last_error") or ""),
                )
            )
        found.append(
            Replica(
                block=metadata["natrium.block"],
                name=str(info.get("name", "")),
                version=str(info.get("version", "")),
                id=str(info.get("id", "")),
                started=str(stat.get("started", "")),
                process=str(metadata.get("natrium.replica", "")),
                components=_components(metadata.get("natrium.components")),
                endpoints=endpoints,
            )
        )
    found.sort(key=lambda r: (order.index(r.block) if r.block in order else len(order), r.block, r.id))
    return found


def _components(raw: str | None) -> list[dict[str, Any]]:
    try:
        value = json.loads(raw or "[]")
    except ValueError:
        return []
    return [c for c in value if isinstance(c, dict)] if isinstance(value, list) else []


async def _streams(nc: Client, root: str, replicas: list[Replica], all_streams: bool) -> list[StreamStatus]:
    js = nc.jetstream()
    infos: list[Any] = []
    while page := await js.streams_info(offset=len(infos)):  # the server answers 256 at most
        infos.extend(page)
    served = {(r.block, str(c.get("name"))) for r in replicas for c in r.components}
    out = []
    for info in infos:
        name = info.config.name or ""
        description = info.config.description or ""
        owner = _owner(name, description)
        if owner is None:
            continue
        block, component = owner
        if not all_streams and not _belongs(name, block, component, root, served):
            continue
        state = info.state
        out.append(
            StreamStatus(
                name=name,
                kind="kv" if name.startswith("KV_") else "object" if name.startswith("OBJ_") else "stream",
                block=block,
                component=component,
                description=description,
                messages=int(state.messages or 0),
                bytes=int(state.bytes or 0),
                consumers=int(state.consumer_count or 0),
            )
        )
    return sorted(out, key=lambda s: s.name)


def _owner(name: str, description: str) -> tuple[str | None, str | None] | None:
    """(block, component) of a natrium stream, as far as known; None for a stream not natrium's."""
    for prefix, block in _DESCRIPTIONS:
        if description.startswith(prefix):
            return block, description[len(prefix) :]
    if description == "natrium configuration subscriptions" or name.startswith("KV_configsubs-"):
        return "configuration", None
    if name.startswith("PUBSUB_"):
        return "pubsub", None
    if description.startswith("natrium actor "):
        return "actors", None
    for kind, block in _ROOT_SCOPED:
        if name.startswith(kind + "_"):
            return block, None  # root and component are both in the name, but `_` may be in either
    for prefix, block in _DEFAULT_NAMES:
        if name.startswith(prefix):
            return block, None
    if description.startswith("natrium"):
        return None, None
    return None


def _belongs(name: str, block: str | None, component: str | None, root: str, served: set[tuple[str, str]]) -> bool:
    """Whether `root` uses the stream: its root-scoped names, or a component its replicas serve.

    Store buckets are named after the component, not the root (`state-<name>`), so two roots
    serving a component of the same name share its bucket, and both list it.
    """
    if name == f"KV_{app_subscriptions_bucket(root)}" or name.startswith(f"PUBSUB_{encode_token(root)}_"):
        return True
    if any(name.startswith(f"{kind}_{encode_token(root)}_") for kind, _ in _ROOT_SCOPED):
        return True
    if block == "actors":
        return name in actor_streams(Subjects(root))
    if block is None:
        return False
    if component is not None:
        return (block, component) in served
    for prefix, default_block in _DEFAULT_NAMES:
        if default_block == block and name.startswith(prefix):
            return any(b == block and name == prefix + safe_bucket_token(c) for b, c in served)
    return False


# -- rendering ------------------------------------------------------------------------------------


def render_table(status: Status) -> str:
    lines = [
        f"natrium status: root {status.root}, NATS {status.server['url']} (nats-server {status.server['version']})",
        "",
    ]
    by_block: dict[str, list[Replica]] = {}
    for replica in status.replicas:
        by_block.setdefault(replica.block, []).append(replica)
    blocks = [b for b in BLOCKS if b in by_block or b in status.expected]
    blocks += sorted(b for b in by_block if b not in blocks)
    lines.append("BLOCKS")
    if not blocks:
        lines.append("  (none expected, none running)")
    for block in blocks:
        replicas = by_block.get(block, [])
        count = f"{len(replicas)} replica" + ("" if len(replicas) == 1 else "s")
        lines.append(f"  {block}: {count}" if replicas else f"  {block}: NO REPLICA RUNNING")
        for r in replicas:
            components = ", ".join(f"{c.get('name')} ({c.get('type')})" for c in r.components) or "-"
            where = f"  on {r.process}" if r.process else ""
            lines.append(f"    {r.name} {r.version}  id {r.id}{where}  requests {r.requests}  errors {r.errors}")
            lines.append(f"      components: {components}")
            rows = [["endpoint", "requests", "errors", "avg latency"]]
            rows += [[e.name, str(e.requests), str(e.errors), f"{e.average_latency_ms:.3f} ms"] for e in r.endpoints]
            lines += ["      " + row for row in _columns(rows)]
    lines += ["", "STREAMS"]
    if status.streams_error:
        lines.append(f"  cannot list streams: {status.streams_error}")
    elif not status.streams:
        lines.append("  (none)")
    else:
        rows = [["name", "kind", "block", "component", "messages", "bytes", "consumers"]]
        rows += [
            [s.name, s.kind, s.block or "-", s.component or "-", str(s.messages), str(s.bytes), str(s.consumers)]
            for s in status.streams
        ]
        lines += ["  " + row for row in _columns(rows)]
    return "\n".join(lines)


def _columns(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]


# -- command --------------------------------------------------------------------------------------


def _expected(raw: str | None) -> list[str]:
    if raw is None:
        return list(BLOCKS)
    names = [n.strip() for n in raw.split(",") if n.strip()]
    unknown = [n for n in names if n not in BLOCKS]
    if unknown:
        raise click.BadParameter(
            f"unknown block(s) {', '.join(unknown)}; choose from {', '.join(BLOCKS)}", param_hint="--expect"
        )
    return names


@click.command("status")
@nats_url_option()
@root_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of a table.")
@click.option(
    "--expect",
    default=None,
    help="Blocks that must have a replica, comma separated (default: every block; '' for none).",
)
@click.option("--all-streams", is_flag=True, help="List every natrium stream on the server, not only this root's.")
@click.option("--window", type=float, default=0.5, show_default=True, help="Seconds to collect replies from replicas.")
@click.option("--timeout", type=float, default=5.0, show_default=True, help="Seconds to wait for NATS.")
def status(
    nats_url: str | None,
    root: str,
    as_json: bool,
    expect: str | None,
    all_streams: bool,
    window: float,
    timeout: float,
) -> None:
    """Show the block service replicas and JetStream streams of a natrium root; exit 3 if a block is missing."""
    setup_logging("status", os.environ.get("NATRIUM_LOG_LEVEL", "error"))
    try:
        Subjects(root)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--root") from None
    expected = _expected(expect)

    async def main() -> Status:
        nc = await connect(ConnectionSettings.from_env(nats_url, name="natrium-status"), timeout=timeout)
        try:
            return await gather(nc, root, expected, window, all_streams)
        finally:
            await nc.close()

    try:
        result = asyncio.run(main())
    except NatriumError as exc:
        click.echo(f"error: {exc.message} ({exc.code})", err=True)
        sys.exit(1)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
    else:
        click.echo(render_table(result))
    if result.missing:
        missing = ", ".join(result.missing)
        click.echo(f"error: no replica of {missing} on root {root} (start it: natrium service <block>)", err=True)
        sys.exit(EXIT_MISSING)
