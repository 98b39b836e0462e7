"""Dapr's app health checks for `natrium run`: probe the app, and stop giving it work while it fails.

After `threshold` failed probes in a row the app is unhealthy: its subscriptions and input bindings
stop pulling (their events wait in JetStream, nothing is lost) and it leaves its invocation queue
group, so the app id's healthy replicas take its calls (with none left, callers get Dapr's
no-responders error and their resiliency policy retries). One good probe brings it all back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

__all__ = ["AppHealth", "HealthCheck"]

log = logging.getLogger("natrium.run.health")


@dataclass(frozen=True)
class HealthCheck:
    """`dapr run`'s `--app-health-*` options, with Dapr's defaults."""

    path: str = "/healthz"
    """HTTP apps: the route probed with GET; a 2xx is healthy. gRPC apps use `HealthCheck`."""
    interval: float = 5.0
    timeout: float = 0.5
    threshold: int = 3

    def listing(self) -> dict[str, object]:
        """As daprd's `/v1.0/metadata` shows it under `appConnectionProperties.health`."""
        return {
            "healthCheckPath": self.path,
            "healthProbeInterval": f"{self.interval:g}s",
            "healthProbeTimeout": f"{self.timeout * 1000:g}ms",
            "healthThreshold": self.threshold,
        }


Probe = Callable[[float], Awaitable[bool]]
"""One probe within the timeout given: True when the app says it is healthy."""


class AppHealth:
    """Probes one app every `interval`; `gate` is set while the app is healthy."""

    def __init__(
        self, app_id: str, probe: Probe, check: HealthCheck, on_change: Callable[[bool], Awaitable[None]]
    ) -> None:
        self.app_id = app_id
        self.probe = probe
        self.check = check
        self.on_change = on_change
        self.gate = asyncio.Event()
        self.gate.set()  # the app answered at startup: healthy until probes say otherwise
        self._task: asyncio.Task[None] | None = None

    @property
    def healthy(self) -> bool:
        return self.gate.is_set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        failures = 0
        while True:
            await asyncio.sleep(self.check.interval)
            if await self._probe_once():
                failures = 0
                if not self.healthy:
                    log.info("app is healthy again: work resumes", extra={"app_id": self.app_id})
                    self.gate.set()
                    await self._tell(True)
                continue
            failures += 1
            if self.healthy and failures >= self.check.threshold:
                log.warning(
                    "app failed %d health probes in a row: no new work until it recovers",
                    failures,
                    extra={"app_id": self.app_id},
                )
                self.gate.clear()
                await self._tell(False)

    async def _probe_once(self) -> bool:
        try:
            async with asyncio.timeout(self.check.timeout):
                return await self.probe(self.check.timeout)
        except Exception as exc:  # refused, reset, timed out: all mean unhealthy
            log.debug("health probe failed: %r", exc, extra={"app_id": self.app_id})
            return False

    async def _tell(self, healthy: bool) -> None:
        try:
            await self.on_change(healthy)
        except Exception:  # the next change tries again; the probing must go on
            log.exception("reacting to the app's health failed", extra={"app_id": self.app_id})
