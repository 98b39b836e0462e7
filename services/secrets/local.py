"""Dapr's local secret stores: `secretstores.local.file` (a JSON file) and `secretstores.local.env`.

Both are read-only and for development, as in Dapr. The file store reads its file once at start
and flattens nested objects into `outer<nestedSeparator>inner` names (arrays by index); with
`multiValued: true` each top-level object is one secret whose keys are its flattened members.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kernel.components import Component
from kernel.errors import Codes, NatriumError

__all__ = ["EnvStore", "FileStore", "FILE_TYPE", "ENV_TYPE"]

FILE_TYPE = "secretstores.local.file"
ENV_TYPE = "secretstores.local.env"


class FileStore:
    """Secrets from a JSON file (metadata `secretsFile`, `nestedSeparator`, `multiValued`)."""

    def __init__(self, component: Component) -> None:
        self.component = component
        self.separator = component.meta("nestedSeparator") or ":"
        self.multi_valued = component.meta_bool("multiValued")
        self.capabilities = ["MULTIPLE_KEY_VALUES_PER_SECRET"] if self.multi_valued else []
        self.secrets: dict[str, dict[str, str]] = {}

    async def open(self) -> None:
        path = self.component.meta("secretsFile")
        if not path:
            raise self._invalid("missing local secrets file in metadata (secretsFile)")
        document = await asyncio.to_thread(self._read, path)
        if self.multi_valued:
            for name, value in document.items():
                self.secrets[name] = self._flatten(value) if isinstance(value, dict) else {name: _text(value)}
        else:
            self.secrets = {name: {name: value} for name, value in self._flatten(document).items()}

    async def get(self, name: str) -> dict[str, str] | None:
        return self.secrets.get(name)

    async def bulk(self, readable: Callable[[str], bool]) -> dict[str, dict[str, str]]:
        return {name: value for name, value in self.secrets.items() if readable(name)}

    async def names(self) -> list[str]:
        return sorted(self.secrets)

    def _read(self, file: str) -> dict[str, Any]:
        path = Path(file).expanduser()
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise self._invalid(f"secretsFile {path} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise self._invalid(f"cannot read secretsFile {path}: {exc}") from None
        except ValueError as exc:
            raise self._invalid(f"secretsFile {path} is not valid JSON: {exc}") from None
        if not isinstance(document, dict):
            raise self._invalid(f"secretsFile {path} must hold a JSON object")
        return document

    def _flatten(self, value: Any, path: str = "", out: dict[str, str] | None = None) -> dict[str, str]:
        out = {} if out is None else out
        members: list[tuple[str, Any]]
        if isinstance(value, dict):
            members = [(str(k), v) for k, v in value.items()]
        elif isinstance(value, list):
            members = [(str(i), v) for i, v in enumerate(value)]
        else:
            if path in out:
                raise self._invalid(f"secretsFile: {path!r} appears twice after flattening")
            out[path] = _text(value)
            return out
        for key, member in members:
            self._flatten(member, f"{path}{self.separator}{key}" if path else key, out)
        return out

    def _invalid(self, why: str) -> NatriumError:
        c = self.component
        return NatriumError(Codes.COMPONENT_INVALID, f"component {c.name!r} ({c.source}): {why}")


class EnvStore:
    """Secrets from this service's environment variables (metadata `prefix`, prepended to names).

    As in Dapr, a variable that is not set reads as an empty string, and the runtime's own
    variables (`DAPR_*`, `APP_API_TOKEN`, and natrium's `NATRIUM_*` and `NATS_*`) are never served.
    """

    capabilities: list[str] = []

    def __init__(self, component: Component) -> None:
        self.component = component
        self.prefix = component.meta("prefix") or ""

    async def open(self) -> None:
        pass

    async def get(self, name: str) -> dict[str, str] | None:
        variable = self.prefix + name
        return {name: os.environ.get(variable, "") if _allowed(variable) else ""}

    async def bulk(self, readable: Callable[[str], bool]) -> dict[str, dict[str, str]]:
        found: dict[str, dict[str, str]] = {}
        for variable, value in os.environ.items():
            if len(variable) <= len(self.prefix) or not variable.startswith(self.prefix) or not _allowed(variable):
                continue
            name = variable[len(self.prefix) :]
            if readable(name):
                found[name] = {name: value}
        return found

    async def names(self) -> list[str]:
        return sorted(await self.bulk(lambda name: True))


def _allowed(variable: str) -> bool:
    upper = variable.upper()
    return upper != "APP_API_TOKEN" and not upper.startswith(("DAPR_", "NATRIUM_", "NATS_"))


def _text(value: Any) -> str:
    """A JSON leaf as text: strings as they are, anything else in its JSON spelling (`true`, `3`)."""
    if isinstance(value, str):
        return value
    return "" if value is None else json.dumps(value)
