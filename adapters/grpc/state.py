"""State RPCs: each one is the bus request `/v1.0/state/...` makes (adapters/gateway/state.py).

Values travel as bytes over msgpack, so the store keeps them verbatim, as daprd stores what a gRPC
client sends; a value saved as JSON over HTTP comes back as its JSON bytes.
"""

from __future__ import annotations

import asyncio
from typing import Any

from dapr.proto.common.v1 import common_pb2
from dapr.proto.runtime.v1 import state_pb2
from google.protobuf import empty_pb2

from adapters.gateway.errors import transport_as
from adapters.grpc.rpc import Rpcs, rpc
from kernel.errors import Codes, NatriumError
from schemas.state import BulkGetReply, GetReply

__all__ = ["StateRpcs"]

_CONSISTENCY = {
    common_pb2.StateOptions.CONSISTENCY_EVENTUAL: "eventual",
    common_pb2.StateOptions.CONSISTENCY_STRONG: "strong",
}
_CONCURRENCY = {
    common_pb2.StateOptions.CONCURRENCY_FIRST_WRITE: "first-write",
    common_pb2.StateOptions.CONCURRENCY_LAST_WRITE: "last-write",
}
BULK_DELETE = "ERR_STATE_BULK_DELETE"


def _options(options: common_pb2.StateOptions) -> dict[str, str]:
    out = {}
    if options.consistency in _CONSISTENCY:
        out["consistency"] = _CONSISTENCY[options.consistency]
    if options.concurrency in _CONCURRENCY:
        out["concurrency"] = _CONCURRENCY[options.concurrency]
    return out


def _item(item: common_pb2.StateItem, code: str) -> dict[str, Any]:
    if not item.key:
        raise NatriumError(code, "state key cannot be empty", status=400)
    body: dict[str, Any] = {"key": item.key, "value": item.value, "metadata": dict(item.metadata)}
    if item.HasField("etag"):
        body["etag"] = item.etag.value
    options = _options(item.options)
    if options:
        body["options"] = options
    return body


class StateRpcs(Rpcs):
    async def _state(self, store: str, operation: str, body: dict[str, Any], code: str, **kwargs: Any) -> Any:
        gateway = self.gateway
        body["appId"] = gateway.config.app_id
        subject = gateway.subjects.block("state", store, operation)
        try:
            return await gateway.bus.request(subject, body, **kwargs)
        except NatriumError as exc:
            raise transport_as(exc, code, Codes.STATE_STORE_NOT_CONFIGURED) from None

    @rpc
    async def GetState(self, request: state_pb2.GetStateRequest, context: Any) -> state_pb2.GetStateResponse:
        body: dict[str, Any] = {"key": request.key, "metadata": dict(request.metadata)}
        if request.consistency in _CONSISTENCY:
            body["consistency"] = _CONSISTENCY[request.consistency]
        reply: GetReply = await self._state(request.store_name, "get", body, Codes.STATE_GET, reply_model=GetReply)
        if not reply.found:
            return state_pb2.GetStateResponse()
        return state_pb2.GetStateResponse(data=reply.data or b"", etag=reply.etag or "", metadata=reply.metadata)

    @rpc
    async def GetBulkState(
        self, request: state_pb2.GetBulkStateRequest, context: Any
    ) -> state_pb2.GetBulkStateResponse:
        if not request.keys:
            return state_pb2.GetBulkStateResponse()
        body: dict[str, Any] = {"keys": list(request.keys), "metadata": dict(request.metadata)}
        if request.parallelism > 0:
            body["parallelism"] = request.parallelism
        reply: BulkGetReply = await self._state(
            request.store_name, "bulkget", body, Codes.STATE_GET, reply_model=BulkGetReply
        )
        items = [
            state_pb2.BulkStateItem(
                key=item.key,
                data=item.data or b"",
                etag=item.etag or "",
                error=item.error or "",
                metadata=item.metadata or {},
            )
            for item in reply.items
        ]
        return state_pb2.GetBulkStateResponse(items=items)

    @rpc
    async def SaveState(self, request: state_pb2.SaveStateRequest, context: Any) -> empty_pb2.Empty:
        items = [_item(item, Codes.STATE_SAVE) for item in request.states]
        if items:
            await self._state(request.store_name, "save", {"items": items, "metadata": {}}, Codes.STATE_SAVE)
        return empty_pb2.Empty()

    async def _delete(self, store: str, item: dict[str, Any]) -> None:
        body = {"key": item["key"], "metadata": item["metadata"]}
        for field in ("etag", "options"):
            if field in item:
                body[field] = item[field]
        await self._state(store, "delete", body, Codes.STATE_DELETE)

    @rpc
    async def DeleteState(self, request: state_pb2.DeleteStateRequest, context: Any) -> empty_pb2.Empty:
        item: dict[str, Any] = {"key": request.key, "metadata": dict(request.metadata)}
        if request.HasField("etag"):
            item["etag"] = request.etag.value
        options = _options(request.options)
        if options:
            item["options"] = options
        await self._delete(request.store_name, item)
        return empty_pb2.Empty()

    @rpc
    async def DeleteBulkState(self, request: state_pb2.DeleteBulkStateRequest, context: Any) -> empty_pb2.Empty:
        # The bus has no bulk delete: one delete per key, as daprd's default BulkDelete does.
        items = [_item(item, BULK_DELETE) for item in request.states]
        results = await asyncio.gather(*(self._delete(request.store_name, i) for i in items), return_exceptions=True)
        for result in results:
            if isinstance(result, NatriumError) and result.code == Codes.STATE_DELETE:
                raise NatriumError(BULK_DELETE, result.message, status=result.status) from None
            if isinstance(result, BaseException):
                raise result
        return empty_pb2.Empty()

    @rpc
    async def ExecuteStateTransaction(
        self, request: state_pb2.ExecuteStateTransactionRequest, context: Any
    ) -> empty_pb2.Empty:
        operations = [
            {"operation": op.operationType, "request": _item(op.request, Codes.STATE_TRANSACTION)}
            for op in request.operations
        ]
        if operations:
            body = {"operations": operations, "metadata": dict(request.metadata)}
            await self._state(request.storeName, "transaction", body, Codes.STATE_TRANSACTION)
        return empty_pb2.Empty()

    @rpc
    async def QueryStateAlpha1(self, request: state_pb2.QueryStateRequest, context: Any) -> Any:
        # The same answer as `/v1.0-alpha1/state/{store}/query`: natrium's KV stores do not query.
        raise NatriumError(
            Codes.STATE_STORE_NOT_SUPPORTED,
            f"state store {request.store_name} does not support the query API",
            status=500,
        )
