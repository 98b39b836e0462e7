"""Dapr component YAML (`apiVersion: dapr.io/v1alpha1`, `kind: Component`), loaded from a folder.

Each block service takes the components of its block (`spec.type` `state.*` for state) and, when
the folder declares none, the block's built-in default, the way a fresh Dapr install has
`statestore` and `pubsub`. Other Dapr resources in the folder (Subscription, Configuration,
Resiliency) are kept for the blocks that read them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from kernel.errors import NatriumError

__all__ = ["Component", "ComponentSet", "SecretKeyRef", "load_components"]

_API_VERSIONS = {"dapr.io/v1alpha1"}
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


class SecretKeyRef(BaseModel):
    """A metadata value kept in a secret store: `secretKeyRef: {name, key}` (key defaults to name)."""

    model_config = ConfigDict(frozen=True)

    name: str
    key: str | None = None


class Component(BaseModel):
    """One component, flattened from its YAML."""

    model_config = ConfigDict(frozen=True)

    name: str
    type: str
    version: str = "v1"
    metadata: dict[str, str] = Field(default_factory=dict)
    scopes: tuple[str, ...] = ()
    ignore_errors: bool = False
    source: str = "built-in default"
    secret_refs: dict[str, SecretKeyRef] = Field(default_factory=dict)
    """Metadata items whose value is a secret; the service base resolves them before `setup()`."""
    secret_store: str | None = None
    """`auth.secretStore`: where `secret_refs` live (natrium's default store when unset)."""

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not value or not set(value) <= _NAME_CHARS:
            raise ValueError(f"component name {value!r} must be letters, digits, '-', '_' or '.'")
        return value

    @property
    def block(self) -> str:
        return self.type.split(".", 1)[0]

    def meta(self, key: str, default: str | None = None) -> str | None:
        """A metadata value; keys match case-insensitively, as Dapr's do."""
        lowered = key.lower()
        for name, value in self.metadata.items():
            if name.lower() == lowered:
                return value
        return default

    def meta_int(self, key: str, default: int) -> int:
        raw = self.meta(key)
        if raw is None or raw == "":
            return default
        try:
            return int(raw)
        except ValueError:
            raise NatriumError(
                "ERR_COMPONENT_INVALID",
                f"component {self.name!r} ({self.source}): metadata {key} must be an integer, got {raw!r}",
            ) from None

    def meta_bool(self, key: str, default: bool = False) -> bool:
        raw = self.meta(key)
        return default if raw is None else raw.strip().lower() in ("true", "1", "yes")

    def describe(self, capabilities: list[str] | None = None) -> dict[str, Any]:
        """The entry Dapr's `/v1.0/metadata` lists for this component."""
        return {
            "name": self.name,
            "type": self.type,
            "version": self.version,
            "capabilities": capabilities or [],
        }


@dataclass
class ComponentSet:
    """Every component and other Dapr resource found in a folder."""

    components: list[Component] = field(default_factory=list)
    resources: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[Component] = field(default_factory=list)
    """Declared but left out (`ignoreErrors`); they still keep a block's default away."""

    def for_block(self, block: str, default: Component | None = None) -> list[Component]:
        found = [c for c in self.components if c.block == block]
        if not found and default is not None and not any(c.block == block for c in self.skipped):
            return [default]
        return found


def load_components(folder: str | Path | None) -> ComponentSet:
    """Parse every *.yaml / *.yml in `folder` (not recursive); no folder means defaults only."""
    result = ComponentSet()
    if folder is None:
        return result
    path = Path(folder)
    if not path.is_dir():
        raise NatriumError("ERR_COMPONENT_INVALID", f"components folder {path} does not exist")
    names: dict[str, str] = {}
    for file in sorted([*path.glob("*.yaml"), *path.glob("*.yml")]):
        for doc in _documents(file):
            if doc.get("kind") != "Component":
                result.resources.append(doc)
                continue
            component = _component(doc, file)
            if component.name in names:
                raise NatriumError(
                    "ERR_COMPONENT_INVALID",
                    f"{file}: component {component.name!r} is already defined in {names[component.name]}",
                )
            names[component.name] = str(file)
            result.components.append(component)
    return result


def _documents(file: Path) -> list[dict[str, Any]]:
    try:
        docs = [d for d in yaml.safe_load_all(file.read_text(encoding="utf-8")) if d is not None]
    except yaml.YAMLError as exc:
        raise NatriumError("ERR_COMPONENT_INVALID", f"{file}: not valid YAML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise NatriumError("ERR_COMPONENT_INVALID", f"{file}: cannot read: {exc}") from None
    for doc in docs:
        if not isinstance(doc, dict):
            raise NatriumError("ERR_COMPONENT_INVALID", f"{file}: each YAML document must be a mapping")
    return docs


def _component(doc: dict[str, Any], file: Path) -> Component:
    def fail(why: str) -> NatriumError:
        return NatriumError("ERR_COMPONENT_INVALID", f"{file}: {why}")

    if doc.get("apiVersion") not in _API_VERSIONS:
        raise fail(f"apiVersion must be dapr.io/v1alpha1, got {doc.get('apiVersion')!r}")
    meta = doc.get("metadata") or {}
    spec = doc.get("spec") or {}
    if not isinstance(meta, dict) or not isinstance(spec, dict):
        raise fail("metadata and spec must be mappings")
    if not meta.get("name"):
        raise fail("metadata.name is required")
    if not spec.get("type") or "." not in str(spec["type"]):
        raise fail("spec.type is required, as <block>.<kind> (e.g. state.nats-kv)")
    items: dict[str, str] = {}
    refs: dict[str, SecretKeyRef] = {}
    for item in spec.get("metadata") or []:
        if not isinstance(item, dict) or "name" not in item:
            raise fail("each spec.metadata entry needs a name")
        if "secretKeyRef" in item:
            refs[str(item["name"])] = _secret_ref(item["secretKeyRef"], str(item["name"]), fail)
            continue
        value = item.get("value", "")
        if isinstance(value, bool):  # YAML `true` arrives as a bool; Dapr metadata is text
            value = "true" if value else "false"
        items[str(item["name"])] = str(value)
    scopes = doc.get("scopes") or []
    auth = doc.get("auth") or {}
    if not isinstance(auth, dict):
        raise fail("auth must be a mapping, e.g. {secretStore: secretstore}")
    try:
        return Component(
            name=str(meta["name"]),
            type=str(spec["type"]),
            version=str(spec.get("version", "v1")),
            metadata=items,
            scopes=tuple(str(s) for s in scopes),
            ignore_errors=bool(spec.get("ignoreErrors", False)),
            source=str(file),
            secret_refs=refs,
            secret_store=str(auth["secretStore"]) if auth.get("secretStore") else None,
        )
    except ValidationError as exc:
        raise fail("; ".join(e["msg"] for e in exc.errors())) from None


def _secret_ref(raw: Any, item: str, fail: Callable[[str], NatriumError]) -> SecretKeyRef:
    if not isinstance(raw, dict) or not raw.get("name"):
        raise fail(f"metadata {item}: secretKeyRef needs a name, e.g. {{name: db-pass, key: password}}")
    key = raw.get("key")
    return SecretKeyRef(name=str(raw["name"]), key=str(key) if key else None)
