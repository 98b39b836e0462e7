"""Secrets, lock and runtime RPCs: the bus requests of adapters/gateway/{secrets,lock,health}.py."""

from __future__ import annotations

from typing import Any, TypeVar

from dapr.proto.runtime.v1 import dapr_pb2, lock_pb2, metadata_pb2, secret_pb2
from google.protobuf import empty_pb2, json_format
from pydantic import BaseModel

from adapters.gateway.errors import transport_as
from adapters.gateway.health import metadata_document
from adapters.grpc.rpc import Rpcs, rpc
from kernel.errors import Codes, NatriumError
from schemas.lock import LockReply, UnlockReply
from schemas.secrets import BulkSecretReply, GetSecretReply

__all__ = ["BlockRpcs"]

Reply = TypeVar("Reply", bound=BaseModel)


class BlockRpcs(Rpcs):
    async def _secrets(self, store: str, operation: str, body: dict[str, Any], reply_model: type[Reply]) -> Reply:
        gateway = self.gateway
        body["appId"] = gateway.config.app_id  # the secret scopes of this app apply
        try:
            return await gateway.bus.request(gateway.subjects.block("secrets", store, operation), body, reply_model)
        except NatriumError as exc:
            raise transport_as(exc, Codes.SECRET_GET, Codes.SECRET_STORES_NOT_CONFIGURED) from None

    @rpc
    async def GetSecret(self, request: secret_pb2.GetSecretRequest, context: Any) -> secret_pb2.GetSecretResponse:
        body = {"name": request.key, "metadata": dict(request.metadata)}
        reply = await self._secrets(request.store_name, "get", body, GetSecretReply)
        return secret_pb2.GetSecretResponse(data=reply.data)

    @rpc
    async def GetBulkSecret(
        self, request: secret_pb2.GetBulkSecretRequest, context: Any
    ) -> secret_pb2.GetBulkSecretResponse:
        reply = await self._secrets(request.store_name, "bulk", {"metadata": dict(request.metadata)}, BulkSecretReply)
        data = {name: secret_pb2.SecretResponse(secrets=values) for name, values in reply.data.items()}
        return secret_pb2.GetBulkSecretResponse(data=data)

    async def _lock(self, store: str, operation: str, body: dict[str, Any], code: str, reply: type[Reply]) -> Reply:
        gateway = self.gateway
        body["appId"] = gateway.config.app_id
        try:
            return await gateway.bus.request(gateway.subjects.block("lock", store, operation), body, reply)
        except NatriumError as exc:
            raise transport_as(exc, code, Codes.LOCK_STORE_NOT_CONFIGURED) from None

    @rpc
    async def TryLockAlpha1(self, request: lock_pb2.TryLockRequest, context: Any) -> lock_pb2.TryLockResponse:
        body = {
            "resourceId": request.resource_id,
            "lockOwner": request.lock_owner,
            "expiryInSeconds": request.expiry_in_seconds,
        }
        reply = await self._lock(request.store_name, "lock", body, Codes.TRY_LOCK, LockReply)
        # A lock held by another owner is success=false, not an error, as over HTTP.
        return lock_pb2.TryLockResponse(success=reply.success)

    @rpc
    async def UnlockAlpha1(self, request: lock_pb2.UnlockRequest, context: Any) -> lock_pb2.UnlockResponse:
        body = {"resourceId": request.resource_id, "lockOwner": request.lock_owner}
        reply = await self._lock(request.store_name, "unlock", body, Codes.UNLOCK, UnlockReply)
        return lock_pb2.UnlockResponse(status=reply.status)  # type: ignore[arg-type]

    @rpc
    async def GetMetadata(
        self, request: metadata_pb2.GetMetadataRequest, context: Any
    ) -> metadata_pb2.GetMetadataResponse:
        document = await metadata_document(self.gateway)
        # The proto's JSON names are the HTTP document's own; natrium's extra fields are skipped.
        return json_format.ParseDict(document, metadata_pb2.GetMetadataResponse(), ignore_unknown_fields=True)

    @rpc
    async def SetMetadata(self, request: metadata_pb2.SetMetadataRequest, context: Any) -> empty_pb2.Empty:
        self.gateway.extended_metadata[request.key] = request.value
        return empty_pb2.Empty()

    @rpc
    async def Shutdown(self, request: dapr_pb2.ShutdownRequest, context: Any) -> empty_pb2.Empty:
        self.shutdown.set()  # the same event `POST /v1.0/shutdown` sets
        return empty_pb2.Empty()
