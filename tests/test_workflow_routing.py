"""Work items are routed by workflow and activity name: each worker receives only what it registered."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from nats.aio.client import Client

from adapters.sdk.workflow import DaprWorkflowContext, WorkflowActivityContext, WorkflowStatus
from kernel.subjects import Subjects
from schemas.workflow import ACTIVITIES, ORCHESTRATIONS, WorkflowLayout
from tests.conftest import wait_until
from tests.workflow_runtime import WorkflowHarness, workflow_harness


@pytest.fixture
async def harness(nc: Client, subjects: Subjects) -> AsyncIterator[WorkflowHarness]:
    async with workflow_harness(nc, subjects) as h:
        yield h


def alpha(ctx: DaprWorkflowContext, value: int) -> Any:
    mine = yield ctx.call_activity("alpha_step", input=value)
    # An activity only the other worker registered: it runs there, the workflow goes on here.
    theirs = yield ctx.call_activity("beta_step", input=mine)
    return [mine, theirs]


def beta(ctx: DaprWorkflowContext, value: int) -> Any:
    result = yield ctx.call_activity("beta_step", input=value)
    return result


async def test_two_workers_with_different_registrations_each_get_only_their_own_work(
    harness: WorkflowHarness,
) -> None:
    ran: dict[str, list[str]] = {"a": [], "b": []}
    stepped: dict[str, set[str]] = {"a": set(), "b": set()}

    def tracked(label: str, fn: Any) -> Any:
        def workflow(ctx: DaprWorkflowContext, value: int) -> Any:
            stepped[label].add(fn.__name__)
            return (yield from fn(ctx, value))

        return workflow

    a = harness.worker()
    a.register_workflow(tracked("a", alpha), name="alpha")

    def alpha_step(ctx: WorkflowActivityContext, value: int) -> int:
        ran["a"].append("alpha_step")
        return value + 1

    a.register_activity(alpha_step, name="alpha_step")

    b = harness.worker()
    b.register_workflow(tracked("b", beta), name="beta")

    def beta_step(ctx: WorkflowActivityContext, value: int) -> int:
        ran["b"].append("beta_step")
        return value * 10

    b.register_activity(beta_step, name="beta_step")

    # alpha is started before any worker runs: its items wait for their workers.
    first = await harness.client.schedule_new_workflow("alpha", input=1)
    await a.start()
    await b.start()
    second = await harness.client.schedule_new_workflow("beta", input=3)

    one = await harness.client.wait_for_workflow_completion(first, timeout_in_seconds=30)
    two = await harness.client.wait_for_workflow_completion(second, timeout_in_seconds=30)

    assert one.runtime_status is WorkflowStatus.COMPLETED and one.serialized_output == "[2, 20]"
    assert two.runtime_status is WorkflowStatus.COMPLETED and two.serialized_output == "30"
    assert ran == {"a": ["alpha_step"], "b": ["beta_step", "beta_step"]}
    assert stepped == {"a": {"alpha"}, "b": {"beta"}}

    # Nothing was pulled by a worker that could not run it and handed back.
    js = harness.nc.jetstream()
    for kind, name in ((ORCHESTRATIONS, "alpha"), (ORCHESTRATIONS, "beta"), (ACTIVITIES, "alpha_step")):
        info = await js.consumer_info(harness.layout.work_stream, WorkflowLayout.work_consumer(kind, name))
        assert info.num_redelivered == 0 and info.num_pending == 0 and info.num_ack_pending == 0


async def test_a_workflow_nobody_registered_waits_in_the_stream_until_a_worker_starts(
    harness: WorkflowHarness,
) -> None:
    busy = harness.worker()
    busy.register_workflow(beta, name="other")
    await busy.start()

    instance_id = await harness.client.schedule_new_workflow("late", input=2)
    consumer = WorkflowLayout.work_consumer(ORCHESTRATIONS, "late")
    js = harness.nc.jetstream()

    async def queued() -> bool:
        try:
            info = await js.consumer_info(harness.layout.work_stream, consumer)
        except Exception:
            return False
        return info.num_pending == 1 and info.delivered.consumer_seq == 0

    await wait_until(queued)
    state = await harness.client.get_workflow_state(instance_id)
    assert state is not None and state.runtime_status is WorkflowStatus.PENDING

    def late(ctx: DaprWorkflowContext, value: int) -> Any:
        return value * 7
        yield  # a generator that schedules nothing

    worker = harness.worker()
    worker.register_workflow(late, name="late")
    await worker.start()
    done = await harness.client.wait_for_workflow_completion(instance_id, timeout_in_seconds=30)
    assert done.runtime_status is WorkflowStatus.COMPLETED and done.serialized_output == "14"


def test_work_consumer_names_are_valid_for_any_workflow_name() -> None:
    for name in ("order", "a.b c/d*>", "ä" * 200):
        consumer = WorkflowLayout.work_consumer(ACTIVITIES, name)
        assert WorkflowLayout.work_kind(consumer) == ACTIVITIES
        assert not set(consumer) & set(" .*>/\\") and len(consumer) <= 130
    assert WorkflowLayout.work_kind("relay") is None
    assert WorkflowLayout.work_consumer(ORCHESTRATIONS, "x") != WorkflowLayout.work_consumer(ACTIVITIES, "x")
