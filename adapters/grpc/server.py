"""Dapr's gRPC API (`dapr.proto.runtime.v1.Dapr`, the stubs the official `dapr` package ships) on grpc.aio.

A second thin adapter beside the HTTP gateway: every RPC is the bus request the matching HTTP
route makes, through the same `Gateway`. An RPC natrium does not serve yet answers UNIMPLEMENTED,
naming itself, rather than the generated stub's bare "Method not implemented!".
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from dapr.proto.runtime.v1 import dapr_pb2_grpc
from grpc import aio

from adapters.gateway.context import Gateway
from adapters.grpc.actors import ActorRpcs
from adapters.grpc.blocks import BlockRpcs
from adapters.grpc.configuration import ConfigurationRpcs
from adapters.grpc.errors import grpc_status
from adapters.grpc.messaging import MessagingRpcs
from adapters.grpc.rpc import SERVICE, abort, check_token
from adapters.grpc.state import StateRpcs
from adapters.grpc.streaming import StreamingRpcs
from adapters.grpc.workflow import WorkflowRpcs
from kernel.errors import Codes, NatriumError

__all__ = ["DaprService", "UNSERVED", "start_grpc_server", "stop_grpc_server"]

log = logging.getLogger("natrium.grpc")


class DaprService(
    StateRpcs,
    MessagingRpcs,
    StreamingRpcs,
    ConfigurationRpcs,
    BlockRpcs,
    ActorRpcs,
    WorkflowRpcs,
    dapr_pb2_grpc.DaprServicer,
):
    """The `Dapr` service; methods natrium does not serve are filled in below the class."""

    def __init__(self, gateway: Gateway, shutdown: asyncio.Event | None = None) -> None:
        super().__init__(gateway, shutdown)
        self._streams = {}


def _unserved(name: str) -> Any:
    async def answer(self: DaprService, request: Any, context: aio.ServicerContext[Any, Any]) -> None:
        await check_token(self.gateway, context)
        message = f"natrium does not serve {SERVICE}/{name} yet"
        await abort(context, grpc_status(NatriumError(Codes.API_UNIMPLEMENTED, message, status=501)))

    answer.__name__ = answer.__qualname__ = name
    return answer


def _served(name: str) -> bool:
    return any(name in vars(cls) for cls in DaprService.__mro__ if cls is not dapr_pb2_grpc.DaprServicer)


UNSERVED = tuple(name for name in vars(dapr_pb2_grpc.DaprServicer) if not name.startswith("_") and not _served(name))
"""The RPCs of the generated servicer this adapter answers with UNIMPLEMENTED."""
for _name in UNSERVED:
    setattr(DaprService, _name, _unserved(_name))


async def start_grpc_server(
    gateway: Gateway, port: int, host: str | None = None, shutdown: asyncio.Event | None = None
) -> tuple[aio.Server, int]:
    """Listen on `host:port` (port 0: one the OS picks, bound at once); returns the server, which
    the caller owns and stops, and the port it listens on."""
    limit = gateway.config.max_body_size
    server = aio.server(options=[("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)])
    dapr_pb2_grpc.add_DaprServicer_to_server(DaprService(gateway, shutdown), server)
    _add_task_hub(gateway, server, shutdown)
    address = f"{host or gateway.config.host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:
        bound, error = 0, str(exc)
    else:
        error = "address in use"
    if not bound:
        raise NatriumError("ERR_PORT_IN_USE", f"cannot listen for gRPC on {address}: {error}")
    await server.start()
    log.info("gRPC API listening", extra={"address": f"{host or gateway.config.host}:{bound}"})
    return server, bound


def _add_task_hub(gateway: Gateway, server: aio.Server, shutdown: asyncio.Event | None) -> None:
    """The Durable Task protocol beside the Dapr service, when the installed `dapr` ships its stubs."""
    try:
        from adapters.grpc.taskhub import add_to_server
    except ImportError as exc:
        log.warning("workflow SDKs cannot connect: %s", exc)
        return
    add_to_server(gateway, server, shutdown)


async def stop_grpc_server(server: aio.Server, grace: float = 5.0) -> None:
    await server.stop(grace)
