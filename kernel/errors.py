"""The one error type of natrium: a Dapr error code, an HTTP-like status and a retryable flag.

Services raise these; the service base turns them into NATS service error replies; clients turn
those replies back into the same exception; the gateway maps them to HTTP mechanically.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "Codes",
    "NatriumError",
    "bad_request",
    "internal",
    "malformed",
]


class Codes:
    """Dapr's error codes that natrium uses, in one place (values are daprd's)."""

    MALFORMED_REQUEST = "ERR_MALFORMED_REQUEST"
    BODY_READ = "ERR_BODY_READ"
    INTERNAL = "ERR_INTERNAL"
    API_UNIMPLEMENTED = "ERR_API_UNIMPLEMENTED"
    HEALTH_NOT_READY = "ERR_HEALTH_NOT_READY"
    OUTBOUND_HEALTH_NOT_READY = "ERR_OUTBOUND_HEALTH_NOT_READY"
    DIRECT_INVOKE = "ERR_DIRECT_INVOKE"
    # state
    STATE_STORE_NOT_FOUND = "ERR_STATE_STORE_NOT_FOUND"
    STATE_STORE_NOT_CONFIGURED = "ERR_STATE_STORE_NOT_CONFIGURED"
    STATE_GET = "ERR_STATE_GET"
    STATE_SAVE = "ERR_STATE_SAVE"
    STATE_DELETE = "ERR_STATE_DELETE"
    STATE_TRANSACTION = "ERR_STATE_TRANSACTION"
    STATE_TOO_MANY_TRANSACTIONS = "ERR_STATE_STORE_TOO_MANY_TRANSACTIONS"
    NOT_SUPPORTED_STATE_OPERATION = "ERR_NOT_SUPPORTED_STATE_OPERATION"
    STATE_STORE_NOT_SUPPORTED = "ERR_STATE_STORE_NOT_SUPPORTED"
    # pub/sub
    PUBSUB_NOT_FOUND = "ERR_PUBSUB_NOT_FOUND"
    PUBSUB_NOT_CONFIGURED = "ERR_PUBSUB_NOT_CONFIGURED"
    PUBSUB_PUBLISH_MESSAGE = "ERR_PUBSUB_PUBLISH_MESSAGE"
    PUBSUB_EVENTS_SER = "ERR_PUBSUB_EVENTS_SER"
    PUBSUB_REQUEST_METADATA = "ERR_PUBSUB_REQUEST_METADATA"
    PUBSUB_EMPTY = "ERR_PUBSUB_EMPTY"
    TOPIC_NAME_EMPTY = "ERR_TOPIC_NAME_EMPTY"
    # configuration
    CONFIGURATION_STORE_NOT_FOUND = "ERR_CONFIGURATION_STORE_NOT_FOUND"
    CONFIGURATION_STORE_NOT_CONFIGURED = "ERR_CONFIGURATION_STORE_NOT_CONFIGURED"
    CONFIGURATION_GET = "ERR_CONFIGURATION_GET"
    CONFIGURATION_SUBSCRIBE = "ERR_CONFIGURATION_SUBSCRIBE"
    CONFIGURATION_UNSUBSCRIBE = "ERR_CONFIGURATION_UNSUBSCRIBE"
    CONFIGURATION_SET = "ERR_CONFIGURATION_SET"  # natrium's own: Dapr's API has no write
    CONFIGURATION_DELETE = "ERR_CONFIGURATION_DELETE"  # natrium's own
    APP_CHANNEL_NIL = "ERR_APP_CHANNEL_NIL"
    # distributed lock
    LOCK_STORE_NOT_CONFIGURED = "ERR_LOCK_STORE_NOT_CONFIGURED"
    LOCK_STORE_NOT_FOUND = "ERR_LOCK_STORE_NOT_FOUND"
    TRY_LOCK = "ERR_TRY_LOCK"
    UNLOCK = "ERR_UNLOCK"
    # secrets
    SECRET_STORE_NOT_FOUND = "ERR_SECRET_STORE_NOT_FOUND"
    SECRET_STORES_NOT_CONFIGURED = "ERR_SECRET_STORES_NOT_CONFIGURED"
    SECRET_GET = "ERR_SECRET_GET"
    PERMISSION_DENIED = "ERR_PERMISSION_DENIED"
    SECRET_PUT = "ERR_SECRET_PUT"  # natrium's own: Dapr's API has no write
    SECRET_DELETE = "ERR_SECRET_DELETE"  # natrium's own
    # bindings
    INVOKE_OUTPUT_BINDING = "ERR_INVOKE_OUTPUT_BINDING"
    # actors (statuses as daprd: most are 500; instance missing / no app channel / no placement 400)
    ACTOR_INSTANCE_MISSING = "ERR_ACTOR_INSTANCE_MISSING"
    ACTOR_INVOKE_METHOD = "ERR_ACTOR_INVOKE_METHOD"
    ACTOR_RUNTIME_NOT_FOUND = "ERR_ACTOR_RUNTIME_NOT_FOUND"
    ACTOR_STATE_GET = "ERR_ACTOR_STATE_GET"
    ACTOR_STATE_TRANSACTION_SAVE = "ERR_ACTOR_STATE_TRANSACTION_SAVE"
    ACTOR_REMINDER_CREATE = "ERR_ACTOR_REMINDER_CREATE"
    ACTOR_REMINDER_GET = "ERR_ACTOR_REMINDER_GET"
    ACTOR_REMINDER_DELETE = "ERR_ACTOR_REMINDER_DELETE"
    ACTOR_REMINDER_NOT_FOUND = "ERR_ACTOR_REMINDER_NOT_FOUND"
    ACTOR_REMINDER_ALREADY_EXISTS = "ERR_ACTOR_REMINDER_ALREADY_EXISTS"
    ACTOR_REMINDER_NON_HOSTED = "ERR_ACTOR_REMINDER_NON_HOSTED"
    ACTOR_TIMER_CREATE = "ERR_ACTOR_TIMER_CREATE"
    ACTOR_TIMER_DELETE = "ERR_ACTOR_TIMER_DELETE"  # natrium's own: daprd's timer delete never fails
    ACTOR_NO_APP_CHANNEL = "ERR_ACTOR_NO_APP_CHANNEL"
    ACTOR_STACK_DEPTH = "ERR_ACTOR_STACK_DEPTH"
    ACTOR_NO_PLACEMENT = "ERR_ACTOR_NO_PLACEMENT"
    ACTOR_RUNTIME_CLOSED = "ERR_ACTOR_RUNTIME_CLOSED"
    ACTOR_NO_ADDRESS = "ERR_ACTOR_NO_ADDRESS"
    BAD_REQUEST = "ERR_BAD_REQUEST"
    # workflow
    WORKFLOW_COMPONENT_NOT_FOUND = "ERR_WORKFLOW_COMPONENT_NOT_FOUND"
    WORKFLOW_NAME_MISSING = "ERR_WORKFLOW_NAME_MISSING"
    INSTANCE_ID_INVALID = "ERR_INSTANCE_ID_INVALID"
    INSTANCE_ID_TOO_LONG = "ERR_INSTANCE_ID_TOO_LONG"
    INSTANCE_ID_NOT_FOUND = "ERR_INSTANCE_ID_NOT_FOUND"
    START_WORKFLOW = "ERR_START_WORKFLOW"
    GET_WORKFLOW = "ERR_GET_WORKFLOW"
    TERMINATE_WORKFLOW = "ERR_TERMINATE_WORKFLOW"
    PAUSE_WORKFLOW = "ERR_PAUSE_WORKFLOW"
    RESUME_WORKFLOW = "ERR_RESUME_WORKFLOW"
    PURGE_WORKFLOW = "ERR_PURGE_WORKFLOW"
    RAISE_EVENT_WORKFLOW = "ERR_RAISE_EVENT_WORKFLOW"
    # natrium's own, for what daprd has no code for
    NATS_UNREACHABLE = "ERR_NATS_UNREACHABLE"
    NO_RESPONDERS = "ERR_NO_RESPONDERS"
    TIMEOUT = "ERR_TIMEOUT"
    REQUEST_TOO_LARGE = "ERR_REQUEST_TOO_LARGE"
    COMPONENT_INVALID = "ERR_COMPONENT_INVALID"


class NatriumError(Exception):
    """A failed request, as a value: `code` is Dapr's `errorCode`, `status` the HTTP status."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status: int = 500,
        retryable: bool = False,
        details: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.retryable = retryable
        self.details = details or []

    def to_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"errorCode": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body

    @classmethod
    def from_body(cls, status: int, body: Any, fallback_message: str = "") -> NatriumError:
        """Rebuild the error from a service error reply (status from the micro error header)."""
        if isinstance(body, dict) and "errorCode" in body:
            return cls(
                str(body["errorCode"]),
                str(body.get("message", fallback_message)),
                status=status,
                retryable=bool(body.get("retryable", False)),
                details=body.get("details") or None,
            )
        return cls("ERR_INTERNAL", fallback_message or "service error", status=status)

    def __repr__(self) -> str:
        return f"NatriumError({self.code!r}, {self.message!r}, status={self.status})"


def malformed(message: str) -> NatriumError:
    return NatriumError(Codes.MALFORMED_REQUEST, message, status=400)


def bad_request(code: str, message: str) -> NatriumError:
    return NatriumError(code, message, status=400)


def internal(message: str) -> NatriumError:
    return NatriumError(Codes.INTERNAL, message, status=500, retryable=True)
