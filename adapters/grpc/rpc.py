"""What every RPC of the gRPC adapter shares: the API token check, a server span, and errors.

An RPC method is written as plain async code that raises NatriumError; `@rpc` turns that into
daprd's status (adapters/grpc/errors.py). `Rpcs` holds the Gateway whose bus client, app id,
timeouts and resiliency policies the HTTP gateway uses too: both adapters make the same bus calls.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from grpc import aio
from opentelemetry import trace
from opentelemetry.util.types import AttributeValue

from adapters.gateway.context import Gateway
from adapters.grpc.errors import grpc_status, http_status
from kernel.errors import Codes, NatriumError
from kernel.tracing import extract, fail, span

__all__ = ["Rpcs", "abort", "check_token", "incoming_metadata", "rpc"]

log = logging.getLogger("natrium.grpc")
SERVICE = "dapr.proto.runtime.v1.Dapr"
TOKEN_HEADER = "dapr-api-token"

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


class Rpcs:
    """Base of the servicer's parts: the gateway they speak through, and shutdown."""

    service_name = SERVICE
    """The gRPC service the RPCs belong to (span names and attributes)."""

    def __init__(self, gateway: Gateway, shutdown: asyncio.Event | None = None) -> None:
        self.gateway = gateway
        self.shutdown = shutdown or asyncio.Event()


def incoming_metadata(context: aio.ServicerContext[Any, Any]) -> dict[str, str]:
    """The call's metadata as text (binary `-bin` entries are left out)."""
    out: dict[str, str] = {}
    for key, value in context.invocation_metadata() or ():
        if isinstance(value, str):
            out[key] = f"{out[key]}, {value}" if key in out else value
    return out


async def abort(context: aio.ServicerContext[Any, Any], status: grpc.Status) -> None:
    """End the call with `status`; raises, as `context.abort` does."""
    await context.abort(status.code, status.details, status.trailing_metadata)


async def check_token(
    gateway: Gateway, context: aio.ServicerContext[Any, Any], metadata: dict[str, str] | None = None
) -> None:
    """daprd's rule: with an API token configured every call carries it in `dapr-api-token`."""
    token = gateway.config.api_token
    if not token:
        return
    given = (metadata if metadata is not None else incoming_metadata(context)).get(TOKEN_HEADER)
    if given is None:
        await abort(context, http_status(401, "missing api token in request metadata"))
    elif not hmac.compare_digest(given.encode(), token.encode()):
        await abort(context, http_status(401, "authentication error: api token mismatch"))


def rpc(method: F) -> F:
    """Token check, server span and daprd's error statuses around one unary RPC."""
    name = method.__name__

    @functools.wraps(method)
    async def wrapper(self: Rpcs, request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
        metadata = incoming_metadata(context)
        await check_token(self.gateway, context, metadata)
        attributes = functools.partial(_attributes, self, name)  # built only for a sampled span
        with span(f"/{self.service_name}/{name}", extract(metadata), trace.SpanKind.SERVER, attributes) as active:
            try:
                return await method(self, request, context)
            except NatriumError as exc:
                error = exc
            except aio.AbortError:
                raise
            except Exception as exc:  # one bad call must never take the server down
                log.exception("gRPC call %s failed", name)
                error = NatriumError(Codes.INTERNAL, f"{type(exc).__name__}: {exc}")
            status = grpc_status(error)
            _note_status(active, status.code, error.code)
        await abort(context, status)  # outside the span: the status decides its outcome, not the raise

    return wrapper  # type: ignore[return-value]


# OpenTelemetry's gRPC conventions: a server span fails only for the server's own faults; the
# caller's (INVALID_ARGUMENT, NOT_FOUND, ...) leave it unset, as a 4xx leaves an HTTP span.
_SERVER_FAULTS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


def _note_status(active: trace.Span, code: grpc.StatusCode, error_code: str) -> None:
    if not active.is_recording():
        return
    active.set_attribute("rpc.grpc.status_code", code.value[0])
    if code in _SERVER_FAULTS:
        fail(active, error_code)
    else:
        active.set_attribute("natrium.error_code", error_code)


def _attributes(rpcs: Rpcs, name: str) -> dict[str, AttributeValue]:
    attributes: dict[str, AttributeValue] = {"rpc.system": "grpc", "rpc.service": rpcs.service_name, "rpc.method": name}
    if rpcs.gateway.config.app_id:
        attributes["natrium.app_id"] = rpcs.gateway.config.app_id
    return attributes
