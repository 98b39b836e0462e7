"""Workflows end to end on a real nats-server: the service and workers in this process."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from nats.aio.client import Client

from adapters.sdk import workflow as wf
from adapters.sdk.workflow import DaprWorkflowContext, WorkflowActivityContext, WorkflowStatus
from kernel.errors import NatriumError
from kernel.subjects import Subjects
from tests.conftest import wait_until
from tests.workflow_runtime import WorkflowHarness, workflow_harness


@pytest.fixture
async def harness(nc: Client, subjects: Subjects) -> AsyncIterator[WorkflowHarness]:
    async with workflow_harness(nc, subjects) as h:
        yield h


def add_one(ctx: WorkflowActivityContext, value: int) -> int:
    return value + 1


async def double(ctx: WorkflowActivityContext, value: int) -> int:
    await asyncio.sleep(0)
    return value * 2


def chain(ctx: DaprWorkflowContext, value: int) -> Any:
    value = yield ctx.call_activity(add_one, input=value)
    value = yield ctx.call_activity(double, input=value)
    value = yield ctx.call_activity("add_one", input=value)
    return value


async def test_a_chain_of_sync_and_async_activities_returns_its_result(harness: WorkflowHarness) -> None:
    worker = harness.worker()
    worker.register_workflow(chain)
    worker.register_activity(add_one)
    worker.register_activity(double)
    await worker.start()

    state = await harness.run(chain, 4)

    assert state.runtime_status is WorkflowStatus.COMPLETED
    assert state.serialized_output == "11"
    assert state.serialized_input == "4"
    assert state.name == "chain"
    types = await harness.history_types(state.instance_id)
    assert types[0] == "executionStarted" and types.count("taskScheduled") == 3 and types.count("taskCompleted") == 3


async def test_a_fan_out_of_100_activities_fans_in_with_when_all_across_two_workers(harness: WorkflowHarness) -> None:
    seen: dict[str, set[int]] = {"a": set(), "b": set()}

    def fan_out(ctx: DaprWorkflowContext, count: int) -> Any:
        results = yield wf.when_all([ctx.call_activity("square", input=i) for i in range(count)])
        return results

    for label in ("a", "b"):
        worker = harness.worker()
        worker.register_workflow(fan_out)

        def square(ctx: WorkflowActivityContext, value: int, label: str = label) -> int:
            seen[label].add(value)
            return value * value

        worker.register_activity(square, name="square")
        await worker.start()

    state = await harness.run(fan_out, 100)

    assert state.runtime_status is WorkflowStatus.COMPLETED
    assert wf_output(state) == [i * i for i in range(100)]
    assert seen["a"] | seen["b"] == set(range(100))


def wf_output(state: wf.WorkflowState) -> Any:
    return json.loads(state.serialized_output or "null")


def approval(ctx: DaprWorkflowContext, _: Any) -> Any:
    decision = yield ctx.wait_for_external_event("approval")
    return {"approved": decision}


async def test_an_external_event_raised_before_the_wait_is_kept_for_it(harness: WorkflowHarness) -> None:
    def slow_then_wait(ctx: DaprWorkflowContext, _: Any) -> Any:
        yield ctx.create_timer(dt.timedelta(seconds=0.5))
        decision = yield ctx.wait_for_external_event("Approval")
        return decision

    worker = harness.worker()
    worker.register_workflow(slow_then_wait)
    await worker.start()
    instance_id = await harness.client.schedule_new_workflow(slow_then_wait)
    # Raised while the workflow still sleeps, in other letter case: buffered, then taken by the wait.
    await harness.client.raise_workflow_event(instance_id, "APPROVAL", data="yes")
    state = await harness.client.wait_for_workflow_completion(instance_id, timeout_in_seconds=20)
    assert state.runtime_status is WorkflowStatus.COMPLETED
    assert state.serialized_output == '"yes"'


async def test_an_external_event_raised_after_the_wait_began_resumes_it(harness: WorkflowHarness) -> None:
    worker = harness.worker()
    worker.register_workflow(approval)
    await worker.start()
    instance_id = await harness.client.schedule_new_workflow(approval)
    await harness.client.wait_for_workflow_start(instance_id, timeout_in_seconds=10)
    await wait_until(lambda: _has(harness, instance_id, "orchestratorCompleted"))

    await harness.client.raise_workflow_event(instance_id, "approval", data=True)

    state = await harness.client.wait_for_workflow_completion(instance_id, timeout_in_seconds=20)
    assert wf_output(state) == {"approved": True}


async def _has(harness: WorkflowHarness, instance_id: str, event_type: str) -> bool:
    return event_type in await harness.history_types(instance_id)


async def test_waiting_for_an_event_times_out_with_when_any_and_a_timer(harness: WorkflowHarness) -> None:
    def with_timeout(ctx: DaprWorkflowContext, _: Any) -> Any:
        event = ctx.wait_for_external_event("never")
        timeout = ctx.create_timer(dt.timedelta(seconds=0.3))
        winner = yield wf.when_any([event, timeout])
        return "timed out" if winner is timeout else "got it"

    worker = harness.worker()
    worker.register_workflow(with_timeout)
    await worker.start()
    state = await harness.run(with_timeout)
    assert state.serialized_output == '"timed out"'


async def test_a_failing_activity_is_retried_by_policy_then_fails_the_workflow_with_details(
    harness: WorkflowHarness,
) -> None:
    attempts: list[int] = []

    def flaky(ctx: WorkflowActivityContext, _: Any) -> None:
        attempts.append(ctx.task_id)
        raise ValueError(f"payment declined (attempt {len(attempts)})")

    policy = wf.RetryPolicy(
        first_retry_interval=dt.timedelta(milliseconds=50), max_number_of_attempts=3, backoff_coefficient=2
    )

    def pay(ctx: DaprWorkflowContext, _: Any) -> Any:
        yield ctx.call_activity(flaky, retry_policy=policy)

    worker = harness.worker()
    worker.register_workflow(pay)
    worker.register_activity(flaky)
    await worker.start()
    state = await harness.run(pay)

    assert state.runtime_status is WorkflowStatus.FAILED
    assert len(attempts) == 3
    assert state.failure_details is not None
    assert state.failure_details.error_type == "ValueError"
    assert "activity 'flaky' failed after 3 attempts" in state.failure_details.error_message
    assert "payment declined (attempt 3)" in state.failure_details.error_message
    types = await harness.history_types(state.instance_id)
    assert types.count("taskFailed") == 3 and types.count("timerCreated") == 2


async def test_a_workflow_can_catch_an_activity_failure(harness: WorkflowHarness) -> None:
    def broken(ctx: WorkflowActivityContext, _: Any) -> None:
        raise RuntimeError("no stock")

    def careful(ctx: DaprWorkflowContext, _: Any) -> Any:
        try:
            yield ctx.call_activity(broken)
        except wf.TaskFailedError as exc:
            return f"handled {exc.details.error_type}"

    worker = harness.worker()
    worker.register_workflow(careful)
    worker.register_activity(broken)
    await worker.start()
    state = await harness.run(careful)
    assert state.serialized_output == '"handled RuntimeError"'


def child(ctx: DaprWorkflowContext, value: int) -> Any:
    result = yield ctx.call_activity(add_one, input=value)
    if value < 0:
        raise ValueError("negative")
    return result


def parent(ctx: DaprWorkflowContext, values: list[int]) -> Any:
    results = yield wf.when_all([ctx.call_child_workflow(child, input=v) for v in values])
    try:
        yield ctx.call_child_workflow(child, input=-1, instance_id=f"{ctx.instance_id}-bad")
    except wf.TaskFailedError as exc:
        return {"results": results, "failed": exc.details.error_type}
    return {"results": results}


async def test_child_workflows_return_results_and_report_failures(harness: WorkflowHarness) -> None:
    worker = harness.worker()
    for fn in (parent, child):
        worker.register_workflow(fn)
    worker.register_activity(add_one)
    await worker.start()

    state = await harness.run(parent, [1, 2, 3])

    assert wf_output(state) == {"results": [2, 3, 4], "failed": "ValueError"}
    bad = await harness.client.get_workflow_state(f"{state.instance_id}-bad")
    assert bad is not None and bad.runtime_status is WorkflowStatus.FAILED


async def test_terminate_ends_an_instance_and_its_children(harness: WorkflowHarness) -> None:
    def waits(ctx: DaprWorkflowContext, _: Any) -> Any:
        yield ctx.wait_for_external_event("never")

    def waits_with_child(ctx: DaprWorkflowContext, _: Any) -> Any:
        yield ctx.call_child_workflow(waits, instance_id=f"{ctx.instance_id}-kid")

    worker = harness.worker()
    worker.register_workflow(waits)
    worker.register_workflow(waits_with_child)
    await worker.start()
    client = harness.client
    instance_id = await client.schedule_new_workflow(waits_with_child)
    kid = f"{instance_id}-kid"
    await wait_until(lambda: _status_is(harness, kid, WorkflowStatus.RUNNING))

    await client.terminate_workflow(instance_id, output="operator said stop")

    state = await client.wait_for_workflow_completion(instance_id, timeout_in_seconds=10)
    assert state.runtime_status is WorkflowStatus.TERMINATED
    assert state.serialized_output == '"operator said stop"'
    kid_state = await client.wait_for_workflow_completion(kid, timeout_in_seconds=10)
    assert kid_state.runtime_status is WorkflowStatus.TERMINATED
    # A second terminate of a finished instance changes nothing.
    await client.terminate_workflow(instance_id)
    assert (await client.get_workflow_state(instance_id)).runtime_status is WorkflowStatus.TERMINATED  # type: ignore[union-attr]


async def _status_is(harness: WorkflowHarness, instance_id: str, status: WorkflowStatus) -> bool:
    state = await harness.client.get_workflow_state(instance_id)
    return state is not None and state.runtime_status is status


def first_step_time(ctx: DaprWorkflowContext, _: Any) -> str:
    return ctx.current_utc_datetime.isoformat()


@pytest.mark.parametrize("window", ["5s", "0s"], ids=["in-memory", "schedule"])
async def test_a_start_at_keeps_the_instance_pending_until_then(nc: Client, subjects: Subjects, window: str) -> None:
    async with workflow_harness(nc, subjects, inMemoryTimerWindow=window) as harness:
        worker = harness.worker()
        worker.register_workflow(first_step_time)
        await worker.start()
        client = harness.client
        start_at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)
        instance_id = await client.schedule_new_workflow(first_step_time, start_at=start_at)
        # An event raised meanwhile is kept for the instance but does not start it early.
        await client.raise_workflow_event(instance_id, "early", data=1)
        await asyncio.sleep(0.8)
        assert (await client.get_workflow_state(instance_id)).runtime_status is WorkflowStatus.PENDING  # type: ignore[union-attr]

        state = await client.wait_for_workflow_completion(instance_id, timeout_in_seconds=15)

        assert state.runtime_status is WorkflowStatus.COMPLETED
        assert dt.datetime.fromisoformat(json.loads(state.serialized_output or "null")) >= start_at


async def test_a_start_for_later_can_be_terminated_before_it_runs(harness: WorkflowHarness) -> None:
    worker = harness.worker()
    worker.register_workflow(first_step_time)
    await worker.start()
    client = harness.client
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    instance_id = await client.schedule_new_workflow(first_step_time, start_at=later)

    await client.terminate_workflow(instance_id, output="not needed")

    state = await client.wait_for_workflow_completion(instance_id, timeout_in_seconds=10)
    assert state.runtime_status is WorkflowStatus.TERMINATED and state.serialized_output == '"not needed"'


async def test_a_paused_instance_holds_its_events_until_resumed(harness: WorkflowHarness) -> None:
    worker = harness.worker()
    worker.register_workflow(approval)
    await worker.start()
    client = harness.client
    instance_id = await client.schedule_new_workflow(approval)
    await client.wait_for_workflow_start(instance_id)

    await client.pause_workflow(instance_id)
    await wait_until(lambda: _status_is(harness, instance_id, WorkflowStatus.SUSPENDED))
    await client.raise_workflow_event(instance_id, "approval", data="while paused")
    await wait_until(lambda: _has(harness, instance_id, "eventRaised"))
    # The worker saw the event and kept it: the instance is still suspended, not completed.
    await wait_until(lambda: _last_is_step_end(harness, instance_id))
    assert await _status_is(harness, instance_id, WorkflowStatus.SUSPENDED)

    await client.resume_workflow(instance_id)
    state = await client.wait_for_workflow_completion(instance_id, timeout_in_seconds=10)
    assert wf_output(state) == {"approved": "while paused"}


async def _last_is_step_end(harness: WorkflowHarness, instance_id: str) -> bool:
    types = await harness.history_types(instance_id)
    return types[-1] == "orchestratorCompleted" and "eventRaised" in types[types.index("executionSuspended") :]


async def test_purge_deletes_a_finished_instance_and_refuses_a_running_one(harness: WorkflowHarness) -> None:
    worker = harness.worker()
    worker.register_workflow(approval)
    worker.register_workflow(parent)
    worker.register_workflow(child)
    worker.register_activity(add_one)
    await worker.start()
    client = harness.client
    running = await client.schedule_new_workflow(approval)
    with pytest.raises(NatriumError) as refused:
        await client.purge_workflow(running)
    assert refused.value.code == "ERR_PURGE_WORKFLOW"

    done = await harness.run(parent, [5])
    children = [f"{done.instance_id}-1", f"{done.instance_id}-bad"]
    assert all([await client.get_workflow_state(c) for c in children])
    await client.purge_workflow(done.instance_id)

    assert await client.get_workflow_state(done.instance_id) is None
    assert [await client.get_workflow_state(c) for c in children] == [None, None]
    with pytest.raises(NatriumError) as gone:
        await client.get_history(done.instance_id)
    assert gone.value.code == "ERR_INSTANCE_ID_NOT_FOUND"
    # The id can be used again.
    again = await client.schedule_new_workflow(approval, instance_id=done.instance_id)
    assert (await client.wait_for_workflow_start(again)).runtime_status is WorkflowStatus.RUNNING


async def test_continue_as_new_keeps_the_history_bounded(harness: WorkflowHarness) -> None:
    def counter(ctx: DaprWorkflowContext, count: int) -> Any:
        count = yield ctx.call_activity(add_one, input=count)
        ctx.set_custom_status(f"at {count}")
        if count < 30:
            ctx.continue_as_new(count)
            return None
        return count

    worker = harness.worker()
    worker.register_workflow(counter)
    worker.register_activity(add_one)
    await worker.start()

    state = await harness.run(counter, 0)

    assert state.runtime_status is WorkflowStatus.COMPLETED
    assert state.serialized_output == "30"
    # 30 executions ran; only the last one's events are kept.
    assert len(await harness.history_types(state.instance_id)) <= 10


async def test_continue_as_new_can_carry_unprocessed_events(harness: WorkflowHarness) -> None:
    def collector(ctx: DaprWorkflowContext, items: list[str]) -> Any:
        item = yield ctx.wait_for_external_event("item")
        items = [*items, item]
        if len(items) < 3:
            ctx.continue_as_new(items, save_events=True)
            return None
        return items

    worker = harness.worker()
    worker.register_workflow(collector)
    await worker.start()
    client = harness.client
    instance_id = await client.schedule_new_workflow(collector, input=[])
    for item in ("a", "b", "c"):
        await client.raise_workflow_event(instance_id, "item", data=item)
    state = await client.wait_for_workflow_completion(instance_id, timeout_in_seconds=20)
    assert wf_output(state) == ["a", "b", "c"]


def _v2_other_activity(ctx: DaprWorkflowContext, _: Any) -> Any:
    yield ctx.call_activity(double, input=1)  # was add_one: history disagrees
    yield ctx.wait_for_external_event("go")
    return "v2"


def _v2_timer_instead(ctx: DaprWorkflowContext, _: Any) -> Any:
    yield ctx.create_timer(dt.timedelta(seconds=1))  # was an activity: another kind of task
    yield ctx.wait_for_external_event("go")
    return "v2"


@pytest.mark.parametrize(
    ("v2", "mentions"),
    [(_v2_other_activity, "double"), (_v2_timer_instead, "createTimer")],
    ids=["other-activity", "timer-instead-of-activity"],
)
async def test_changed_workflow_code_fails_the_instance_with_a_non_determinism_error(
    harness: WorkflowHarness, v2: Any, mentions: str
) -> None:
    def v1(ctx: DaprWorkflowContext, _: Any) -> Any:
        yield ctx.call_activity(add_one, input=1)
        yield ctx.wait_for_external_event("go")
        return "v1"

    old = harness.worker()
    old.register_workflow(v1, name="deploy")
    old.register_activity(add_one)
    await old.start()
    client = harness.client
    instance_id = await client.schedule_new_workflow("deploy")
    await wait_until(lambda: _count(harness, instance_id, "orchestratorCompleted", 2))
    await old.shutdown()

    new = harness.worker()
    new.register_workflow(v2, name="deploy")
    new.register_activity(double)
    await new.start()
    await client.raise_workflow_event(instance_id, "go")

    state = await client.wait_for_workflow_completion(instance_id, timeout_in_seconds=20)
    assert state.runtime_status is WorkflowStatus.FAILED
    assert state.failure_details is not None
    assert state.failure_details.error_type == "NonDeterminismError"
    assert "history has scheduleTask add_one" in state.failure_details.error_message
    assert mentions in state.failure_details.error_message


async def _count(harness: WorkflowHarness, instance_id: str, event_type: str, count: int) -> bool:
    return (await harness.history_types(instance_id)).count(event_type) >= count


async def test_replay_sees_the_clock_and_custom_status_of_the_original_run(harness: WorkflowHarness) -> None:
    def clocked(ctx: DaprWorkflowContext, _: Any) -> Any:
        first = ctx.current_utc_datetime
        replays = []
        yield ctx.create_timer(dt.timedelta(milliseconds=200))
        replays.append(ctx.is_replaying)
        second = ctx.current_utc_datetime
        ctx.set_custom_status({"stage": "done"})
        return {"elapsed": (second - first).total_seconds(), "replaying": replays}

    worker = harness.worker()
    worker.register_workflow(clocked)
    await worker.start()
    state = await harness.run(clocked)
    output = wf_output(state)
    assert 0.2 <= output["elapsed"] < 5
    assert output["replaying"] == [False]
    assert state.serialized_custom_status == '{"stage": "done"}'


async def test_a_second_start_of_a_running_id_is_refused_and_bad_ids_are_400(harness: WorkflowHarness) -> None:
    client = harness.client
    instance_id = await client.schedule_new_workflow("nobody-runs-this", instance_id="order-1")
    assert instance_id == "order-1"
    state = await client.get_workflow_state("order-1")
    assert state is not None and state.runtime_status is WorkflowStatus.PENDING
    with pytest.raises(NatriumError) as twice:
        await client.schedule_new_workflow("nobody-runs-this", instance_id="order-1")
    assert twice.value.code == "ERR_START_WORKFLOW"
    for bad, code in (("has space", "ERR_INSTANCE_ID_INVALID"), ("x" * 65, "ERR_INSTANCE_ID_TOO_LONG")):
        with pytest.raises(NatriumError) as refused:
            await client.schedule_new_workflow("w", instance_id=bad)
        assert (refused.value.code, refused.value.status) == (code, 400)
    # Terminate works without any worker: the backend finishes the instance itself.
    await client.terminate_workflow("order-1")
    done = await client.wait_for_workflow_completion("order-1", timeout_in_seconds=5)
    assert done.runtime_status is WorkflowStatus.TERMINATED
    listed = await client.list_workflows()
    assert [(s.instance_id, s.runtime_status.value) for s in listed] == [("order-1", "TERMINATED")]


async def test_a_step_too_large_for_one_atomic_batch_fails_the_instance_with_a_reason(
    harness: WorkflowHarness,
) -> None:
    def huge(ctx: DaprWorkflowContext, _: Any) -> Any:
        yield wf.when_all([ctx.call_activity("never_runs", input=i) for i in range(1000)])

    worker = harness.worker()
    worker.register_workflow(huge)
    await worker.start()
    state = await harness.run(huge)
    assert state.runtime_status is WorkflowStatus.FAILED
    assert state.failure_details is not None and state.failure_details.error_type == "WorkflowStepTooLarge"


def test_the_sdk_keeps_the_dapr_python_workflow_names() -> None:
    """Code written for `dapr.ext.workflow` moves over with an import change: pin those names."""
    for name in ("WorkflowRuntime", "DaprWorkflowClient", "DaprWorkflowContext", "WorkflowActivityContext"):
        assert name in wf.__all__
    for name in ("RetryPolicy", "WorkflowState", "WorkflowStatus", "when_all", "when_any", "TaskFailedError"):
        assert name in wf.__all__
    context = set(dir(DaprWorkflowContext))
    assert {
        "call_activity",
        "call_child_workflow",
        "create_timer",
        "wait_for_external_event",
        "continue_as_new",
        "set_custom_status",
    } <= context
    ctx = DaprWorkflowContext("i-1")
    assert (ctx.instance_id, ctx.is_replaying) == ("i-1", True) and ctx.current_utc_datetime.tzinfo is not None
    client = set(dir(wf.DaprWorkflowClient))
    assert {
        "schedule_new_workflow",
        "get_workflow_state",
        "wait_for_workflow_start",
        "wait_for_workflow_completion",
        "raise_workflow_event",
        "terminate_workflow",
        "pause_workflow",
        "resume_workflow",
        "purge_workflow",
    } <= client
    runtime = set(dir(wf.WorkflowRuntime))
    assert {"register_workflow", "register_activity", "workflow", "activity", "start", "shutdown"} <= runtime


async def test_a_step_of_one_task_is_one_stored_message_and_reads_back_as_three_events(
    harness: WorkflowHarness,
) -> None:
    from kernel.directget import read_subject

    worker = harness.worker()
    worker.register_workflow(chain)
    worker.register_activity(add_one)
    worker.register_activity(double)
    await worker.start()
    state = await harness.run(chain, 1)

    events = await harness.client.get_history(state.instance_id)
    stored = await read_subject(harness.nc, harness.layout.history_stream, harness.layout.history(state.instance_id))
    # executionStarted, then 4 steps (3 schedule a task, the last completes) and 3 results: 8 messages.
    assert len(stored) == 8
    assert [e["type"] for e in events][:4] == [
        "executionStarted",
        "orchestratorStarted",
        "taskScheduled",
        "orchestratorCompleted",
    ]
    assert len(events) == 1 + 4 * 3 + 3
    assert len({e["seq"] for e in events}) == len(stored)
