"""Dapr `Configuration` access control for service invocation: who may call which operations.

    spec:
      accessControl:
        defaultAction: deny            # for callers no policy names
        policies:
        - appId: checkout
          defaultAction: deny          # for this caller's operations no rule names
          operations:
          - name: /orders/*            # `*` one path segment, `**` any depth
            httpVerb: [POST, GET]      # `*` for every verb
            action: allow

The caller is the `dapr-caller-app-id` a call carries. Without mTLS that id is asserted, not proven:
lock the bus down with NATS accounts and permissions where callers are not trusted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from kernel.errors import Codes, NatriumError

__all__ = ["AccessControl", "from_resources"]


@dataclass(frozen=True)
class _Operation:
    pattern: re.Pattern[str]
    verbs: frozenset[str]
    allow: bool


@dataclass(frozen=True)
class _Policy:
    default_allow: bool
    operations: tuple[_Operation, ...]


@dataclass(frozen=True)
class AccessControl:
    default_allow: bool = True
    policies: dict[str, _Policy] = field(default_factory=dict)

    def allows(self, caller: str | None, verb: str, path: str) -> bool:
        policy = self.policies.get(caller or "")
        if policy is None:
            return self.default_allow
        for operation in policy.operations:
            if operation.pattern.fullmatch(path) and ("*" in operation.verbs or verb.upper() in operation.verbs):
                return operation.allow
        return policy.default_allow

    def check(self, caller: str | None, verb: str, path: str, app_id: str) -> None:
        if not self.allows(caller, verb, path):
            raise NatriumError(
                "ERR_PERMISSION_DENIED",
                f"access control policy has denied access to id: {caller or '<unknown>'} operation: {path} "
                f"verb: {verb} on app {app_id}",
                status=403,
            )


def _pattern(name: str) -> re.Pattern[str]:
    parts = []
    for piece in re.split(r"(\*\*|\*)", "/" + name.lstrip("/")):
        parts.append(".*" if piece == "**" else "[^/]*" if piece == "*" else re.escape(piece))
    return re.compile("".join(parts))


def _action(value: Any, where: str) -> bool:
    text = str(value or "allow").lower()
    if text not in ("allow", "deny"):
        raise NatriumError(Codes.COMPONENT_INVALID, f"{where}: action must be allow or deny, got {value!r}")
    return text == "allow"


def from_resources(resources: list[dict[str, Any]], app_id: str) -> AccessControl:
    """The access control of the `Configuration` resources scoped to `app_id` (allow all when none)."""
    for doc in resources:
        if doc.get("kind") != "Configuration":
            continue
        scopes = doc.get("scopes") or []
        if scopes and app_id not in scopes:
            continue
        spec = (doc.get("spec") or {}).get("accessControl")
        if not spec:
            continue
        where = f"Configuration {(doc.get('metadata') or {}).get('name', '')!r}"
        policies = {}
        for policy in spec.get("policies") or []:
            operations = tuple(
                _Operation(
                    _pattern(str(op.get("name", "/**"))),
                    frozenset(str(v).upper() for v in op.get("httpVerb") or ["*"]),
                    _action(op.get("action"), where),
                )
                for op in policy.get("operations") or []
            )
            policies[str(policy.get("appId", ""))] = _Policy(_action(policy.get("defaultAction"), where), operations)
        return AccessControl(_action(spec.get("defaultAction"), where), policies)
    return AccessControl()
