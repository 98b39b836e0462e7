"""Health, metadata and shutdown: what the SDKs poll before they send anything else."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from adapters.gateway.context import Gateway, gateway_of
from kernel import __version__
from kernel.discovery import discover
from kernel.errors import Codes, NatriumError

__all__ = ["routes", "SHUTDOWN", "metadata_document"]

SHUTDOWN = web.AppKey("shutdown", asyncio.Event)


async def healthz(request: web.Request) -> web.Response:
    gateway = gateway_of(request)
    if not gateway.nc.is_connected:
        raise NatriumError(Codes.HEALTH_NOT_READY, "not connected to NATS", status=500)
    app_id = request.query.get("appid")
    if app_id and app_id != gateway.config.app_id:
        raise NatriumError("ERR_HEALTH_APPID_NOT_MATCH", f"app id {app_id} does not match", status=500)
    return web.Response(status=204)


async def healthz_outbound(request: web.Request) -> web.Response:
    if not gateway_of(request).nc.is_connected:
        raise NatriumError(Codes.OUTBOUND_HEALTH_NOT_READY, "not connected to NATS", status=500)
    return web.Response(status=204)


async def metadata(request: web.Request) -> web.Response:
    """Dapr's metadata document, built from what the block services announce in `$SRV.INFO`."""
    return web.json_response(await metadata_document(gateway_of(request)))


async def metadata_document(gateway: Gateway) -> dict[str, Any]:
    """The `/v1.0/metadata` body; the gRPC `GetMetadata` answers the same document."""
    services = await discover(gateway.nc) if gateway.nc.is_connected else []
    root = gateway.subjects.root
    components: dict[str, dict[str, Any]] = {}
    replicas: dict[str, dict[str, Any]] = {}
    for info in services:
        meta = info.get("metadata") or {}
        if meta.get("natrium.root") != root:
            continue
        for component in json.loads(meta.get("natrium.components", "[]")):
            components[component["name"]] = component
        entry = replicas.setdefault(info["name"], {"name": info["name"], "version": info.get("version"), "replicas": 0})
        entry["replicas"] += 1
    body = {
        "id": gateway.config.app_id or "",
        "runtimeVersion": f"natrium-{__version__}",
        "enabledFeatures": [],
        "actors": _active_actors(gateway),
        "components": sorted(components.values(), key=lambda c: c["name"]),
        "httpEndpoints": [],
        "subscriptions": list(gateway.subscriptions),
        "extended": {**gateway.extended_metadata, "natrium.root": root},
        "appConnectionProperties": gateway.app_connection,
        **_actor_runtime(gateway),
        "natrium": {"services": sorted(replicas.values(), key=lambda s: s["name"])},
    }
    return body


def _active_actors(gateway: Gateway) -> list[dict[str, Any]]:
    host = gateway.actor_host
    if host is None:
        return []
    return [{"type": t, "count": n} for t, n in sorted(host.active_actors().items())]


def _actor_runtime(gateway: Gateway) -> dict[str, Any]:
    """daprd's `actorRuntime` block, for an app that hosts actors."""
    host = gateway.actor_host
    if host is None:
        return {}
    runtime = {"runtimeStatus": "RUNNING", "activeActors": _active_actors(gateway), "hostReady": host.hosting}
    return {"actorRuntime": {**runtime, "placement": "connected"}}


async def set_metadata(request: web.Request) -> web.Response:
    gateway_of(request).extended_metadata[request.match_info["key"]] = await request.text()
    return web.Response(status=204)


async def shutdown(request: web.Request) -> web.Response:
    request.app[SHUTDOWN].set()
    return web.Response(status=204)


def routes() -> list[web.RouteDef]:
    return [
        web.get("/v1.0/healthz", healthz),
        web.get("/v1.0/healthz/outbound", healthz_outbound),
        web.get("/v1.0/metadata", metadata),
        web.put("/v1.0/metadata/{key}", set_metadata),
        web.post("/v1.0/shutdown", shutdown),
    ]
