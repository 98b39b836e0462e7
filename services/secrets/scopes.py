"""Secret scopes from Dapr `Configuration` resources: which secrets an app may read from a store.

    kind: Configuration
    scopes: [checkout]                 # the apps it applies to; every app when omitted
    spec:
      secrets:
        scopes:
        - storeName: vault
          defaultAccess: deny          # allow (default) | deny
          allowedSecrets: [api-key]    # when present, only these are readable
          deniedSecrets: [root-pass]

For an app, a Configuration whose `scopes` name it wins over one without `scopes`; a store no
scope mentions is open, as in daprd. The app id is the one the request asserts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kernel.errors import Codes, NatriumError

__all__ = ["SecretScopes", "StoreScope"]


@dataclass(frozen=True)
class StoreScope:
    """One `secrets.scopes` entry, decided as daprd's `IsSecretAllowed` does."""

    default_allow: bool = True
    allowed: frozenset[str] = frozenset()
    denied: frozenset[str] = frozenset()

    def allows(self, name: str) -> bool:
        if self.allowed:
            return name in self.allowed
        if name in self.denied:
            return False
        return self.default_allow


@dataclass(frozen=True)
class _Policy:
    apps: frozenset[str]
    """Empty: every app."""
    stores: dict[str, StoreScope]


@dataclass(frozen=True)
class SecretScopes:
    policies: tuple[_Policy, ...] = field(default_factory=tuple)

    @classmethod
    def from_resources(cls, resources: list[dict[str, Any]]) -> SecretScopes:
        policies = []
        for doc in resources:
            if doc.get("kind") != "Configuration":
                continue
            secrets = (doc.get("spec") or {}).get("secrets") or {}
            entries = secrets.get("scopes") if isinstance(secrets, dict) else None
            if not entries:
                continue
            where = f"Configuration {(doc.get('metadata') or {}).get('name', '')!r}"
            apps = frozenset(str(a) for a in doc.get("scopes") or [])
            policies.append(_Policy(apps, _stores(entries, where)))
        return cls(tuple(policies))

    def allows(self, app_id: str | None, store: str, name: str) -> bool:
        scope = self._scope(app_id, store)
        return scope is None or scope.allows(name)

    def check(self, app_id: str | None, store: str, name: str) -> None:
        if not self.allows(app_id, store, name):
            raise NatriumError(
                Codes.PERMISSION_DENIED, f"access denied by policy to get {name!r} from {store!r}", status=403
            )

    def _scope(self, app_id: str | None, store: str) -> StoreScope | None:
        named = [p for p in self.policies if app_id and app_id in p.apps]
        policies = named or [p for p in self.policies if not p.apps]
        return policies[0].stores.get(store) if policies else None


def _stores(entries: Any, where: str) -> dict[str, StoreScope]:
    if not isinstance(entries, list):
        raise NatriumError(Codes.COMPONENT_INVALID, f"{where}: spec.secrets.scopes must be a list")
    stores: dict[str, StoreScope] = {}
    for entry in entries:
        if not isinstance(entry, dict) or not entry.get("storeName"):
            raise NatriumError(Codes.COMPONENT_INVALID, f"{where}: each spec.secrets.scopes entry needs a storeName")
        store = str(entry["storeName"])
        if store in stores:
            raise NatriumError(
                Codes.COMPONENT_INVALID, f"{where}: {store!r} storeName is repeated in secrets configuration"
            )
        access = str(entry.get("defaultAccess") or "allow").lower()
        if access not in ("allow", "deny"):
            raise NatriumError(
                Codes.COMPONENT_INVALID,
                f"{where}: defaultAccess {entry.get('defaultAccess')!r} can be either allow or deny",
            )
        stores[store] = StoreScope(
            default_allow=access == "allow",
            allowed=frozenset(str(s) for s in entry.get("allowedSecrets") or []),
            denied=frozenset(str(s) for s in entry.get("deniedSecrets") or []),
        )
    return stores
