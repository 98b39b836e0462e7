"""`bindings.localstorage`: `create`, `get`, `list` and `delete` files under `rootPath`.

Request metadata `fileName` names the file (a UUID on `create` when absent). A name that leaves
the root (`..`, an absolute path, or a symlink pointing out) is refused, never clamped. As in
Dapr, `create` stores the text of a JSON string and decodes base64 content to its bytes.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import os
import uuid
from pathlib import Path
from typing import ClassVar

from adapters.bindings.base import BindingRequest, BindingResponse, Driver, DriverEnv, TargetError, invalid, unquote
from kernel.components import Component

__all__ = ["LocalStorageBinding"]

_DISALLOWED_ROOTS = (Path("/proc"), Path("/sys"), Path("/boot"), Path("/var/run/secrets"))


class LocalStorageBinding(Driver):
    operations: ClassVar[tuple[str, ...]] = ("create", "get", "list", "delete")

    def __init__(self, component: Component, env: DriverEnv) -> None:
        super().__init__(component, env)
        root = Path(self.required("rootPath")).expanduser()
        self.root = root.resolve()
        if any(self.root == p or self.root.is_relative_to(p) for p in _DISALLOWED_ROOTS):
            raise invalid(component, f"rootPath {root} points to a disallowed location")
        if self.root.exists() and not self.root.is_dir():
            raise invalid(component, f"rootPath {root} is a file, not a directory")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise invalid(component, f"cannot create rootPath {root}: {exc.strerror}") from None

    def _path(self, name: str) -> Path:
        """The file `name` names inside the root; TargetError for any name that would leave it."""
        if "\x00" in name:
            raise TargetError(f"fileName {name!r} is not a valid file name")
        relative = Path(name)
        if relative.is_absolute() or ".." in relative.parts:
            raise TargetError(f"fileName {name!r} leaves rootPath: use a relative path without '..'")
        # resolve() follows symlinks: a link inside the root that points out is caught here.
        target = (self.root / relative).resolve()
        if target != self.root and not target.is_relative_to(self.root):
            raise TargetError(f"fileName {name!r} leaves rootPath through a symbolic link")
        return target

    async def invoke(self, request: BindingRequest) -> BindingResponse:
        name = request.meta("fileName")
        if request.operation == "create":
            return await asyncio.to_thread(self._create, name or str(uuid.uuid4()), request.data)
        if request.operation == "list":
            return await asyncio.to_thread(self._list, name)
        if not name:
            raise TargetError(f"metadata fileName is required for {request.operation}")
        if request.operation == "get":
            return await asyncio.to_thread(self._get, name)
        return await asyncio.to_thread(self._delete, name)

    def _create(self, name: str, data: bytes) -> BindingResponse:
        path = self._path(name)
        content = unquote(data)
        try:
            content = base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError):
            pass
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
        except OSError as exc:
            raise TargetError(f"error creating file {name}: {exc.strerror or exc}") from None
        body = json.dumps({"fileName": str(path.relative_to(self.root))}).encode()
        return BindingResponse(body)

    def _get(self, name: str) -> BindingResponse:
        path = self._path(name)
        try:
            return BindingResponse(path.read_bytes())
        except FileNotFoundError:
            raise TargetError(f"file not found: {name}") from None
        except OSError as exc:
            raise TargetError(f"error reading file {name}: {exc.strerror or exc}") from None

    def _delete(self, name: str) -> BindingResponse:
        path = self._path(name)
        try:
            path.unlink()
        except FileNotFoundError:
            raise TargetError(f"file not found: {name}") from None
        except OSError as exc:
            raise TargetError(f"error deleting file {name}: {exc.strerror or exc}") from None
        return BindingResponse()

    def _list(self, name: str) -> BindingResponse:
        folder = self._path(name) if name else self.root
        if not folder.is_dir():
            raise TargetError(f"unable to list files: {name or '.'} is not a directory")
        files = sorted(
            str(Path(base) / file)
            for base, _, names in os.walk(folder)
            for file in names
            if Path(base, file).resolve().is_relative_to(self.root)
        )
        return BindingResponse(json.dumps(files).encode())
