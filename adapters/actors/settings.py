"""The settings an actor host runs with: per-type values from `/dapr/config`, and its lease timing."""

from __future__ import annotations

import os
from dataclasses import dataclass

from kernel.durations import parse_duration, parse_iso_duration
from schemas.actors import ActorConfig

__all__ = ["LeaseSettings", "TypeSettings", "type_settings"]


def seconds(text: str) -> float:
    """A `/dapr/config` duration: Go (`1h`, `30s`) or ISO 8601 (`PT30S`)."""
    raw = text.strip()
    return parse_iso_duration(raw) if raw[:1] in ("P", "p") else parse_duration(raw)


@dataclass(frozen=True)
class TypeSettings:
    """How one actor type runs on this host."""

    idle_timeout: float
    scan_interval: float
    drain_timeout: float
    drain_rebalanced: bool
    reentrancy: bool
    max_stack_depth: int


def type_settings(config: ActorConfig) -> dict[str, TypeSettings]:
    """Every hosted type with its settings; `entitiesConfig` entries override the app-wide values."""
    base = TypeSettings(
        idle_timeout=seconds(config.actor_idle_timeout),
        scan_interval=seconds(config.actor_scan_interval),
        drain_timeout=seconds(config.drain_ongoing_call_timeout),
        drain_rebalanced=config.drain_rebalanced_actors,
        reentrancy=config.reentrancy.enabled,
        max_stack_depth=config.reentrancy.max_stack_depth,
    )
    types = {name: base for name in config.entities}
    for override in config.entities_config:
        reentrancy = override.reentrancy or config.reentrancy
        settings = TypeSettings(
            idle_timeout=seconds(override.actor_idle_timeout) if override.actor_idle_timeout else base.idle_timeout,
            scan_interval=seconds(override.actor_scan_interval) if override.actor_scan_interval else base.scan_interval,
            drain_timeout=(
                seconds(override.drain_ongoing_call_timeout)
                if override.drain_ongoing_call_timeout
                else base.drain_timeout
            ),
            drain_rebalanced=(
                override.drain_rebalanced_actors
                if override.drain_rebalanced_actors is not None
                else base.drain_rebalanced
            ),
            reentrancy=reentrancy.enabled,
            max_stack_depth=reentrancy.max_stack_depth,
        )
        for name in override.entities:
            types[name] = settings
    return types


@dataclass(frozen=True)
class LeaseSettings:
    """A host's lease: the TTL the server enforces and how the host keeps inside it."""

    ttl: float = 10.0
    """Seconds a lease lives without renewal; a dead host's actors move after about this long."""
    renew_every: float = 0.0
    """0 = ttl / 4."""
    fence_margin: float = 0.0
    """The host stops serving this long before its lease could lapse. 0 = ttl / 5."""

    def __post_init__(self) -> None:
        if self.ttl < 1:
            raise ValueError("the actor lease TTL must be at least 1 second (the server counts whole seconds)")
        if not self.renew_every:
            object.__setattr__(self, "renew_every", self.ttl / 4)
        if not self.fence_margin:
            object.__setattr__(self, "fence_margin", self.ttl / 5)
        if self.renew_every + self.fence_margin >= self.ttl:
            raise ValueError("renew_every + fence_margin must be shorter than the lease TTL")

    @classmethod
    def from_env(cls) -> LeaseSettings:
        """`NATRIUM_ACTOR_LEASE_TTL` (seconds or a Go duration) sets the TTL; default 10 s."""
        raw = os.environ.get("NATRIUM_ACTOR_LEASE_TTL")
        return cls(ttl=parse_duration(raw)) if raw else cls()
