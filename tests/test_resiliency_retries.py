"""App retry policies over a real bus: exponential back-off, maxRetries, and `matching` codes that
choose which failed answers are worth another try."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from nats.aio.client import Client

from adapters import resiliency
from adapters.invocation import InvocationServer, InvokeRequest, InvokeResponse, invoke
from kernel.errors import Codes, NatriumError
from kernel.subjects import Subjects
from tests.conftest import unique


def policy(retry: dict[str, Any], app_id: str) -> resiliency.AppPolicy:
    doc = {
        "kind": "Resiliency",
        "metadata": {"name": "r"},
        "spec": {"policies": {"retries": {"again": retry}}, "targets": {"apps": {app_id: {"retry": "again"}}}},
    }
    found = resiliency.from_resources([doc]).for_app(app_id)
    assert found is not None
    return found


@pytest.fixture
async def callee(nc: Client, subjects: Subjects) -> AsyncIterator[Callable[[list[InvokeResponse]], Any]]:
    """`await callee(answers)`: an app on the bus giving `answers` in turn (the last one forever);
    returns its id and the list its call times go to."""
    servers: list[InvocationServer] = []

    async def start(answers: list[InvokeResponse]) -> tuple[str, list[float]]:
        app_id, seen = unique("flaky-"), []

        async def handle(request: InvokeRequest) -> InvokeResponse:
            seen.append(time.monotonic())
            return answers[min(len(seen), len(answers)) - 1]

        server = InvocationServer(nc, subjects, app_id, handle)
        await server.start()
        servers.append(server)
        return app_id, seen

    yield start
    for server in servers:
        await server.stop()


async def test_exponential_back_off_grows_by_the_multiplier_up_to_max_retries(
    nc: Client, subjects: Subjects, callee: Any
) -> None:
    app_id, seen = await callee([InvokeResponse(503, body=b"busy")])
    retry = {"policy": "exponential", "initialInterval": "100ms", "multiplier": 2, "maxRetries": 3}
    response = await invoke(nc, subjects, InvokeRequest(app_id, "/work"), policy=policy(retry, app_id))
    assert (response.status, response.body) == (503, b"busy")  # the last answer, as it was
    assert len(seen) == 4  # the call and three retries
    gaps = [later - earlier for earlier, later in zip(seen, seen[1:], strict=False)]
    for gap, wanted in zip(gaps, (0.1, 0.2, 0.4), strict=True):
        assert wanted <= gap < wanted + 0.5, gaps


async def test_a_retry_stops_at_the_first_good_answer(nc: Client, subjects: Subjects, callee: Any) -> None:
    app_id, seen = await callee([InvokeResponse(500), InvokeResponse(500), InvokeResponse(200, body=b"ok")])
    retry = {"policy": "constant", "duration": "10ms", "maxRetries": 5}
    response = await invoke(nc, subjects, InvokeRequest(app_id, "/work"), policy=policy(retry, app_id))
    assert (response.status, response.body, len(seen)) == (200, b"ok", 3)


async def test_max_retries_zero_calls_once(nc: Client, subjects: Subjects, callee: Any) -> None:
    app_id, seen = await callee([InvokeResponse(500)])
    retry = {"policy": "constant", "duration": "10ms", "maxRetries": 0}
    response = await invoke(nc, subjects, InvokeRequest(app_id, "/work"), policy=policy(retry, app_id))
    assert (response.status, len(seen)) == (500, 1)


async def test_http_status_matching_retries_only_the_listed_codes(nc: Client, subjects: Subjects, callee: Any) -> None:
    retry = {"policy": "constant", "duration": "10ms", "maxRetries": 2, "matching": {"httpStatusCodes": "429,502-504"}}
    listed, listed_seen = await callee([InvokeResponse(503)])
    unlisted, unlisted_seen = await callee([InvokeResponse(500)])
    assert (await invoke(nc, subjects, InvokeRequest(listed, "/w"), policy=policy(retry, listed))).status == 503
    assert (await invoke(nc, subjects, InvokeRequest(unlisted, "/w"), policy=policy(retry, unlisted))).status == 500
    assert (len(listed_seen), len(unlisted_seen)) == (3, 1)


async def test_grpc_status_matching_uses_a_grpc_callees_own_code(nc: Client, subjects: Subjects, callee: Any) -> None:
    """A gRPC app's UNAVAILABLE (14) and INTERNAL (13) both reach an HTTP caller as 5xx; the gRPC code
    travels beside it so `gRPCStatusCodes` can tell them apart."""
    retry = {"policy": "constant", "duration": "10ms", "maxRetries": 2, "matching": {"gRPCStatusCodes": "14"}}
    unavailable, unavailable_seen = await callee([InvokeResponse(503, grpc_code=14)])
    internal, internal_seen = await callee([InvokeResponse(500, grpc_code=13)])
    answer = await invoke(nc, subjects, InvokeRequest(unavailable, "/w"), policy=policy(retry, unavailable))
    assert (answer.status, answer.grpc_code) == (503, 14)
    answer = await invoke(nc, subjects, InvokeRequest(internal, "/w"), policy=policy(retry, internal))
    assert (answer.status, answer.grpc_code) == (500, 13)
    assert (len(unavailable_seen), len(internal_seen)) == (3, 1)


@pytest.mark.parametrize(
    "codes",
    [{"httpStatusCodes": "abc"}, {"httpStatusCodes": "99"}, {"httpStatusCodes": "500-700"}, {"gRPCStatusCodes": "17"}],
)
def test_bad_matching_codes_are_a_clear_resource_error(codes: dict[str, str]) -> None:
    with pytest.raises(NatriumError) as caught:
        policy({"policy": "constant", "matching": codes}, "any")
    assert caught.value.code == Codes.COMPONENT_INVALID and "matching." in caught.value.message


def test_exponential_delays_are_capped_by_max_interval() -> None:
    retry = resiliency.RetryPolicy(policy="exponential", initial_interval=1, multiplier=3, max_interval=5)
    assert [retry.delay(n) for n in (1, 2, 3, 4)] == [1, 3, 5, 5]
