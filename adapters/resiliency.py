"""Dapr `Resiliency` resources: timeouts, retries and circuit breakers for app, component and actor targets.

- apps: service invocation. A call fails, for retries and breakers, when it raises a transport
  error or the callee answers a status outside 200-399; the last answer is still returned as it
  was, as daprd does.
- components (`outbound`): every bus request the gateway makes to a block on that component.
  Only errors that may pass (no replica answered, a timeout, a 5xx from the store) are retried;
  an ETag conflict or a malformed request is the answer, however often it is asked.
- actors: actor method calls through the gateway, by actor type; an app error fails the call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import cel

from kernel.durations import parse_duration
from kernel.errors import Codes, NatriumError

__all__ = ["AppPolicy", "Breaker", "Resiliency", "RetryPolicy", "from_resources", "retriable_block_error"]

log = logging.getLogger("natrium.resiliency")
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    policy: str = "constant"
    duration: float = 5.0
    max_retries: int = -1
    """-1 retries forever, as in Dapr."""
    initial_interval: float = 0.5
    multiplier: float = 1.5
    max_interval: float = 60.0
    http_codes: frozenset[int] = frozenset()
    """`matching.httpStatusCodes`: the failed HTTP answers worth another try; empty means all."""
    grpc_codes: frozenset[int] = frozenset()
    """`matching.gRPCStatusCodes`: the same for a gRPC callee's status codes."""

    def delay(self, attempt: int) -> float:
        """Wait before retry number `attempt` (1-based)."""
        if self.policy == "exponential":
            return min(self.max_interval, self.initial_interval * self.multiplier ** (attempt - 1))
        return self.duration

    def allows(self, attempt: int) -> bool:
        return self.max_retries < 0 or attempt <= self.max_retries

    def retries_answer(self, status: int, grpc_code: int | None = None) -> bool:
        """Whether a failed answer (not an error: those follow `retriable`) is tried again."""
        if grpc_code is not None:
            return not self.grpc_codes or grpc_code in self.grpc_codes
        return not self.http_codes or status in self.http_codes


@dataclass
class Breaker:
    """Dapr's circuit breaker: `trip` is a CEL expression over the failure counters."""

    name: str
    trip: str = "consecutiveFailures > 5"
    timeout: float = 60.0
    max_requests: int = 1
    state: str = "closed"
    opened_at: float = 0.0
    counts: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            ("requests", "totalSuccesses", "totalFailures", "consecutiveSuccesses", "consecutiveFailures"), 0
        )
    )
    _half_open_calls: int = 0

    def __post_init__(self) -> None:
        try:
            self._program = cel.compile(self.trip)
        except ValueError as exc:
            raise NatriumError(
                Codes.COMPONENT_INVALID, f"circuit breaker {self.name}: bad trip {self.trip!r}: {exc}"
            ) from None

    def before(self) -> None:
        """Refuse the call while open; let `max_requests` probe calls through once half-open."""
        if self.state == "open":
            if time.monotonic() - self.opened_at < self.timeout:
                raise NatriumError(
                    Codes.DIRECT_INVOKE, f"circuit breaker {self.name} is open", status=500, retryable=False
                )
            self.state, self._half_open_calls = "half-open", 0
        if self.state == "half-open":
            if self._half_open_calls >= self.max_requests:
                raise NatriumError(Codes.DIRECT_INVOKE, f"circuit breaker {self.name} is half-open", status=500)
            self._half_open_calls += 1

    def record(self, success: bool) -> None:
        c = self.counts
        c["requests"] += 1
        if success:
            c["totalSuccesses"] += 1
            c["consecutiveSuccesses"] += 1
            c["consecutiveFailures"] = 0
            if self.state == "half-open":
                self._reset()
            return
        c["totalFailures"] += 1
        c["consecutiveFailures"] += 1
        c["consecutiveSuccesses"] = 0
        if self.state == "half-open" or self._program.execute(dict(c)) is True:
            log.warning("circuit breaker %s opened", self.name)
            self.state, self.opened_at = "open", time.monotonic()

    def _reset(self) -> None:
        self.state = "closed"
        self.counts = dict.fromkeys(self.counts, 0)


@dataclass
class AppPolicy:
    """What applies to calls to one app: a timeout per attempt, retries and a breaker."""

    timeout: float | None = None
    retry: RetryPolicy | None = None
    breaker: Breaker | None = None

    async def call(
        self,
        attempt_call: Callable[[float | None], Awaitable[T]],
        failed: Callable[[T], bool],
        retriable: Callable[[NatriumError], bool] = lambda error: True,
        answer_retriable: Callable[[T], bool] = lambda result: True,
    ) -> T:
        """Run `attempt_call(timeout)` under the policy; `failed(result)` says whether an answer
        counts as failure, `retriable(error)` whether an error may be tried again and
        `answer_retriable(result)` whether a failed answer may."""
        attempt = 0
        while True:
            if self.breaker:
                self.breaker.before()
            error: NatriumError | None = None
            result: T | None = None
            try:
                result = await attempt_call(self.timeout)
            except NatriumError as exc:
                error = exc
            ok = error is None and not failed(result)  # type: ignore[arg-type]
            if self.breaker:
                self.breaker.record(ok)
            attempt += 1
            if error is not None:
                final = not retriable(error)
            else:
                final = not ok and not answer_retriable(result)  # type: ignore[arg-type]
            if ok or final or self.retry is None or not self.retry.allows(attempt):
                if error is not None:
                    raise error
                return result  # type: ignore[return-value]
            await asyncio.sleep(self.retry.delay(attempt))


