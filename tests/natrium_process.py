"""A `natrium` command as a test subprocess: started until it says it is ready, stderr kept, stopped like Ctrl-C."""

from __future__ import annotations

import asyncio
import re
import signal
from typing import Self

from kernel.process import die_with_parent
from tests.conftest import REPO


class NatriumProcess:
    """`args` run from the repository; `start()` returns once a stderr line contains `ready`."""

    def __init__(self, args: list[str], ready: str, env: dict[str, str]) -> None:
        self.args = args
        self.ready = ready
        self.env = env
        self.proc: asyncio.subprocess.Process | None = None
        self.stderr: list[str] = []
        self.ready_line = ""
        self._drain: asyncio.Task[None] | None = None

    async def start(self, timeout: float = 60.0) -> Self:
        self.proc = await asyncio.create_subprocess_exec(
            *self.args,
            cwd=REPO,
            env=self.env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            preexec_fn=die_with_parent,
        )
        assert self.proc.stderr
        while True:
            line = (await asyncio.wait_for(self.proc.stderr.readline(), timeout)).decode()
            if not line:
                raise AssertionError(f"{' '.join(self.args[2:4])} exited:\n" + "".join(self.stderr))
            self.stderr.append(line)
            if self.ready in line:
                self.ready_line = line
                break
        self._drain = asyncio.create_task(self._read_rest())
        return self

    async def _read_rest(self) -> None:
        assert self.proc and self.proc.stderr
        while line := await self.proc.stderr.readline():
            self.stderr.append(line.decode())

    async def stop(self, timeout: float = 30.0) -> int:
        """SIGINT, as Ctrl-C; the exit code."""
        assert self.proc
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        if self._drain is not None:
            await self._drain
        return code


def run_ports(ready_line: str) -> tuple[int, int]:
    """The HTTP and gRPC ports a `natrium run` bound, from its `app ... is up:` line: a run left to
    choose its own ports holds them from the start, where a port picked by the test could be taken."""
    found = re.search(r"Dapr HTTP API on port (\d+), gRPC API on port (\d+)", ready_line)
    assert found, ready_line
    return int(found[1]), int(found[2])
