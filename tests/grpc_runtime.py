"""Helpers for the gRPC tests: the official `DaprClient` pointed at a natrium process, and status checks."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import grpc
import pytest
from dapr.clients import DaprClient
from google.rpc import error_details_pb2
from grpc_status import rpc_status


@contextmanager
def dapr_client(http_port: int, grpc_port: int, token: str | None = None, invoke: str = "grpc") -> Iterator[DaprClient]:
    """`DaprClient()` as an app under daprd builds it: ports (and token) from `DAPR_*` variables,
    which the SDK reads at every use. It polls `/v1.0/healthz/outbound` over HTTP before anything."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("DAPR_HTTP_PORT", str(http_port))
        env.setenv("DAPR_GRPC_PORT", str(grpc_port))
        env.setenv("DAPR_API_METHOD_INVOCATION_PROTOCOL", invoke)
        env.setenv("DAPR_HEALTH_TIMEOUT", "20")
        if token:
            env.setenv("DAPR_API_TOKEN", token)
        else:
            env.delenv("DAPR_API_TOKEN", raising=False)
        with DaprClient() as client:
            yield client


def error_reason(error: grpc.RpcError) -> str:
    """The `google.rpc.ErrorInfo` reason of a failed call ("" without one); the SDK's own
    `DaprGrpcError` or a raw stub's error."""
    getter = getattr(error, "get_grpc_status", None)
    status = getter() if getter else rpc_status.from_call(error)  # type: ignore[arg-type]
    for detail in status.details if status else ():
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            assert info.domain == "dapr.io"
            return str(info.reason)
    return ""
