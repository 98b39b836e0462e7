"""Actor semantics at bus level with the bus-native SDK in process: timers, idle deactivation,
reentrancy, reminders, state, rebalancing, and the Dapr error codes of each failure."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from nats.aio.client import Client

from adapters.actors.client import ActorClient
from adapters.sdk import Actor, App
from adapters.sdk import Client as SdkClient
from kernel.codec import Encoding
from kernel.errors import Codes, NatriumError
from kernel.subjects import Subjects
from schemas.actors import ReminderRequest, StateOperation, TimerRequest
from services.actors import ActorsService
from tests.conftest import wait_until

EVENTS: dict[str, list[Any]] = {}


def events(key: str) -> list[Any]:
    return EVENTS.setdefault(key, [])


class Ticker(Actor):
    async def on_activate(self) -> None:
        events(f"activate:{self.actor_id}").append(1)

    async def on_deactivate(self) -> None:
        events(f"deactivate:{self.actor_id}").append(1)

    async def start(self, spec: dict[str, Any]) -> None:
        await self.register_timer("t", "tick", spec.get("data"), due_time=spec["due"], period=spec.get("period"))

    async def tick(self, data: Any) -> None:
        events(f"tick:{self.actor_id}").append(data)

    async def remind(self, spec: dict[str, Any]) -> None:
        await self.register_reminder("r", spec.get("data"), due_time=spec["due"], period=spec.get("period"))

    async def receive_reminder(self, name: str, data: Any, due_time: str, period: str) -> None:
        events(f"remind:{self.actor_id}").append(data)

    async def boom(self) -> None:
        raise RuntimeError("the app failed")

    async def slow(self, seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "done"

    async def where(self) -> str:
        return str(self.runtime.host.host_id if self.runtime.host else "")

    async def put(self, value: Any) -> None:
        self.state.set("v", value)


class Flaky(Actor):
    """Fails every reminder fire, to show what each failurePolicy does with the failures."""

    async def receive_reminder(self, name: str, data: Any, due_time: str, period: str) -> None:
        events(f"flaky:{self.actor_id}:{name}").append(data)
        raise RuntimeError("not today")


class Ping(Actor):
    """a -> b -> a: Ping(a).start calls Pong(b).bounce, which calls back Ping(a).leaf."""

    async def start(self) -> str:
        return str(await self.proxy("Pong", self.actor_id).bounce(self.actor_id))

    async def leaf(self) -> str:
        return "leaf"

    async def recurse(self, depth: int) -> int:
        if depth <= 0:
            return 0
        return int(await self.proxy(Ping, self.actor_id).recurse(depth - 1)) + 1


class Pong(Actor):
    async def bounce(self, ping_id: str) -> str:
        return str(await self.proxy(Ping, ping_id).leaf())


class Runtime:
    """The actors service and bus-native SDK apps on one subject root."""

    def __init__(self, nc: Client, subjects: Subjects) -> None:
        self.nc = nc
        self.subjects = subjects
        self.apps: list[App] = []
        self.client = ActorClient(nc, subjects, timeout=10)

    async def app(self, *classes: type[Actor], inner_timeout: float = 10.0, **settings: Any) -> App:
        app = App("actors-test")
        for cls in classes:
            app.register_actor(cls)
        app.configure_actors(actorScanInterval="0.1s", **settings)
        client = SdkClient(self.nc, subjects=self.subjects)
        client.actors.timeout = inner_timeout
        await app.start(client=client)
        self.apps.append(app)
        return app

    async def call(self, actor_type: str, actor_id: str, method: str, data: Any = None, **kw: Any) -> Any:
        body = b"" if data is None else json.dumps(data).encode()
        reply = await self.client.invoke(actor_type, actor_id, method, body, **kw)
        assert reply.ok, (reply.status, reply.body)
        return json.loads(reply.body) if reply.body else None


@pytest.fixture
async def runtime(nc: Client, subjects: Subjects) -> AsyncIterator[Runtime]:
    EVENTS.clear()
    service = ActorsService(nc, subjects=subjects)
    await service.start()
    rt = Runtime(nc, subjects)
    yield rt
    for app in rt.apps:
        await app.stop()
        if app.client is not None:
            await app.client.actors.close()
    await rt.client.close()
    await service.stop()


def count(key: str, at_least: int) -> Callable[[], Any]:
    async def check() -> bool:
        return len(events(key)) >= at_least

    return check


# -- timers and idle deactivation ------------------------------------------------------------------


async def test_timer_fires_periodically_while_active(runtime: Runtime) -> None:
    await runtime.app(Ticker)
    await runtime.call("Ticker", "t1", "start", {"due": "0s", "period": "0.1s", "data": {"x": 1}})
    await wait_until(count("tick:t1", 3))
    assert events("tick:t1")[0] == {"x": 1}
    await runtime.client.delete_timer("Ticker", "t1", "t")
    fired = len(events("tick:t1"))
    await runtime.call("Ticker", "t1", "where")  # a turn after the delete: no tick can be mid-way
    await asyncio.sleep(0.4)
    assert len(events("tick:t1")) <= fired + 1


async def test_idle_actor_is_deactivated_and_its_timers_die_with_it(runtime: Runtime) -> None:
    await runtime.app(Ticker, actorIdleTimeout="0.5s")
    # The timer's period is longer than the idle timeout: after one tick the actor idles out.
    await runtime.call("Ticker", "t2", "start", {"due": "0.05s", "period": "1.5s"})
    await wait_until(count("deactivate:t2", 1))
    assert len(events("tick:t2")) == 1
    await asyncio.sleep(1.6)  # past the second tick's due time
    assert len(events("tick:t2")) == 1  # the timer died with the activation
    await runtime.call("Ticker", "t2", "where")
    assert len(events("activate:t2")) == 2  # the next call activated it afresh


async def test_create_timer_through_the_client_and_bad_timer_is_dapr_error(runtime: Runtime) -> None:
    await runtime.app(Ticker)
    await runtime.client.create_timer(
        "Ticker", "t3", "x", TimerRequest(callback="tick", dueTime="0h0m0s10ms0μs", data="d")
    )
    await wait_until(count("tick:t3", 1))
    assert events("tick:t3") == ["d"]
    with pytest.raises(NatriumError) as err:
        await runtime.client.create_timer("Ticker", "t3", "y", TimerRequest(callback="tick", period="R0/PT1S"))
    assert (err.value.code, err.value.status) == (Codes.ACTOR_TIMER_CREATE, 500)


# -- reentrancy ----------------------------------------------------------------------------------------


async def test_call_chain_back_into_a_busy_actor_fails_without_reentrancy(runtime: Runtime) -> None:
    await runtime.app(Ping, Pong, inner_timeout=1.0)
    reply = await runtime.client.invoke("Ping", "r1", "start")
    # Pong's call back into Ping waits for Ping's own turn: it times out, and the error comes back.
    assert reply.status == 500
    assert "did not answer" in reply.body.decode()


async def test_call_chain_back_into_a_busy_actor_works_with_reentrancy(runtime: Runtime) -> None:
    await runtime.app(Ping, Pong, reentrancy={"enabled": True, "maxStackDepth": 8})
    assert await runtime.call("Ping", "r2", "start") == "leaf"
    assert await runtime.call("Ping", "r2", "recurse", 5) == 5


async def test_reentrancy_deeper_than_max_stack_depth_is_refused(runtime: Runtime) -> None:
    await runtime.app(Ping, Pong, reentrancy={"enabled": True, "maxStackDepth": 3})
    reply = await runtime.client.invoke("Ping", "r3", "recurse", b"6")
    assert reply.status == 500
    assert Codes.ACTOR_STACK_DEPTH in reply.body.decode() or "stack depth" in reply.body.decode()


# -- reminders -----------------------------------------------------------------------------------------


async def test_reminder_with_repetitions_fires_exactly_that_many_times(runtime: Runtime) -> None:
    await runtime.app(Ticker)
    await runtime.call("Ticker", "m1", "remind", {"due": "0.1s", "period": "R3/PT0.2S", "data": [1, 2]})
    await wait_until(count("remind:m1", 3))
    assert await runtime.client.get_reminder("Ticker", "m1", "r") is None  # done: the definition is gone
    await asyncio.sleep(0.6)  # three periods more: no fourth fire
    assert events("remind:m1") == [[1, 2]] * 3


async def test_reminder_get_and_delete(runtime: Runtime) -> None:
    await runtime.app(Ticker)
    request = ReminderRequest(dueTime="1h", period="0h0m10s0ms0μs", data="c3RhdGU=")
    await runtime.client.create_reminder("Ticker", "m2", "later", request)
    assert await runtime.client.get_reminder("Ticker", "m2", "later") == {
        "dueTime": "1h",
        "period": "0h0m10s0ms0μs",
        "data": "c3RhdGU=",
    }
    await runtime.client.delete_reminder("Ticker", "m2", "later")
    assert await runtime.client.get_reminder("Ticker", "m2", "later") is None
    # A deleted reminder never fires: re-create it due now, delete it at once.
    await runtime.client.create_reminder("Ticker", "m2", "gone", ReminderRequest(dueTime="0.3s"))
    await runtime.client.delete_reminder("Ticker", "m2", "gone")
    await runtime.call("Ticker", "m2", "remind", {"due": "0.5s"})  # a later one, as a marker
    await wait_until(count("remind:m2", 1))
    assert events("remind:m2") == [None]


@pytest.mark.parametrize(
    ("policy", "period", "calls"),
    [
        # drop: each fire is tried once; two fires of R2 -> two calls, no retries
        ({"drop": {}}, "R2/PT0.3S", 2),
        # constant: one fire tried 1 + maxRetries times, `interval` apart, then given up
        ({"constant": {"interval": "0.1s", "maxRetries": 2}}, None, 3),
    ],
)
async def test_reminder_failure_policy_bounds_the_retries_of_a_failing_fire(
    runtime: Runtime, policy: dict[str, Any], period: str | None, calls: int
) -> None:
    await runtime.app(Flaky)
    fields = {"dueTime": "0.1s", "period": period, "data": "x", "failurePolicy": policy}
    await runtime.client.create_reminder("Flaky", "f1", "r", ReminderRequest.model_validate(fields))
    await wait_until(count("flaky:f1:r", calls))
    await asyncio.sleep(1.0)  # long enough for any retry or fire the policy does not allow
    assert events("flaky:f1:r") == ["x"] * calls


async def test_reminder_and_timer_ttl_end_their_periods(runtime: Runtime) -> None:
    await runtime.app(Ticker)
    every = {"dueTime": "0s", "period": "0.2s", "ttl": "1s", "data": "p"}
    await runtime.client.create_reminder("Ticker", "ttl1", "r", ReminderRequest.model_validate(every))
    await runtime.client.create_timer("Ticker", "ttl1", "t", TimerRequest.model_validate({**every, "callback": "tick"}))
    await wait_until(count("remind:ttl1", 2))
    await wait_until(count("tick:ttl1", 2))
    await asyncio.sleep(1.5)  # past the ttl: both have ended
    reminded, ticked = len(events("remind:ttl1")), len(events("tick:ttl1"))
    await asyncio.sleep(1.0)  # five more periods: no more fires
    assert (len(events("remind:ttl1")), len(events("tick:ttl1"))) == (reminded, ticked)
    assert 2 <= reminded <= 7 and 2 <= ticked <= 7
    assert await runtime.client.get_reminder("Ticker", "ttl1", "r") is None


@pytest.mark.parametrize(("drain", "turn", "finished"), [("5s", 0.5, True), ("0.3s", 5.0, False)])
async def test_stopping_host_lets_turns_finish_within_drain_ongoing_call_timeout(
    runtime: Runtime, drain: str, turn: float, finished: bool
) -> None:
    app = await runtime.app(Ticker, drainOngoingCallTimeout=drain)
    await runtime.call("Ticker", f"d-{drain}", "where")  # active here
    call = asyncio.create_task(runtime.client.invoke("Ticker", f"d-{drain}", "slow", json.dumps(turn).encode()))
    await asyncio.sleep(0.2)  # the turn is under way
    started = asyncio.get_running_loop().time()
    await app.stop()
    stopped_after = asyncio.get_running_loop().time() - started
    if finished:  # the turn ran to its end before the host left
        reply = await call
        assert reply.ok and json.loads(reply.body) == "done"
    else:  # cancelled at the drain timeout, long before the turn would have ended
        with pytest.raises(NatriumError, match="cancelled"):
            await call
        assert stopped_after < 3.0


async def test_waiting_for_a_host_does_not_use_up_a_fires_retries(runtime: Runtime) -> None:
    # Due before any host of the type runs: the fire is redelivered, unanswered, a few times.
    fields = {"dueTime": "0s", "data": "y", "failurePolicy": {"constant": {"interval": "0.1s", "maxRetries": 1}}}
    await runtime.client.create_reminder("Flaky", "f2", "r", ReminderRequest.model_validate(fields))
    await asyncio.sleep(2.0)
    await runtime.app(Flaky)
    await wait_until(count("flaky:f2:r", 2), timeout=20)  # 1 + maxRetries calls of the app itself
    await asyncio.sleep(1.0)
    assert events("flaky:f2:r") == ["y", "y"]


@pytest.mark.parametrize("field, value", [("period", "R0/PT1S"), ("period", "sometimes"), ("dueTime", "soon")])
async def test_invalid_reminder_is_dapr_error(runtime: Runtime, field: str, value: str) -> None:
    with pytest.raises(NatriumError) as err:
        await runtime.client.create_reminder("Ticker", "m3", "bad", ReminderRequest.model_validate({field: value}))
    assert (err.value.code, err.value.status) == (Codes.ACTOR_REMINDER_CREATE, 500)


# -- state -----------------------------------------------------------------------------------------------


async def test_state_transaction_is_all_or_nothing(runtime: Runtime) -> None:
    client = runtime.client
    upsert = StateOperation(operation="upsert", request={"key": "a", "value": {"n": 1}})
    await client.transaction(
        "Ticker", "s1", [upsert, StateOperation(operation="upsert", request={"key": "b", "value": 2})]
    )
    assert await client.get_state("Ticker", "s1", "a") == b'{"n":1}'
    bad = [
        StateOperation(operation="delete", request={"key": "a"}),
        StateOperation(operation="merge", request={"key": "b"}),
    ]
    with pytest.raises(NatriumError) as err:
        await client.transaction("Ticker", "s1", bad)
    assert err.value.code == Codes.ACTOR_STATE_TRANSACTION_SAVE
    assert await client.get_state("Ticker", "s1", "a") == b'{"n":1}'  # the delete did not happen either
    await client.transaction("Ticker", "s1", [StateOperation(operation="delete", request={"key": "a"})])
    assert await client.get_state("Ticker", "s1", "a") is None
    assert await client.get_state("Ticker", "s1", "never") is None


async def test_failed_method_saves_nothing(runtime: Runtime) -> None:
    await runtime.app(Ticker)
    await runtime.call("Ticker", "s2", "put", "kept")
    reply = await runtime.client.invoke("Ticker", "s2", "boom")
    assert reply.status == 500 and "the app failed" in reply.body.decode()
    assert await runtime.client.get_state("Ticker", "s2", "v") == b'"kept"'


# -- errors ----------------------------------------------------------------------------------------------


async def test_unknown_actor_type_is_dapr_error(runtime: Runtime) -> None:
    await runtime.app(Ticker)
    with pytest.raises(NatriumError) as err:
        await runtime.client.invoke("NoSuchType", "x", "m")
    assert (err.value.code, err.value.status) == (Codes.ACTOR_INVOKE_METHOD, 500)
    assert "error finding address for actor type NoSuchType" in err.value.message


async def test_unknown_method_is_404_from_the_app(runtime: Runtime) -> None:
    await runtime.app(Ticker)
    reply = await runtime.client.invoke("Ticker", "e1", "nope")
    assert reply.status == 404


async def test_call_timeout_is_dapr_error(runtime: Runtime) -> None:
    await runtime.app(Ticker)
    quick = ActorClient(runtime.nc, runtime.subjects, timeout=0.3)
    try:
        with pytest.raises(NatriumError) as err:
            await quick.invoke("Ticker", "e2", "slow", b"1")
    finally:
        await quick.close()
    assert (err.value.code, err.value.status) == (Codes.ACTOR_INVOKE_METHOD, 500)
    assert await runtime.call("Ticker", "e2", "slow", 0) == "done"  # the actor is fine afterwards


# -- plain NATS clients, placement ------------------------------------------------------------------------


async def test_plain_nats_client_invokes_an_actor_through_the_service(runtime: Runtime) -> None:
    await runtime.app(Ticker)
    subject = runtime.subjects.block("actors", "Ticker", "invoke")
    body = json.dumps({"actorId": "p1", "method": "slow", "data": 0}).encode()
    msg = await runtime.nc.request(subject, body, headers={"Content-Type": Encoding.JSON.value}, timeout=10)
    reply = json.loads(msg.data)
    assert reply["status"] == 200


async def test_a_joining_host_takes_over_its_share_with_state(runtime: Runtime) -> None:
    first = await runtime.app(Ticker)
    ids = [f"b{i}" for i in range(12)]
    for actor_id in ids:
        await runtime.call("Ticker", actor_id, "put", actor_id)
    assert first.actor_host is not None
    assert {await runtime.call("Ticker", i, "where") for i in ids} == {first.actor_host.host_id}
    second = await runtime.app(Ticker)
    assert second.actor_host is not None

    host = first.actor_host

    async def moved() -> bool:
        return sum(host.active_actors().values()) < len(ids)

    await wait_until(moved)
    where = {i: await runtime.call("Ticker", i, "where") for i in ids}
    assert set(where.values()) == {first.actor_host.host_id, second.actor_host.host_id}
    for actor_id in ids:
        assert await runtime.client.get_state("Ticker", actor_id, "v") == json.dumps(actor_id).encode()


async def test_status_lists_the_actors_replica_and_its_streams(runtime: Runtime) -> None:
    from adapters.cli.status import gather

    await runtime.app(Ticker)
    await runtime.call("Ticker", "st", "put", 1)
    status = await gather(runtime.nc, runtime.subjects.root, ["actors"], window=0.5)
    assert [r.block for r in status.replicas] == ["actors"] and status.missing == []
    streams = {s.name: s.block for s in status.streams}
    root = runtime.subjects.root
    assert streams == {
        f"KV_actors_{root}_placement": "actors",
        f"KV_actors_{root}_state": "actors",
        f"ACTORREMINDERS_{root}": "actors",
    }


async def test_typed_proxy_from_the_sdk_client(runtime: Runtime) -> None:
    app = await runtime.app(Ticker)
    client = SdkClient(runtime.nc, subjects=runtime.subjects)
    try:
        ticker = client.actor(Ticker, "px")
        assert await ticker.slow(0) == "done"
        assert app.actor_host is not None and await ticker.where() == app.actor_host.host_id
        with pytest.raises(AttributeError):
            ticker.not_a_method  # noqa: B018 - the class has no such method: refused before any call
        with pytest.raises(NatriumError) as err:
            await ticker.boom()
        assert (err.value.code, err.value.status) == (Codes.ACTOR_INVOKE_METHOD, 500)
        assert await client.actor("Ticker", "px").invoke("slow", 0) == "done"  # by name, untyped
    finally:
        await client.actors.close()
