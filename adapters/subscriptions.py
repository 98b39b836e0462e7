"""Dapr subscriptions: declarative `Subscription` resources and `/dapr/subscribe` entries, with routing.

Both shapes share one spec: `pubsubname`, `topic`, `routes: {rules: [{match, path}], default}` (or
v1's single `route`), `deadLetterTopic`, `metadata`, and for resources `scopes`. Rules are CEL over
`event` (the CloudEvent), tried in order; the first match wins, then `default`. An event that
matches nothing is not delivered, as in Dapr: it goes to the dead-letter topic or is logged.
`bulkSubscribe: {enabled, maxMessagesCount, maxAwaitDurationMs}` asks for batched delivery.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import cel

from kernel.errors import Codes, NatriumError

__all__ = ["BulkSubscribe", "Rule", "SubscriptionSpec", "from_resources"]

log = logging.getLogger("natrium.subscriptions")
_API_VERSIONS = {"dapr.io/v1alpha1", "dapr.io/v2alpha1"}


@dataclass(frozen=True)
class Rule:
    match: str
    path: str
    program: Any = field(compare=False, repr=False, default=None)

    @classmethod
    def compiled(cls, match: str, path: str, where: str) -> Rule:
        try:
            return cls(match, path, cel.compile(match))
        except ValueError as exc:
            raise NatriumError(Codes.COMPONENT_INVALID, f"{where}: invalid match {match!r}: {exc}") from None

    def matches(self, envelope: dict[str, Any]) -> bool:
        try:
            return self.program.execute({"event": envelope}) is True
        except Exception as exc:  # e.g. a field the event does not have: no match, as in Dapr
            log.debug("rule %r did not evaluate: %s", self.match, exc)
            return False


@dataclass(frozen=True)
class BulkSubscribe:
    """Batched delivery: at most `max_messages` events per call, waiting at most `max_await_ms` for them."""

    max_messages: int = 100
    max_await_ms: int = 1000

    @classmethod
    def parse(cls, value: Any, where: str) -> BulkSubscribe | None:
        """None unless `enabled` is true; Dapr's defaults (100 events, 1000 ms) for what is left out."""
        if value is None:
            return None
        if not isinstance(value, dict):
            raise NatriumError(Codes.COMPONENT_INVALID, f"{where}: bulkSubscribe must be a mapping")
        if str(value.get("enabled", False)).lower() != "true":
            return None
        numbers = {}
        for key, default in (("maxMessagesCount", cls.max_messages), ("maxAwaitDurationMs", cls.max_await_ms)):
            raw = value.get(key)
            try:
                number = default if raw in (None, "") else int(raw)
            except (TypeError, ValueError):
                number = -1
            if number < 1 or isinstance(raw, bool):
                raise NatriumError(Codes.COMPONENT_INVALID, f"{where}: bulkSubscribe.{key} must be a positive integer")
            numbers[key] = number
        return cls(numbers["maxMessagesCount"], numbers["maxAwaitDurationMs"])


@dataclass(frozen=True)
class SubscriptionSpec:
    """One topic subscription and where its events go."""

    pubsub: str
    topic: str
    rules: tuple[Rule, ...] = ()
    default: str | None = None
    dead_letter_topic: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    scopes: tuple[str, ...] = ()
    name: str = ""
    bulk: BulkSubscribe | None = None
    """Set when the subscription asks for bulk delivery."""

    def route(self, envelope: dict[str, Any]) -> str | None:
        """The path for this event: the first matching rule's, else the default, else None."""
        for rule in self.rules:
            if rule.matches(envelope):
                return rule.path
        return self.default

    def applies_to(self, app_id: str) -> bool:
        return not self.scopes or app_id in self.scopes

    def listing(self, kind: str) -> dict[str, Any]:
        """This subscription as `/v1.0/metadata` lists it; `kind` is DECLARATIVE or PROGRAMMATIC.
        The default route is the last rule, with an empty match, as daprd lists it."""
        rules = [{"match": rule.match, "path": rule.path} for rule in self.rules]
        if self.default:
            rules.append({"match": "", "path": self.default})
        entry: dict[str, Any] = {
            "pubsubname": self.pubsub,
            "topic": self.topic,
            "metadata": dict(self.metadata),
            "rules": {"rules": rules},
            "type": kind,
        }
        if self.dead_letter_topic:
            entry["deadLetterTopic"] = self.dead_letter_topic
        return entry

    @classmethod
    def from_spec(
        cls, spec: dict[str, Any], where: str, scopes: tuple[str, ...] = (), name: str = ""
    ) -> SubscriptionSpec:
        pubsub, topic = spec.get("pubsubname"), spec.get("topic")
        if not pubsub or not topic:
            raise NatriumError(Codes.COMPONENT_INVALID, f"{where}: a subscription needs pubsubname and topic")
        routes = spec.get("routes") or {}
        if not isinstance(routes, dict):
            raise NatriumError(Codes.COMPONENT_INVALID, f"{where}: routes must be a mapping of rules and default")
        rules = []
        for rule in routes.get("rules") or []:
            if not isinstance(rule, dict) or not rule.get("match") or not rule.get("path"):
                raise NatriumError(Codes.COMPONENT_INVALID, f"{where}: each rule needs match and path")
            rules.append(Rule.compiled(str(rule["match"]), str(rule["path"]), where))
        default = routes.get("default") or spec.get("route")
        if not rules and not default:
            raise NatriumError(Codes.COMPONENT_INVALID, f"{where}: subscription to {topic} has no route")
        metadata = {str(k): str(v) for k, v in (spec.get("metadata") or {}).items()}
        return cls(
            pubsub=str(pubsub),
            topic=str(topic),
            rules=tuple(rules),
            default=str(default) if default else None,
            dead_letter_topic=spec.get("deadLetterTopic") or None,
            metadata=metadata,
            scopes=scopes,
            name=name,
            bulk=BulkSubscribe.parse(spec.get("bulkSubscribe"), where),
        )


def from_resources(resources: list[dict[str, Any]]) -> list[SubscriptionSpec]:
    """The `Subscription` resources among those the component loader kept."""
    found = []
    for doc in resources:
        if doc.get("kind") != "Subscription":
            continue
        name = str((doc.get("metadata") or {}).get("name", ""))
        where = f"Subscription {name!r}"
        if doc.get("apiVersion") not in _API_VERSIONS:
            raise NatriumError(Codes.COMPONENT_INVALID, f"{where}: apiVersion must be dapr.io/v2alpha1 or v1alpha1")
        spec = doc.get("spec")
        if not isinstance(spec, dict):
            raise NatriumError(Codes.COMPONENT_INVALID, f"{where}: spec must be a mapping")
        scopes = tuple(str(s) for s in doc.get("scopes") or ())
        found.append(SubscriptionSpec.from_spec(spec, where, scopes, name))
    return found
