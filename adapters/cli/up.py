"""`natrium up`: an embedded nats-server (unless given a URL), every block service, the gateway.

Each block service and the gateway run as child processes of their own, so they use both cores
and fail alone; a child that crashes is restarted, Ctrl-C stops them all in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import click

from kernel.components import load_components
from kernel.connection import ConnectionSettings, connect, require_jetstream_server
from kernel.errors import NatriumError
from kernel.nats_server import EmbeddedNatsServer, port_is_free
from kernel.process import die_with_parent
from services import BLOCKS

__all__ = ["UpConfig", "run_up"]

log = logging.getLogger("natrium.up")
DEFAULT_GRPC_PORT = 50001


@dataclass
class UpConfig:
    nats_url: str | None
    nats_port: int
    http_port: int
    host: str
    components: str | None
    data_dir: Path
    root: str
    log_level: str
    app_id: str | None = None
    api_token: str | None = None
    blocks: list[str] = field(default_factory=lambda: list(BLOCKS))
    grpc_port: int | None = None
    """Dapr's gRPC API: None is the default port (DEFAULT_GRPC_PORT, a free one if taken), 0 off."""
    metrics_port: int = 0
    """The gateway's metrics port; block i (in `blocks` order) gets the i-th port after it. 0: off."""

    def metrics_ports(self) -> dict[str, int]:
        """Child name -> its metrics port; empty when metrics are off."""
        if not self.metrics_port:
            return {}
        names = ["gateway", *(f"service {block}" for block in self.blocks)]
        return {name: self.metrics_port + i for i, name in enumerate(names)}


@dataclass
class Child:
    """One supervised process: restarted with back-off when it dies on its own."""

    name: str
    argv: list[str]
    env: dict[str, str]
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    started_at: float = 0.0

    async def start(self) -> None:
        # Own session: Ctrl-C reaches only `natrium up`, which stops the children in order.
        self.process = await asyncio.create_subprocess_exec(
            *self.argv, env=self.env, start_new_session=True, preexec_fn=die_with_parent
        )
        self.started_at = time.monotonic()

    async def stop(self, timeout: float = 15.0) -> None:
        proc = self.process
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def run_up(config: UpConfig, stop: asyncio.Event) -> None:
    load_components(config.components)  # fail now, with the file name, not in every child
    if not port_is_free(config.http_port, config.host):
        raise NatriumError("ERR_PORT_IN_USE", f"HTTP port {config.http_port} is taken; choose another with --http-port")
    taken = [port for port in config.metrics_ports().values() if not port_is_free(port)]
    if taken:
        raise NatriumError("ERR_PORT_IN_USE", f"metrics port(s) {', '.join(map(str, taken))} taken; see --metrics-port")
    _choose_grpc_port(config)
    server: EmbeddedNatsServer | None = None
    if config.nats_url:
        url = config.nats_url
        await _check_external(url)
    else:
        server = await EmbeddedNatsServer(config.data_dir, port=config.nats_port).start()
        url = server.url
        if server.port != config.nats_port:
            click.echo(f"port {config.nats_port} is taken: the embedded nats-server uses {server.port}", err=True)
    children = _children(config, url)
    try:
        for child in children:
            await child.start()
        await _wait_ready(config, url, children)
        _banner(config, url, server)
        await _supervise(children, stop)
    finally:
        await asyncio.gather(*(child.stop() for child in children))
        if server is not None:
            await server.stop()
        click.echo("natrium stopped", err=True)


def _choose_grpc_port(config: UpConfig) -> None:
    """A port asked for must be free; the default moves to a free one, as the NATS port does."""
    if config.grpc_port is None:
        config.grpc_port = DEFAULT_GRPC_PORT
        if not port_is_free(DEFAULT_GRPC_PORT, config.host):
            config.grpc_port = _free_port(config.host)
            click.echo(f"port {DEFAULT_GRPC_PORT} is taken: the gRPC API uses {config.grpc_port}", err=True)
    elif config.grpc_port and not port_is_free(config.grpc_port, config.host):
        raise NatriumError("ERR_PORT_IN_USE", f"gRPC port {config.grpc_port} is taken; choose another with --grpc-port")


def _free_port(host: str) -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


async def _check_external(url: str) -> None:
    nc = await connect(ConnectionSettings.from_env(url))
    try:
        require_jetstream_server(nc, url)
    finally:
        await nc.close()


