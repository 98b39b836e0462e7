"""The HTTP gateway: Dapr's HTTP API v1.0, every call turned into one bus request.

It holds no state and never touches JetStream itself; run as many copies as you like.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial

from aiohttp import web
from opentelemetry import trace
from opentelemetry.util.types import AttributeValue

from adapters.gateway import actors, bindings, configuration, health, invoke, lock, pubsub, secrets, state
from adapters.gateway import workflow as workflow_routes
from adapters.gateway.context import GATEWAY, Gateway
from adapters.gateway.errors import error_response
from kernel.errors import Codes, NatriumError
from kernel.metrics import METRICS, UNMATCHED_ROUTE
from kernel.tracing import extract, fail, span

__all__ = ["build_app", "run_gateway", "start_gateway"]

log = logging.getLogger("natrium.gateway")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# One module per building block, each with a `routes()`; add a block's module here.
ROUTES = (health, state, pubsub, invoke, configuration, lock, secrets, actors, bindings, workflow_routes)
_OPEN_PATHS = frozenset({"/v1.0/healthz", "/v1.0/healthz/outbound"})


def gateway_middleware(token: str | None) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Token check, metrics, trace context and Dapr error bodies in one layer: each aiohttp middleware
    layer costs a coroutine call per request on the hot path."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        resource = request.match_info.route.resource
        # The route template, never the raw path: label values must stay a bounded set.
        route = resource.canonical if resource else UNMATCHED_ROUTE
        status = 500
        try:
            if token and request.path.rstrip("/") not in _OPEN_PATHS:
                given = request.headers.get("dapr-api-token", "")
                if not hmac.compare_digest(given.encode(), token.encode()):
                    status = 401
                    # daprd answers a bad token in plain text, not JSON.
                    return web.Response(status=401, text="invalid api token")
            name = f"{request.method} {resource.canonical if resource else request.path}"
            attributes = partial(_http_attributes, request)
            with span(name, extract(request.headers), trace.SpanKind.SERVER, attributes) as active:
                response = await _answer(request, handler)
                status = response.status
                if active.is_recording():
                    active.set_attribute("http.response.status_code", response.status)
                    if status >= 500:  # a 4xx is the caller's mistake, not a failed server span
                        fail(active, f"HTTP {status}")
                return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            METRICS.http_answered(route, request.method, status, time.perf_counter() - started)

    return middleware


def _http_attributes(request: web.Request) -> dict[str, AttributeValue]:
    resource = request.match_info.route.resource
    attributes: dict[str, AttributeValue] = {"http.request.method": request.method, "url.path": request.path}
    if resource is not None:
        attributes["http.route"] = resource.canonical
    app_id = request.app[GATEWAY].config.app_id
    if app_id:
        attributes["natrium.app_id"] = app_id
    return attributes


async def _answer(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except NatriumError as exc:
        return error_response(exc)
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[GATEWAY].config.max_body_size
        return error_response(
            NatriumError(Codes.BODY_READ, f"request body is over the {limit} byte limit (--max-body-size)", status=413)
        )
    except web.HTTPNotFound:
        return error_response(
            NatriumError(Codes.DIRECT_INVOKE, f"no Dapr API route for {request.method} {request.path}", status=404)
        )
    except web.HTTPMethodNotAllowed:
        return error_response(
            NatriumError(
                Codes.MALFORMED_REQUEST,
                f"method {request.method} is not allowed on {request.path}",
                status=405,
            )
        )
    except web.HTTPException:
        raise
    except Exception as exc:  # one bad request must never take the gateway down
        log.exception("request failed", extra={"path": request.path})
        return error_response(NatriumError(Codes.INTERNAL, f"{type(exc).__name__}: {exc}", status=500))


def build_app(gateway: Gateway) -> web.Application:
    app = web.Application(
        client_max_size=gateway.config.max_body_size,
        middlewares=[gateway_middleware(gateway.config.api_token)],
    )
    app[GATEWAY] = gateway
    app[health.SHUTDOWN] = asyncio.Event()
    app.on_cleanup.append(actors.close)
    for block in ROUTES:
        app.add_routes(block.routes())
    app.add_routes(invoke.fallthrough_routes())
    return app


async def start_gateway(gateway: Gateway) -> web.AppRunner:
    """Listen; the caller owns the returned runner and calls `cleanup()` to stop."""
    runner = web.AppRunner(build_app(gateway), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, gateway.config.host, gateway.config.http_port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise NatriumError(
            "ERR_PORT_IN_USE",
            f"cannot listen on {gateway.config.host}:{gateway.config.http_port}: {exc.strerror}",
        ) from None
    if not gateway.config.http_port:  # port 0: the one the OS gave, held from bind to serve (no race)
        gateway.config.http_port = int(runner.addresses[0][1])
    log.info("gateway listening", extra={"host": gateway.config.host, "port": gateway.config.http_port})
    return runner


async def run_gateway(gateway: Gateway, stop: asyncio.Event, grpc_port: int = 0) -> None:
    """Serve until `stop` is set or a client asks `POST /v1.0/shutdown` (or gRPC `Shutdown`);
    with `grpc_port`, Dapr's gRPC API (adapters/grpc) is served beside the HTTP one."""
    runner = await start_gateway(gateway)
    shutdown = runner.app[health.SHUTDOWN]
    grpc_server = None
    if grpc_port:
        from adapters.grpc.server import start_grpc_server, stop_grpc_server

        try:
            grpc_server, _ = await start_grpc_server(gateway, grpc_port, shutdown=shutdown)
        except BaseException:
            await runner.cleanup()
            raise
    waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(shutdown.wait())]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        if grpc_server is not None:
            await stop_grpc_server(grpc_server)
        await runner.cleanup()
