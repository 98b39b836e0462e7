"""NatriumError as the gRPC status daprd would answer: its code, its message, its `ErrorInfo`.

Codes follow daprd's tables (pkg/messages/predefined.go, pkg/api/errors): a store that does not
exist is INVALID_ARGUMENT, one not configured FAILED_PRECONDITION, an ETag mismatch ABORTED and an
invalid ETag INVALID_ARGUMENT. Every status carries a `google.rpc.ErrorInfo` (domain `dapr.io`)
whose reason is daprd's: its `DAPR_*` reason where daprd has one, else the `ERR_*` code.
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from kernel.errors import Codes, NatriumError

__all__ = ["DOMAIN", "grpc_status", "http_status", "status_code"]

DOMAIN = "dapr.io"
C = grpc.StatusCode

# errorCode -> (gRPC code, ErrorInfo reason when it is not the errorCode itself)
_BY_CODE: dict[str, tuple[grpc.StatusCode, str | None]] = {
    Codes.MALFORMED_REQUEST: (C.INVALID_ARGUMENT, None),
    Codes.BAD_REQUEST: (C.INVALID_ARGUMENT, None),
    Codes.BODY_READ: (C.INVALID_ARGUMENT, None),
    Codes.API_UNIMPLEMENTED: (C.UNIMPLEMENTED, None),
    Codes.DIRECT_INVOKE: (C.INTERNAL, None),
    Codes.HEALTH_NOT_READY: (C.INTERNAL, None),
    Codes.OUTBOUND_HEALTH_NOT_READY: (C.INTERNAL, None),
    # state
    Codes.STATE_STORE_NOT_FOUND: (C.INVALID_ARGUMENT, "DAPR_STATE_NOT_FOUND"),
    Codes.STATE_STORE_NOT_CONFIGURED: (C.FAILED_PRECONDITION, "DAPR_STATE_NOT_CONFIGURED"),
    Codes.STATE_TOO_MANY_TRANSACTIONS: (C.INVALID_ARGUMENT, "DAPR_STATE_TOO_MANY_TRANSACTIONS"),
    Codes.NOT_SUPPORTED_STATE_OPERATION: (C.UNIMPLEMENTED, None),
    # natrium's stores do transactions, so "not supported" is only ever the query API
    Codes.STATE_STORE_NOT_SUPPORTED: (C.INTERNAL, "DAPR_STATE_QUERYING_NOT_SUPPORTED"),
    Codes.STATE_GET: (C.INTERNAL, None),
    Codes.STATE_TRANSACTION: (C.INTERNAL, None),
    # pub/sub
    Codes.PUBSUB_NOT_FOUND: (C.INVALID_ARGUMENT, "DAPR_PUBSUB_NOT_FOUND"),
    Codes.PUBSUB_NOT_CONFIGURED: (C.FAILED_PRECONDITION, "DAPR_PUBSUB_NOT_CONFIGURED"),
    Codes.PUBSUB_EMPTY: (C.INVALID_ARGUMENT, "DAPR_PUBSUB_NAME_EMPTY"),
    Codes.TOPIC_NAME_EMPTY: (C.INVALID_ARGUMENT, "DAPR_PUBSUB_TOPIC_NAME_EMPTY"),
    Codes.PUBSUB_PUBLISH_MESSAGE: (C.INTERNAL, "DAPR_PUBSUB_PUBLISH_MESSAGE"),
    Codes.PUBSUB_REQUEST_METADATA: (C.INVALID_ARGUMENT, "DAPR_PUBSUB_METADATA_DESERIALIZATION"),
    Codes.PUBSUB_EVENTS_SER: (C.INVALID_ARGUMENT, "DAPR_PUBSUB_MARSHAL_EVENTS"),
    "ERR_PUBSUB_FORBIDDEN": (C.PERMISSION_DENIED, "DAPR_PUBSUB_FORBIDDEN"),
    # configuration
    Codes.CONFIGURATION_STORE_NOT_CONFIGURED: (C.FAILED_PRECONDITION, None),
    Codes.CONFIGURATION_STORE_NOT_FOUND: (C.INVALID_ARGUMENT, None),
    Codes.CONFIGURATION_GET: (C.INTERNAL, None),
    Codes.CONFIGURATION_SUBSCRIBE: (C.INVALID_ARGUMENT, None),
    # lock
    Codes.LOCK_STORE_NOT_CONFIGURED: (C.FAILED_PRECONDITION, None),
    Codes.LOCK_STORE_NOT_FOUND: (C.INVALID_ARGUMENT, None),
    Codes.TRY_LOCK: (C.INTERNAL, None),
    Codes.UNLOCK: (C.INTERNAL, None),
    # secrets
    Codes.SECRET_STORES_NOT_CONFIGURED: (C.FAILED_PRECONDITION, None),
    Codes.SECRET_STORE_NOT_FOUND: (C.INVALID_ARGUMENT, None),
    Codes.PERMISSION_DENIED: (C.PERMISSION_DENIED, None),
    Codes.SECRET_GET: (C.INTERNAL, None),
    # bindings
    Codes.INVOKE_OUTPUT_BINDING: (C.INTERNAL, None),
    # actors
    Codes.ACTOR_REMINDER_NON_HOSTED: (C.PERMISSION_DENIED, None),
    Codes.ACTOR_NO_APP_CHANNEL: (C.UNAVAILABLE, None),
    Codes.ACTOR_REMINDER_NOT_FOUND: (C.NOT_FOUND, None),
    Codes.ACTOR_REMINDER_ALREADY_EXISTS: (C.ALREADY_EXISTS, None),
    Codes.ACTOR_STACK_DEPTH: (C.RESOURCE_EXHAUSTED, None),
    Codes.ACTOR_NO_PLACEMENT: (C.UNAVAILABLE, None),
    Codes.ACTOR_RUNTIME_CLOSED: (C.UNAVAILABLE, None),
    Codes.ACTOR_NO_ADDRESS: (C.FAILED_PRECONDITION, None),
    # workflow
    Codes.WORKFLOW_COMPONENT_NOT_FOUND: (C.INVALID_ARGUMENT, None),
    Codes.WORKFLOW_NAME_MISSING: (C.INVALID_ARGUMENT, None),
    Codes.INSTANCE_ID_INVALID: (C.INVALID_ARGUMENT, None),
    Codes.INSTANCE_ID_TOO_LONG: (C.INVALID_ARGUMENT, None),
    Codes.INSTANCE_ID_NOT_FOUND: (C.NOT_FOUND, None),
    # natrium's own transport failures
    Codes.NO_RESPONDERS: (C.UNAVAILABLE, None),
    Codes.TIMEOUT: (C.DEADLINE_EXCEEDED, None),
    Codes.REQUEST_TOO_LARGE: (C.RESOURCE_EXHAUSTED, None),
}

# State writes keep daprd's ETag rule: a mismatch (409 on the bus) is ABORTED, a malformed ETag
# (400) INVALID_ARGUMENT, anything else INTERNAL.
_ETAG_CHECKED = {Codes.STATE_SAVE, Codes.STATE_DELETE, "ERR_STATE_BULK_DELETE"}

# daprd's CodeFromHTTPStatus, used for an HTTP status without a more precise rule.
_BY_HTTP: dict[int, grpc.StatusCode] = {
    400: C.INTERNAL,
    401: C.UNAUTHENTICATED,
    403: C.PERMISSION_DENIED,
    404: C.NOT_FOUND,
    408: C.CANCELLED,
    409: C.ALREADY_EXISTS,
    429: C.RESOURCE_EXHAUSTED,
    500: C.UNKNOWN,
    501: C.UNIMPLEMENTED,
    503: C.UNAVAILABLE,
    504: C.DEADLINE_EXCEEDED,
}


def status_code(error: NatriumError) -> grpc.StatusCode:
    if error.code in _ETAG_CHECKED:
        return {409: C.ABORTED, 400: C.INVALID_ARGUMENT}.get(error.status, C.INTERNAL)
    known = _BY_CODE.get(error.code)
    if known is not None:
        return known[0]
    # A code daprd has no table entry for: the client's mistakes stay the client's.
    return {400: C.INVALID_ARGUMENT, 403: C.PERMISSION_DENIED, 404: C.NOT_FOUND, 409: C.ABORTED}.get(
        error.status, C.INTERNAL
    )


def _status(code: grpc.StatusCode, message: str, reason: str, metadata: dict[str, str]) -> grpc.Status:
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata))
    proto = status_pb2.Status(code=code.value[0], message=message, details=[detail])
    return rpc_status.to_status(proto)


def grpc_status(error: NatriumError, metadata: dict[str, str] | None = None) -> grpc.Status:
    """The status (code, message, ErrorInfo in `grpc-status-details-bin`) for `error`."""
    known = _BY_CODE.get(error.code)
    reason = known[1] if known and known[1] else error.code
    return _status(status_code(error), error.message, reason, metadata or {})


def http_status(status: int, detail: str) -> grpc.Status:
    """daprd's answer for an HTTP failure seen over gRPC (a callee's status, a bad API token):
    the mapped code, the status text, and an ErrorInfo with `http.code` / `http.error_message`."""
    from http import HTTPStatus

    try:
        text = HTTPStatus(status).phrase
    except ValueError:
        text = str(status)
    code = _BY_HTTP.get(status, C.UNKNOWN)
    # daprd cuts the detail to 63 characters: gRPC metadata values must stay small.
    return _status(code, text, text, {"http.code": str(status), "http.error_message": detail[:63]})