def _children(config: UpConfig, url: str) -> list[Child]:
    env = {**os.environ, "NATS_URL": url, "NATRIUM_ROOT": config.root, "NATRIUM_LOG_LEVEL": config.log_level}
    # One metrics port each (--metrics-port and the ones after it), never the same one twice.
    env.pop("NATRIUM_METRICS_PORT", None)
    if config.components:
        env["NATRIUM_COMPONENTS"] = str(config.components)
    base = [sys.executable, "-m", "adapters.cli.main"]
    children = [Child(f"service {block}", [*base, "service", block], env) for block in config.blocks]
    gateway = [*base, "gateway", "--http-port", str(config.http_port), "--host", config.host]
    if config.app_id:
        gateway += ["--app-id", config.app_id]
    gateway += ["--grpc-port", str(config.grpc_port or 0)]
    gateway_env = {**env, **({"DAPR_API_TOKEN": config.api_token} if config.api_token else {})}
    children.append(Child("gateway", gateway, gateway_env))
    for child in children:
        if (port := config.metrics_ports().get(child.name)) is not None:
            child.env = {**child.env, "NATRIUM_METRICS_PORT": str(port)}
    return children


async def _wait_ready(config: UpConfig, url: str, children: list[Child], timeout: float = 30.0) -> None:
    """Every block answers `$SRV.PING` and the gateway accepts connections."""
    nc = await connect(ConnectionSettings.from_env(url))
    deadline = time.monotonic() + timeout
    try:
        pending = set(config.blocks)
        while pending or not await _ports_open(config):
            for child in children:
                if child.process and child.process.returncode is not None:
                    raise NatriumError("ERR_START", f"{child.name} exited with code {child.process.returncode}")
            for block in list(pending):
                with contextlib.suppress(Exception):
                    await nc.request(f"$SRV.PING.natrium-{block}", b"", timeout=0.2)
                    pending.discard(block)
            if time.monotonic() > deadline:
                raise NatriumError("ERR_START", f"not ready after {timeout:g}s: {', '.join(pending) or 'gateway'}")
            await asyncio.sleep(0.1)
    finally:
        await nc.close()


async def _ports_open(config: UpConfig) -> bool:
    """The gateway's HTTP port, and its gRPC port when it serves one."""
    if not await _port_open(config.host, config.http_port):
        return False
    return not config.grpc_port or await _port_open(config.host, config.grpc_port)


async def _port_open(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection(host, port)
    except OSError:
        return False
    writer.close()
    return True


def _banner(config: UpConfig, url: str, server: EmbeddedNatsServer | None) -> None:
    where = f"embedded, data in {config.data_dir}" if server else "external"
    click.echo(
        f"natrium is up\n  HTTP API  http://{config.host}:{config.http_port}\n"
        + (f"  gRPC API  {config.host}:{config.grpc_port}\n" if config.grpc_port else "")
        + f"  NATS      {url} ({where})\n  blocks    {', '.join(config.blocks)}\n"
        + _metrics_line(config)
        + "Ctrl-C stops everything.",
        err=True,
    )


def _metrics_line(config: UpConfig) -> str:
    ports = config.metrics_ports()
    if not ports:
        return ""
    first, last = min(ports.values()), max(ports.values())
    return f"  metrics   http://{config.host}:{first}/metrics (gateway) ... :{last} (one port per block)\n"


async def _supervise(children: list[Child], stop: asyncio.Event) -> None:
    """Restart a child that dies on its own; a gateway shutdown request (exit 0) stops everything."""
    while not stop.is_set():
        waits = {asyncio.create_task(c.process.wait()): c for c in children if c.process}
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({*waits, stopper}, return_when=asyncio.FIRST_COMPLETED)
        for task in (*waits, stopper):
            if task not in done:
                task.cancel()
        if stop.is_set():
            return
        for task in done:
            child = waits.get(task)
            if child is None:
                continue
            code = task.result()
            if code == 0 and child.name == "gateway":
                log.info("gateway asked to shut down; stopping")
                stop.set()
                return
            child.restarts += 1
            backoff = min(10.0, 0.5 * 2 ** min(child.restarts, 5)) if time.monotonic() - child.started_at < 10 else 0.5
            click.echo(f"{child.name} exited with code {code}; restarting in {backoff:g}s", err=True)
            await asyncio.sleep(backoff)
            await child.start()
