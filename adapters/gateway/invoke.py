"""`/v1.0/invoke/{app}/method/{method}` and the `dapr-app-id` header: one bus request per call.

The callee's status, headers and body come back unchanged; the raw query string and the headers
(minus hop-by-hop ones) go through. Any path the gateway does not serve falls through to
invocation when it carries `dapr-app-id`, as in daprd.
"""

from __future__ import annotations

from aiohttp import web

from adapters.gateway.context import gateway_of
from adapters.invocation import InvokeRequest, forwardable, http_headers, invoke
from kernel.errors import Codes, NatriumError

__all__ = ["routes", "fallthrough_routes"]


async def _call(request: web.Request, app_id: str, method: str) -> web.Response:
    gateway = gateway_of(request)
    call = InvokeRequest(
        app_id=app_id,
        method="/" + method.lstrip("/"),
        verb=request.method,
        query=request.query_string,
        headers=forwardable(request.headers),
        body=await request.read(),
        caller=gateway.config.app_id,
    )
    policy = gateway.resiliency.for_app(app_id)
    response = await invoke(gateway.nc, gateway.subjects, call, timeout=gateway.config.invoke_timeout, policy=policy)
    return web.Response(status=response.status, body=response.body, headers=http_headers(response.headers))


async def invoke_route(request: web.Request) -> web.Response:
    app_id = request.match_info["app"]
    if not app_id:
        raise NatriumError(
            Codes.DIRECT_INVOKE, "failed getting app id either from the URL path or the header", status=404
        )
    return await _call(request, app_id, request.match_info["method"])


async def fallthrough(request: web.Request) -> web.Response:
    app_id = request.headers.get("dapr-app-id")
    if not app_id:
        raise NatriumError(Codes.DIRECT_INVOKE, f"no Dapr API route for {request.method} {request.path}", status=404)
    return await _call(request, app_id, request.path)


def routes() -> list[web.RouteDef]:
    return [web.route("*", "/v1.0/invoke/{app}/method/{method:.*}", invoke_route)]


def fallthrough_routes() -> list[web.RouteDef]:
    """Registered after every other route: whatever is left goes to invocation."""
    return [web.route("*", "/{tail:.*}", fallthrough)]
