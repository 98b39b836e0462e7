"""Dapr's Python workflow SDK (`dapr.ext.workflow`, unchanged) on `natrium up`: the Durable Task protocol.

One `natrium up` subprocess serves the module; the workflow app is a subprocess built only on
Dapr's `WorkflowRuntime`, found through DAPR_GRPC_PORT, and the tests drive it with Dapr's own
`DaprWorkflowClient`. Histories live in natrium's JetStream, as for bus-native workers.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from dapr.ext.workflow import DaprWorkflowClient, WorkflowStatus
from dapr.proto.runtime.v1 import dapr_pb2_grpc, workflow_pb2

from tests.apps.dapr_workflow_app import step_value
from tests.conftest import REPO, subprocess_env, unique, wait_until
from tests.test_grpc_api import Up

pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]


class Worker:
    """The Dapr SDK workflow app as a subprocess."""

    def __init__(self, up: Up, log: Path, step_seconds: float = 0.05) -> None:
        self.env = subprocess_env(
            DAPR_GRPC_PORT=str(up.grpc_port),
            DAPR_HTTP_PORT=str(up.http_port),
            WORKFLOW_LOG=str(log),
            WORKFLOW_STEP_SECONDS=str(step_seconds),
        )
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> Worker:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.apps.dapr_workflow_app",
            cwd=REPO,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        assert self.proc.stdout
        line = await asyncio.wait_for(self.proc.stdout.readline(), 30)
        assert b"worker ready" in line, line
        return self

    async def kill(self) -> None:
        assert self.proc
        self.proc.kill()  # SIGKILL: no goodbye to the work item stream
        await self.proc.wait()

    async def stop(self) -> None:
        assert self.proc
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


@pytest.fixture(scope="module")
async def up(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Up]:
    runtime = await Up(tmp_path_factory.mktemp("grpc-wf")).start()
    yield runtime
    await runtime.stop()


@pytest.fixture(scope="module")
def step_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("wf-log") / "steps.jsonl"


@pytest.fixture(scope="module")
async def worker(up: Up, step_log: Path) -> AsyncIterator[Worker]:
    app = await Worker(up, step_log).start()
    yield app
    await app.stop()


@pytest.fixture(scope="module")
def client(up: Up) -> Iterator[DaprWorkflowClient]:
    workflows = DaprWorkflowClient(host="127.0.0.1", port=str(up.grpc_port))
    yield workflows
    workflows.close()


async def _completion(client: DaprWorkflowClient, instance_id: str, timeout: int = 30) -> Any:
    return await asyncio.to_thread(client.wait_for_workflow_completion, instance_id, timeout_in_seconds=timeout)


async def test_activities_timer_event_and_child_workflow(worker: Worker, client: DaprWorkflowClient) -> None:
    instance_id = client.schedule_new_workflow("order", input={"amount": 21}, instance_id=unique("order"))
    started = await asyncio.to_thread(client.wait_for_workflow_start, instance_id, timeout_in_seconds=20)
    assert started.runtime_status in (WorkflowStatus.RUNNING, WorkflowStatus.COMPLETED)

    async def waiting() -> bool:
        state = client.get_workflow_state(instance_id)
        return state is not None and state.serialized_custom_status == "waiting for approval"

    await wait_until(waiting, timeout=20, interval=0.2)  # past the activity and the durable timer
    client.raise_workflow_event(instance_id, "approval", data={"by": "ops"})

    done = await _completion(client, instance_id)
    assert done.runtime_status == WorkflowStatus.COMPLETED, done.failure_details
    assert json.loads(done.serialized_output) == {
        "price": 42,
        "approval": {"by": "ops"},
        "shipping": 85,
        "replaying": False,
    }
    assert json.loads(done.serialized_input) == {"amount": 21}
    # The child ran as an instance of its own, named after its parent's task.
    children = [i for i in client.list_workflow_instance_ids().instance_ids if i.startswith(instance_id)]
    assert len(children) == 2
    kinds = [e.event_type.value for e in client.get_workflow_history(instance_id)]
    for kind in ("executionStarted", "taskScheduled", "timerFired", "eventRaised", "childWorkflowInstanceCompleted"):
        assert kind in kinds
    assert kinds[-2:] == ["executionCompleted", "workflowCompleted"]

    client.purge_workflow(instance_id)
    assert client.get_workflow_state(instance_id) is None


async def test_event_raised_before_the_wait_is_kept(worker: Worker, client: DaprWorkflowClient) -> None:
    instance_id = client.schedule_new_workflow("waiter", instance_id=unique("early"))
    client.raise_workflow_event(instance_id, "answer", data=42)
    done = await _completion(client, instance_id)
    assert done.runtime_status == WorkflowStatus.COMPLETED and done.serialized_output == "42"


async def test_start_at_holds_the_instance_pending_until_then(worker: Worker, client: DaprWorkflowClient) -> None:
    start_at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)
    instance_id = client.schedule_new_workflow("waiter", instance_id=unique("later"), start_at=start_at)
    client.raise_workflow_event(instance_id, "answer", data=7)  # kept, and no reason to start early
    await asyncio.sleep(0.8)
    assert client.get_workflow_state(instance_id).runtime_status == WorkflowStatus.PENDING

    done = await _completion(client, instance_id)

    assert done.runtime_status == WorkflowStatus.COMPLETED and done.serialized_output == "7"
    assert dt.datetime.now(dt.UTC) >= start_at


async def test_terminate_pause_resume_and_purge(worker: Worker, client: DaprWorkflowClient) -> None:
    instance_id = client.schedule_new_workflow("waiter", instance_id=unique("term"))
    await asyncio.to_thread(client.wait_for_workflow_start, instance_id, timeout_in_seconds=20)
    client.pause_workflow(instance_id)
    assert client.get_workflow_state(instance_id).runtime_status == WorkflowStatus.SUSPENDED
    client.resume_workflow(instance_id)
    assert client.get_workflow_state(instance_id).runtime_status == WorkflowStatus.RUNNING
    client.terminate_workflow(instance_id, output="stopped")
    done = await _completion(client, instance_id)
    assert done.runtime_status == WorkflowStatus.TERMINATED
    client.purge_workflow(instance_id)
    assert client.get_workflow_state(instance_id) is None


async def test_failing_activity_fails_the_workflow_with_its_error(worker: Worker, client: DaprWorkflowClient) -> None:
    instance_id = client.schedule_new_workflow("failing", input="card declined", instance_id=unique("fail"))
    done = await _completion(client, instance_id)
    assert done.runtime_status == WorkflowStatus.FAILED
    assert "card declined" in done.failure_details.message


async def test_unknown_instance_reads_as_none_and_errors_on_change(up: Up, client: DaprWorkflowClient) -> None:
    assert client.get_workflow_state("no-such-instance") is None
    with pytest.raises(grpc.RpcError) as raised:
        client.raise_workflow_event("no-such-instance", "x")
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_dapr_service_workflow_rpcs(up: Up, worker: Worker) -> None:
    """The `Dapr` service's own workflow RPCs (Beta1 and Alpha1) reach the same backend."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{up.grpc_port}") as channel:
        dapr = dapr_pb2_grpc.DaprStub(channel)
        instance_id = unique("beta")
        started = await dapr.StartWorkflowBeta1(
            workflow_pb2.StartWorkflowRequest(
                instance_id=instance_id, workflow_component="dapr", workflow_name="waiter", input=b"null"
            )
        )
        assert started.instance_id == instance_id
        await dapr.RaiseEventWorkflowAlpha1(
            workflow_pb2.RaiseEventWorkflowRequest(
                instance_id=instance_id, workflow_component="dapr", event_name="answer", event_data=b'"yes"'
            )
        )

        async def completed() -> bool:
            got = await dapr.GetWorkflowBeta1(
                workflow_pb2.GetWorkflowRequest(instance_id=instance_id, workflow_component="dapr")
            )
            return got.runtime_status == "COMPLETED"

        await wait_until(completed, timeout=20, interval=0.1)
        got = await dapr.GetWorkflowBeta1(workflow_pb2.GetWorkflowRequest(instance_id=instance_id))
        assert got.workflow_name == "waiter" and got.properties["dapr.workflow.output"] == '"yes"'
        await dapr.PurgeWorkflowBeta1(workflow_pb2.PurgeWorkflowRequest(instance_id=instance_id))
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await dapr.GetWorkflowBeta1(workflow_pb2.GetWorkflowRequest(instance_id=instance_id))
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await dapr.StartWorkflowBeta1(
                workflow_pb2.StartWorkflowRequest(workflow_component="nope", workflow_name="waiter")
            )
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT

        # Pause, resume and terminate a waiting instance through the same service.
        waiting = unique("beta")
        await dapr.StartWorkflowBeta1(
            workflow_pb2.StartWorkflowRequest(
                instance_id=waiting, workflow_component="dapr", workflow_name="waiter", input=b"null"
            )
        )
        target = {"instance_id": waiting, "workflow_component": "dapr"}

        async def status_is(expected: str) -> bool:
            got = await dapr.GetWorkflowBeta1(workflow_pb2.GetWorkflowRequest(**target))
            return got.runtime_status == expected

        await wait_until(lambda: status_is("RUNNING"), timeout=20, interval=0.1)
        await dapr.PauseWorkflowBeta1(workflow_pb2.PauseWorkflowRequest(**target))
        await wait_until(lambda: status_is("SUSPENDED"), timeout=20, interval=0.1)
        await dapr.ResumeWorkflowBeta1(workflow_pb2.ResumeWorkflowRequest(**target))
        await wait_until(lambda: status_is("RUNNING"), timeout=20, interval=0.1)
        await dapr.TerminateWorkflowBeta1(workflow_pb2.TerminateWorkflowRequest(**target))
        await wait_until(lambda: status_is("TERMINATED"), timeout=20, interval=0.1)


async def test_worker_killed_mid_workflow_finishes_after_restart(
    up: Up, worker: Worker, client: DaprWorkflowClient, tmp_path: Path
) -> None:
    await worker.stop()  # this test runs its own, slower worker
    log = tmp_path / "steps.jsonl"
    first = await Worker(up, log, step_seconds=0.3).start()
    steps = 8
    instance_id = client.schedule_new_workflow("chain", input=steps, instance_id=unique("chain"))

    async def two_steps_done() -> bool:
        return log.exists() and len(log.read_text().splitlines()) >= 2

    await wait_until(two_steps_done, timeout=20, interval=0.05)
    await first.kill()
    second = await Worker(up, log, step_seconds=0.05).start()
    try:
        done = await _completion(client, instance_id)
    finally:
        await second.stop()
    expected = 1
    for number in range(steps):
        expected = step_value(expected, number)
    assert done.runtime_status == WorkflowStatus.COMPLETED
    assert json.loads(done.serialized_output) == expected
    ran = [json.loads(line) for line in log.read_text().splitlines()]
    assert {r["step"] for r in ran} == set(range(steps))  # every step ran at least once
    assert {r["pid"] for r in ran} == {first.proc.pid, second.proc.pid}  # type: ignore[union-attr]