@dataclass
class Resiliency:
    apps: dict[str, AppPolicy] = field(default_factory=dict)
    components: dict[str, AppPolicy] = field(default_factory=dict)
    """Outbound policies by component name."""
    actors: dict[str, AppPolicy] = field(default_factory=dict)
    """Policies by actor type."""

    def for_app(self, app_id: str) -> AppPolicy | None:
        return self.apps.get(app_id)

    def for_component(self, name: str) -> AppPolicy | None:
        return self.components.get(name)

    def for_actor(self, actor_type: str) -> AppPolicy | None:
        return self.actors.get(actor_type)


def retriable_block_error(error: NatriumError) -> bool:
    """A block request that may succeed if asked again: nobody answered, no answer in time, or a
    failure of the store itself (5xx), but never an answer about the request (4xx, ETags)."""
    return error.retryable or error.status >= 500


def from_resources(resources: list[dict[str, Any]], app_id: str | None = None) -> Resiliency:
    """Build the policies of every `Resiliency` resource scoped to `app_id` (all when unscoped)."""
    result = Resiliency()
    for doc in resources:
        if doc.get("kind") != "Resiliency":
            continue
        scopes = doc.get("scopes") or []
        if scopes and app_id not in scopes:
            continue
        name = (doc.get("metadata") or {}).get("name", "")
        spec = doc.get("spec") or {}
        policies = spec.get("policies") or {}
        try:
            timeouts = {k: parse_duration(v) for k, v in (policies.get("timeouts") or {}).items()}
            retries = {k: _retry(v) for k, v in (policies.get("retries") or {}).items()}
        except (ValueError, TypeError, AttributeError) as exc:
            raise NatriumError(Codes.COMPONENT_INVALID, f"Resiliency {name!r}: {exc}") from None
        breakers_spec = policies.get("circuitBreakers") or {}
        targets = spec.get("targets") or {}
        named = _Named(name, timeouts, retries, breakers_spec)
        for target_app, target in (targets.get("apps") or {}).items():
            result.apps[str(target_app)] = named.policy(target or {}, str(target_app))
        for component, target in (targets.get("components") or {}).items():
            outbound = (target or {}).get("outbound")
            if outbound:
                result.components[str(component)] = named.policy(outbound, f"component/{component}")
        for actor_type, target in (targets.get("actors") or {}).items():
            result.actors[str(actor_type)] = named.policy(target or {}, f"actor/{actor_type}")
    return result


@dataclass
class _Named:
    """The named policies of one Resiliency resource, resolved for each target."""

    resource: str
    timeouts: dict[str, float]
    retries: dict[str, RetryPolicy]
    breakers: dict[str, Any]

    def policy(self, target: dict[str, Any], label: str) -> AppPolicy:
        return AppPolicy(
            timeout=_named(self.timeouts, target.get("timeout"), self.resource, "timeout"),
            retry=_named(self.retries, target.get("retry"), self.resource, "retry"),
            breaker=_breaker(self.breakers, target.get("circuitBreaker"), self.resource, label),
        )


def _retry(spec: dict[str, Any]) -> RetryPolicy:
    return RetryPolicy(
        policy=str(spec.get("policy", "constant")),
        duration=parse_duration(spec.get("duration", "5s")),
        max_retries=int(spec.get("maxRetries", -1)),
        initial_interval=parse_duration(spec.get("initialInterval", "500ms")),
        multiplier=float(spec.get("multiplier", 1.5)),
        max_interval=parse_duration(spec.get("maxInterval", "60s")),
        http_codes=_codes((spec.get("matching") or {}).get("httpStatusCodes"), 100, 599, "httpStatusCodes"),
        grpc_codes=_codes((spec.get("matching") or {}).get("gRPCStatusCodes"), 0, 16, "gRPCStatusCodes"),
    )


def _codes(text: Any, low: int, high: int, field: str) -> frozenset[int]:
    """Dapr's code list: "429,500-599" -> those codes; empty or unset -> none listed (retry all)."""
    codes: set[int] = set()
    for part in str(text or "").split(","):
        part = part.strip()
        if not part:
            continue
        first, _, last = part.partition("-")
        try:
            start, end = int(first), int(last or first)
        except ValueError:
            raise ValueError(f"matching.{field}: {part!r} is not a code or a range") from None
        if not low <= start <= end <= high:
            raise ValueError(f"matching.{field}: {part!r} is outside {low}-{high}")
        codes.update(range(start, end + 1))
    return frozenset(codes)


def _named(table: dict[str, Any], ref: str | None, name: str, kind: str) -> Any:
    if ref is None:
        return None
    if ref in table:
        return table[ref]
    if kind == "timeout":
        try:
            return parse_duration(ref)  # Dapr allows an inline duration
        except ValueError:
            pass
    raise NatriumError(Codes.COMPONENT_INVALID, f"Resiliency {name!r}: unknown {kind} policy {ref!r}")


def _breaker(table: dict[str, Any], ref: str | None, name: str, app: str) -> Breaker | None:
    if ref is None:
        return None
    spec = table.get(ref)
    if spec is None:
        raise NatriumError(Codes.COMPONENT_INVALID, f"Resiliency {name!r}: unknown circuitBreaker {ref!r}")
    return Breaker(
        name=f"{ref}/{app}",
        trip=str(spec.get("trip", "consecutiveFailures > 5")),
        timeout=parse_duration(spec.get("timeout", "60s")),
        max_requests=int(spec.get("maxRequests", 1)),
    )
