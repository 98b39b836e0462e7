"""JSON Schema of every bus request and reply, per block, with the subjects they travel on."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from schemas import configuration, lock, secrets, state
from schemas import workflow as wf

__all__ = ["export_all"]

# block -> operation -> (request model, reply model or None for an empty reply)
CONTRACT: dict[str, dict[str, tuple[type[BaseModel], type[BaseModel] | None]]] = {
    "state": {
        "get": (state.GetRequest, state.GetReply),
        "bulkget": (state.BulkGetRequest, state.BulkGetReply),
        "save": (state.SaveRequest, state.SaveReply),
        "delete": (state.DeleteRequest, None),
        "transaction": (state.TransactionRequest, None),
    },
    "secrets": {
        "get": (secrets.GetSecretRequest, secrets.GetSecretReply),
        "bulk": (secrets.BulkSecretRequest, secrets.BulkSecretReply),
        "put": (secrets.PutSecretRequest, None),
        "delete": (secrets.DeleteSecretRequest, None),
        "list": (secrets.ListSecretsRequest, secrets.ListSecretsReply),
    },
    "lock": {
        "lock": (lock.LockRequest, lock.LockReply),
        "unlock": (lock.UnlockRequest, lock.UnlockReply),
    },
    "configuration": {
        "get": (configuration.GetRequest, configuration.GetReply),
        "set": (configuration.SetRequest, configuration.SetReply),
        "delete": (configuration.DeleteRequest, configuration.DeleteReply),
        "subscribe": (configuration.SubscribeRequest, configuration.SubscribeReply),
        "unsubscribe": (configuration.UnsubscribeRequest, configuration.UnsubscribeReply),
    },
    "workflow": {
        "start": (wf.StartRequest, wf.StartReply),
        "get": (wf.InstanceRequest, wf.InstanceState),
        "raise": (wf.RaiseEventRequest, None),
        "terminate": (wf.TerminateRequest, None),
        "pause": (wf.InstanceRequest, None),
        "resume": (wf.InstanceRequest, None),
        "purge": (wf.InstanceRequest, None),
        "list": (wf.ListRequest, wf.ListReply),
        "history": (wf.InstanceRequest, wf.HistoryReply),
        "complete_orchestration": (wf.CompleteOrchestrationRequest, wf.CompleteOrchestrationReply),
        "complete_activity": (wf.CompleteActivityRequest, None),
    },
}


def export_all() -> dict[str, Any]:
    documents: dict[str, Any] = {}
    for block, operations in CONTRACT.items():
        ops: dict[str, Any] = {}
        for operation, (request, reply) in operations.items():
            ops[operation] = {
                "subject": f"<root>.{block}.<component>.{operation}",
                "request": request.model_json_schema(by_alias=True),
                "reply": reply.model_json_schema(by_alias=True, mode="serialization") if reply else None,
            }
        documents[block] = {
            "$comment": "Bodies are msgpack, or JSON with header Content-Type: application/json. Errors "
            "carry headers Nats-Service-Error / Nats-Service-Error-Code and body {errorCode, message}.",
            "operations": ops,
        }
    return documents
