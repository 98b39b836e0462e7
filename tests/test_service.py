"""The service base: concurrent handlers, true `$SRV.STATS`, errors as values, no dead handlers."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from nats.aio.client import Client
from pydantic import BaseModel

from kernel.client import BusClient
from kernel.errors import NatriumError
from kernel.service import BlockService, Endpoint, RequestContext
from kernel.subjects import Subjects


class Work(BaseModel):
    delay: float = 0.0
    fail: str | None = None
    call: str | None = None


class Done(BaseModel):
    component: str
    peak: int


class EchoService(BlockService):
    block = "echo"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.running = 0
        self.peak = 0
        self.client = BusClient(self.nc, timeout=2)

    def endpoints(self) -> list[Endpoint[Any]]:
        return [Endpoint("work", Work, self.work)]

    async def work(self, request: Work, ctx: RequestContext) -> Done:
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            if request.call:  # call back into this same endpoint: A -> B -> A
                await self.client.request(self.subjects.block("echo", "inner", "work"), {"delay": 0.01})
            await asyncio.sleep(request.delay)
            if request.fail == "natrium":
                raise NatriumError("ERR_TEST", "asked to fail", status=409)
            if request.fail == "bug":
                raise KeyError("boom")
            return Done(component=ctx.component, peak=self.peak)
        finally:
            self.running -= 1


@pytest.fixture
async def echo(nc: Client, subjects: Subjects) -> Any:
    service = EchoService(nc, subjects=subjects, max_concurrency=64)
    await service.start()
    yield service
    await service.stop()


async def test_requests_run_concurrently(echo: EchoService, nc: Client) -> None:
    client = BusClient(nc)
    subject = echo.subjects.block("echo", "c", "work")
    await asyncio.gather(*(client.request(subject, {"delay": 0.05}) for _ in range(40)))
    assert echo.peak >= 20  # nats.micro alone would peak at 1


async def test_concurrency_is_bounded(nc: Client, subjects: Subjects) -> None:
    service = EchoService(nc, subjects=subjects, max_concurrency=4)
    await service.start()
    try:
        subject = subjects.block("echo", "c", "work")
        await asyncio.gather(*(BusClient(nc).request(subject, {"delay": 0.02}) for _ in range(30)))
        assert service.peak == 4
    finally:
        await service.stop()


async def test_call_back_into_same_service_does_not_deadlock(echo: EchoService, nc: Client) -> None:
    subject = echo.subjects.block("echo", "outer", "work")
    replies = await asyncio.gather(*(BusClient(nc, timeout=3).request(subject, {"call": "self"}) for _ in range(10)))
    assert all(r["component"] == "outer" for r in replies)


async def test_errors_are_replies_with_codes_and_the_service_lives_on(echo: EchoService, nc: Client) -> None:
    client = BusClient(nc)
    subject = echo.subjects.block("echo", "e", "work")
    with pytest.raises(NatriumError) as err:
        await client.request(subject, {"fail": "natrium"})
    assert (err.value.code, err.value.status) == ("ERR_TEST", 409)
    with pytest.raises(NatriumError) as err:
        await client.request(subject, {"fail": "bug"})
    assert (err.value.code, err.value.status) == ("ERR_INTERNAL", 500)
    with pytest.raises(NatriumError) as err:
        await client.request(subject, {"delay": "soon"})
    assert err.value.code == "ERR_MALFORMED_REQUEST" and "delay" in err.value.message
    assert (await client.request(subject, {}))["component"] == "e"


async def test_micro_stats_count_work_time_and_errors(echo: EchoService, nc: Client) -> None:
    client = BusClient(nc)
    subject = echo.subjects.block("echo", "s", "work")
    await asyncio.gather(*(client.request(subject, {"delay": 0.05}) for _ in range(4)))
    with pytest.raises(NatriumError):
        await client.request(subject, {"fail": "natrium"})
    msg = await nc.request(f"$SRV.STATS.natrium-echo.{echo.micro.id}", b"", timeout=2)
    [endpoint] = json.loads(msg.data)["endpoints"]
    assert endpoint["num_requests"] == 5 and endpoint["num_errors"] == 1
    assert "ERR_TEST" in endpoint["last_error"]
    assert endpoint["processing_time"] >= 4 * 50_000_000  # the handlers' real time, in ns


async def test_service_is_discoverable_with_ping_and_info(echo: EchoService, nc: Client) -> None:
    msg = await nc.request(f"$SRV.INFO.natrium-echo.{echo.micro.id}", b"", timeout=2)
    info = json.loads(msg.data)
    assert info["metadata"]["natrium.block"] == "echo"
    assert info["endpoints"][0]["subject"] == f"{echo.subjects.root}.echo.*.work"


async def test_stop_lets_in_flight_requests_finish(nc: Client, subjects: Subjects) -> None:
    service = EchoService(nc, subjects=subjects)
    await service.start()
    pending = asyncio.create_task(BusClient(nc).request(subjects.block("echo", "x", "work"), {"delay": 0.3}))
    await asyncio.sleep(0.1)
    await service.stop()
    assert (await pending)["component"] == "x"
