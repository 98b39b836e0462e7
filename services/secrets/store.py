"""The sealed secret store on a JetStream object store bucket (type `secretstores.nats.objectstore`).

One bucket per component (`secrets-<name>`, standard object store layout, so `nats object ls`
works). Each secret is one object named after the secret whose content is the sealed JSON map
`{key: value}`: the value is sealed here, before it goes on the bus to JetStream, and opened
only here. Reads take the lean path, two direct gets (object meta, then its single chunk).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
from collections.abc import Callable
from typing import Protocol

from nats.aio.client import Client
from nats.js import api
from nats.js.errors import APIError, ObjectNotFoundError
from nats.js.object_store import ObjectStore

from kernel.components import Component
from kernel.errors import Codes, NatriumError
from kernel.jetstream import component_bucket, ensure_stream, storage_of, transport_errors_as
from services.secrets.seal import Sealer, UnsealError

__all__ = ["SEALED_TYPE", "SealedStore", "SecretStore", "get_failed"]

log = logging.getLogger("natrium.secrets")

SEALED_TYPE = "secretstores.nats.objectstore"


class SecretStore(Protocol):
    """What every secret store of the block answers; `None` from `get` means no such secret."""

    component: Component
    capabilities: list[str]

    async def open(self) -> None: ...

    async def get(self, name: str) -> dict[str, str] | None: ...

    async def bulk(self, readable: Callable[[str], bool]) -> dict[str, dict[str, str]]:
        """Every secret whose name `readable` accepts (the others are not even read)."""
        ...

    async def names(self) -> list[str]: ...


def get_failed(store: str, name: str, why: str) -> NatriumError:
    """daprd's ERR_SECRET_GET message."""
    return NatriumError(Codes.SECRET_GET, f"failed getting secret with key {name} from secret store {store}: {why}")


class SealedStore:
    """Secrets sealed with AES-256-GCM in one object store bucket."""

    capabilities = ["MULTIPLE_KEY_VALUES_PER_SECRET"]

    def __init__(self, nc: Client, component: Component, sealer: Sealer) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.component = component
        self.sealer = sealer
        self.bucket = component_bucket(component, "secrets")
        self.stream = f"OBJ_{self.bucket}"
        self.objects = ObjectStore(name=self.bucket, stream=self.stream, js=self.js)

    def stream_config(self) -> api.StreamConfig:
        """The stream nats-py and the nats CLI create for an object store, with this store's limits."""
        c = self.component
        return api.StreamConfig(
            name=self.stream,
            description=f"natrium sealed secret store {c.name}",
            subjects=[f"$O.{self.bucket}.C.>", f"$O.{self.bucket}.M.>"],
            max_bytes=c.meta_int("maxBytes", -1),
            storage=storage_of(c),
            num_replicas=c.meta_int("replicas", 1),
            discard=api.DiscardPolicy.NEW,
            allow_rollup_hdrs=True,
            allow_direct=True,
        )

    async def open(self) -> None:
        await ensure_stream(self.js, self.stream_config())
        log.info("sealed secret store ready", extra={"store": self.component.name, "bucket": self.bucket})

    # -- reads ----------------------------------------------------------------------------------

    @transport_errors_as(Codes.SECRET_GET)
    async def get(self, name: str) -> dict[str, str] | None:
        info = await self._info(self._meta_subject(name))
        if info is None:
            return None
        return self._open(name, await self._content(name, info))

    @transport_errors_as(Codes.SECRET_GET)
    async def bulk(self, readable: Callable[[str], bool]) -> dict[str, dict[str, str]]:
        names = [name for name in await self.names() if readable(name)]
        values = await asyncio.gather(*(self.get(name) for name in names))
        return {name: value for name, value in zip(names, values, strict=True) if value is not None}

    @transport_errors_as(Codes.SECRET_GET)
    async def names(self) -> list[str]:
        stream = await self.js.stream_info(self.stream, subjects_filter=f"$O.{self.bucket}.M.>")
        subjects = list((stream.state.subjects or {}).keys())
        infos = await asyncio.gather(*(self._info(subject) for subject in subjects))
        return sorted(str(info["name"]) for info in infos if info is not None)

    def _meta_subject(self, name: str) -> str:
        return f"$O.{self.bucket}.M.{base64.urlsafe_b64encode(name.encode('utf-8')).decode()}"

    async def _info(self, meta_subject: str) -> dict[str, object] | None:
        """The object's meta record; None when absent or deleted."""
        data = await self._last(meta_subject)
        if data is None:
            return None
        info = json.loads(data)
        return None if info.get("deleted") else info

    async def _content(self, name: str, info: dict[str, object]) -> bytes:
        if info.get("chunks") != 1:
            # Larger than one chunk (128 KiB): nats-py reassembles it with an ordered consumer.
            return (await self.objects.get(name)).data or b""
        data = await self._last(f"$O.{self.bucket}.C.{info['nuid']}")
        if data is None or not _digest_matches(data, str(info.get("digest", ""))):
            raise get_failed(self.component.name, name, "the stored object is incomplete or its digest does not match")
        return data

    async def _last(self, subject: str) -> bytes | None:
        reply = await self.nc.request(f"$JS.API.DIRECT.GET.{self.stream}.{subject}", b"", timeout=5)
        headers = reply.headers or {}
        status = headers.get("Status")
        if status == "404":
            return None
        if status:
            raise NatriumError(Codes.SECRET_GET, f"direct get failed: {status} {headers.get('Description', '')}")
        return reply.data

    def _open(self, name: str, sealed: bytes) -> dict[str, str]:
        try:
            plain = self.sealer.unseal(name, sealed)
        except UnsealError as exc:
            raise get_failed(self.component.name, name, str(exc)) from None
        value = json.loads(plain)
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise get_failed(self.component.name, name, "the unsealed value is not a map of strings")
        return value

    # -- writes ---------------------------------------------------------------------------------

    @transport_errors_as(Codes.SECRET_PUT)
    async def put(self, name: str, value: dict[str, str]) -> None:
        plain = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        try:
            await self.objects.put(name, self.sealer.seal(name, plain))
        except APIError as exc:  # e.g. the bucket's maxBytes is reached
            raise NatriumError(
                Codes.SECRET_PUT,
                f"failed storing secret {name} in secret store {self.component.name}: {exc.description}",
            ) from None

    @transport_errors_as(Codes.SECRET_DELETE)
    async def delete(self, name: str) -> bool:
        """False when there was no such secret."""
        try:
            await self.objects.delete(name)
        except ObjectNotFoundError:
            return False
        return True


def _digest_matches(data: bytes, recorded: str) -> bool:
    """Object store digests are `SHA-256=<url-safe base64>`."""
    prefix, _, encoded = recorded.partition("=")
    if prefix.upper() != "SHA-256":
        return False
    return encoded == base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode()
