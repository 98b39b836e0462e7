"""The long-running processes: one block service, or the gateway, until told to stop."""

from __future__ import annotations

import asyncio
import logging

from adapters import resiliency
from adapters.gateway.app import run_gateway
from adapters.gateway.context import Gateway, GatewayConfig
from kernel.components import load_components
from kernel.connection import ConnectionSettings, close_gracefully, connect, require_jetstream_server
from kernel.metrics import HEALTH
from kernel.subjects import Subjects
from services import block_service

__all__ = ["serve_block", "serve_gateway"]

log = logging.getLogger("natrium.serve")


async def serve_block(
    block: str,
    settings: ConnectionSettings,
    components_dir: str | None,
    root: str,
    max_concurrency: int,
    stop: asyncio.Event,
) -> None:
    components = load_components(components_dir)
    nc = await connect(settings)
    try:
        require_jetstream_server(nc, settings.url)
        service = block_service(block)(
            nc, subjects=Subjects(root), max_concurrency=max_concurrency, components=components
        )
        await service.start()
        HEALTH.set_check(lambda: nc.is_connected)
        try:
            await stop.wait()
        finally:
            HEALTH.set_check(None)
            await service.stop()
    finally:
        await close_gracefully(nc)


async def serve_gateway(
    settings: ConnectionSettings,
    config: GatewayConfig,
    root: str,
    components_dir: str | None,
    stop: asyncio.Event,
    grpc_port: int = 0,
) -> None:
    # The gateway reads only the Resiliency resources: it calls apps, the blocks own their components.
    policies = resiliency.from_resources(load_components(components_dir).resources, config.app_id)
    nc = await connect(settings)
    HEALTH.set_check(lambda: nc.is_connected)
    try:
        await run_gateway(Gateway(nc, config, Subjects(root), resiliency=policies), stop, grpc_port)
    finally:
        await close_gracefully(nc)
