"""The secrets block on the bus: `<root>.secrets.<store>.{get,bulk,put,delete,list}`."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from kernel.components import Component
from kernel.errors import Codes, NatriumError
from kernel.service import ComponentService, Endpoint, RequestContext
from schemas.secrets import (
    BulkSecretReply,
    BulkSecretRequest,
    DeleteSecretRequest,
    GetSecretReply,
    GetSecretRequest,
    ListSecretsReply,
    ListSecretsRequest,
    PutSecretRequest,
)
from services.secrets.local import ENV_TYPE, FILE_TYPE, EnvStore, FileStore
from services.secrets.scopes import SecretScopes
from services.secrets.seal import Sealer, load_key
from services.secrets.store import SEALED_TYPE, SealedStore, SecretStore, get_failed

__all__ = ["SecretsService", "DEFAULT_SECRET_STORE", "SUPPORTED_TYPES"]

log = logging.getLogger("natrium.secrets")

DEFAULT_SECRET_STORE = Component(name="secretstore", type=SEALED_TYPE)
SUPPORTED_TYPES = (SEALED_TYPE, FILE_TYPE, ENV_TYPE)


class SecretsService(ComponentService[SecretStore]):
    """Serves every secret store component (`spec.type: secretstores.*`) of the loaded set."""

    block = "secrets"
    default_component = DEFAULT_SECRET_STORE
    # Component references are resolved through this block: it must not wait on itself.
    resolves_secret_refs = False

    supported_types = SUPPORTED_TYPES

    def __post_init__(self) -> None:
        super().__post_init__()
        self.scopes = SecretScopes()

    def endpoints(self) -> list[Endpoint[Any]]:
        return [
            Endpoint("get", GetSecretRequest, self.get),
            Endpoint("bulk", BulkSecretRequest, self.bulk),
            Endpoint("put", PutSecretRequest, self.put),
            Endpoint("delete", DeleteSecretRequest, self.delete),
            Endpoint("list", ListSecretsRequest, self.list_names),
        ]

    def block_components(self) -> list[Component]:
        # Dapr's secret store types start with `secretstores.`, not the block's name.
        return self.components.for_block("secretstores", self.default_component)

    def capabilities_of(self, backend: SecretStore) -> list[str]:
        return backend.capabilities

    async def setup(self) -> None:
        self.scopes = SecretScopes.from_resources(self.components.resources)
        await super().setup()

    async def open_component(self, component: Component) -> SecretStore:
        store = await _open_store(self, component)
        await store.open()
        return store

    def not_found(self, name: str) -> NatriumError:
        return NatriumError(Codes.SECRET_STORE_NOT_FOUND, f"failed finding secret store with key {name}", status=401)

    def store(self, ctx: RequestContext) -> SecretStore:
        if not self.stores:
            raise NatriumError(Codes.SECRET_STORES_NOT_CONFIGURED, "secret store is not configured", status=500)
        return super().store(ctx)

    def sealed(self, ctx: RequestContext, code: str) -> SealedStore:
        store = self.store(ctx)
        if not isinstance(store, SealedStore):
            raise NatriumError(
                code,
                f"secret store {ctx.component} ({store.component.type}) is read-only; "
                f"writes go to {SEALED_TYPE} stores",
                status=400,
            )
        return store

    async def get(self, request: GetSecretRequest, ctx: RequestContext) -> GetSecretReply:
        store = self.store(ctx)
        self.scopes.check(request.app_id, ctx.component, request.name)
        data = await store.get(request.name)
        if data is None:
            raise get_failed(ctx.component, request.name, f"secret {request.name} not found")
        return GetSecretReply(data=data)

    async def bulk(self, request: BulkSecretRequest, ctx: RequestContext) -> BulkSecretReply:
        store = self.store(ctx)

        def readable(name: str) -> bool:
            return self.scopes.allows(request.app_id, ctx.component, name)

        try:
            secrets = await store.bulk(readable)
        except NatriumError as exc:
            if exc.code != Codes.SECRET_GET or exc.message.startswith("failed getting secret"):
                raise  # already names the store and the secret
            message = f"failed getting secrets from secret store {ctx.component}: {exc.message}"
            raise NatriumError(Codes.SECRET_GET, message, retryable=exc.retryable) from None
        return BulkSecretReply(data=secrets)

    async def put(self, request: PutSecretRequest, ctx: RequestContext) -> None:
        value = request.value if isinstance(request.value, dict) else {request.name: request.value}
        if not value:
            raise NatriumError(Codes.SECRET_PUT, f"secret {request.name}: the value has no keys", status=400)
        await self.sealed(ctx, Codes.SECRET_PUT).put(request.name, value)

    async def delete(self, request: DeleteSecretRequest, ctx: RequestContext) -> None:
        if not await self.sealed(ctx, Codes.SECRET_DELETE).delete(request.name):
            raise NatriumError(
                Codes.SECRET_DELETE, f"secret {request.name} not found in secret store {ctx.component}", status=404
            )

    async def list_names(self, request: ListSecretsRequest, ctx: RequestContext) -> ListSecretsReply:
        return ListSecretsReply(names=await self.store(ctx).names())


async def _open_store(service: SecretsService, component: Component) -> SecretStore:
    where = f"component {component.name!r} ({component.source})"
    if component.secret_refs:
        # The secrets block resolves references for every other block; its own would need itself.
        raise NatriumError(Codes.COMPONENT_INVALID, f"{where}: secret stores cannot take metadata from secretKeyRef")
    if component.type == SEALED_TYPE:
        key = await asyncio.to_thread(load_key, component)  # may create the key file
        return SealedStore(service.nc, component, Sealer(key))
    if component.type == FILE_TYPE:
        return FileStore(component)
    if component.type == ENV_TYPE:
        return EnvStore(component)
    raise NatriumError(
        Codes.COMPONENT_INVALID,
        f"{where}: secret store type {component.type!r} is not supported; use one of {', '.join(SUPPORTED_TYPES)}",
    )
