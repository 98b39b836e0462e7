"""Workflows survive what kills processes: real worker processes, kill -9, a nats-server restart."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client

from adapters.sdk.workflow import DaprWorkflowClient, WorkflowStatus
from kernel.connection import ConnectionSettings, connect
from kernel.errors import NatriumError
from kernel.nats_server import EmbeddedNatsServer
from kernel.subjects import Subjects
from tests.apps.workflow_worker import expected_chain, step_value
from tests.conftest import NATRIUM, REPO, subprocess_env, unique, wait_until
from tests.workflow_runtime import delete_streams, start_service

pytestmark = pytest.mark.slow


async def start_worker(url: str, root: str, log: Path, step_seconds: float = 0.1) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.apps.workflow_worker",
        cwd=REPO,
        env=subprocess_env(
            NATS_URL=url, NATRIUM_ROOT=root, WORKFLOW_LOG=str(log), WORKFLOW_STEP_SECONDS=str(step_seconds)
        ),
    )


def records(log: Path, kind: str) -> list[dict[str, Any]]:
    if not log.exists():
        return []
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return [line for line in lines if line["kind"] == kind]


def counted(log: Path, kind: str, count: int) -> Any:
    async def check() -> bool:
        return len(records(log, kind)) >= count

    return check


async def stop(*processes: asyncio.subprocess.Process) -> None:
    for process in processes:
        if process.returncode is None:
            process.kill()
        await process.wait()


async def test_a_worker_killed_mid_chain_is_replaced_and_the_result_is_unchanged(
    nc: Client, nats_server: EmbeddedNatsServer, subjects: Subjects, tmp_path: Path
) -> None:
    log = tmp_path / "steps.jsonl"
    service = await start_service(nc, subjects, workItemAckWait="2s")
    first = await start_worker(nats_server.url, subjects.root, log)
    second: asyncio.subprocess.Process | None = None
    try:
        await wait_until(counted(log, "ready", 1), timeout=30)
        client = DaprWorkflowClient(nc, subjects=subjects)
        instance_id = await client.schedule_new_workflow("chain", input=20)
        await wait_until(counted(log, "step", 7), timeout=30)

        first.kill()  # kill -9, in the middle of an activity or a step
        await first.wait()
        second = await start_worker(nats_server.url, subjects.root, log)

        state = await client.wait_for_workflow_completion(instance_id, timeout_in_seconds=60)
        assert state.runtime_status is WorkflowStatus.COMPLETED
        assert json.loads(state.serialized_output or "null") == expected_chain(20)
        steps = records(log, "step")
        assert {s["step"] for s in steps} == set(range(20))  # every activity ran at least once
        assert {s["pid"] for s in steps} == {first.pid, second.pid}  # and the second worker took over
    finally:
        await stop(first, *([second] if second else []))
        await service.stop()
        await delete_streams(nc, client.layout)


async def test_two_worker_processes_share_a_fan_out_and_fan_in(
    nc: Client, nats_server: EmbeddedNatsServer, subjects: Subjects, tmp_path: Path
) -> None:
    log = tmp_path / "steps.jsonl"
    service = await start_service(nc, subjects)
    workers = [await start_worker(nats_server.url, subjects.root, log, step_seconds=0.05) for _ in range(2)]
    client = DaprWorkflowClient(nc, subjects=subjects)
    try:
        await wait_until(counted(log, "ready", 2), timeout=30)
        instance_id = await client.schedule_new_workflow("fan_out", input=40)
        state = await client.wait_for_workflow_completion(instance_id, timeout_in_seconds=60)
        assert state.runtime_status is WorkflowStatus.COMPLETED
        assert json.loads(state.serialized_output or "null") == sum(step_value(n, n) for n in range(40))
        steps = records(log, "step")
        assert {s["step"] for s in steps} == set(range(40))
        assert {s["pid"] for s in steps} == {w.pid for w in workers}  # both took a share
    finally:
        await stop(*workers)
        await service.stop()
        await delete_streams(nc, client.layout)


async def test_a_workflow_completes_across_a_nats_server_restart(tmp_path: Path) -> None:
    server = await EmbeddedNatsServer(tmp_path / "nats", port=0).start()
    subjects = Subjects(unique("root"))
    log = tmp_path / "steps.jsonl"
    nc = await connect(ConnectionSettings(url=server.url))
    service = await start_service(nc, subjects, workItemAckWait="3s")
    worker = await start_worker(server.url, subjects.root, log, step_seconds=0.05)
    try:
        await wait_until(counted(log, "ready", 1), timeout=30)
        client = DaprWorkflowClient(nc, subjects=subjects)
        instance_id = await client.schedule_new_workflow("chain", input=15)
        await wait_until(counted(log, "step", 4), timeout=30)

        await server.kill()
        await server.start()  # same store folder, same port

        async def finished() -> bool:
            try:
                state = await client.get_workflow_state(instance_id)
            except NatriumError:
                return False  # still reconnecting
            return state is not None and state.runtime_status.name in ("COMPLETED", "FAILED")

        await wait_until(finished, timeout=60, interval=0.2)
        state = await client.get_workflow_state(instance_id)
        assert state is not None and state.runtime_status is WorkflowStatus.COMPLETED
        assert json.loads(state.serialized_output or "null") == expected_chain(15)
    finally:
        await stop(worker)
        await service.stop()
        await nc.close()
        await server.stop()


COMPONENT_YAML = """\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: dapr
spec:
  type: workflow.dapr
  version: v1
  metadata:
  - name: inMemoryTimerWindow
    value: "0s"
"""


async def start_service_process(url: str, root: str, components: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *NATRIUM,
        "service",
        "workflow",
        "--nats-url",
        url,
        "--root",
        root,
        "--components",
        str(components),
        cwd=REPO,
        env=subprocess_env(NATRIUM_LOG_LEVEL="warning"),
    )


async def test_a_timer_survives_a_restart_of_every_worker_and_the_service(
    nc: Client, nats_server: EmbeddedNatsServer, subjects: Subjects, tmp_path: Path
) -> None:
    components = tmp_path / "components"
    components.mkdir()
    # Only the message schedule can fire the timer: the relay keeps none in memory.
    (components / "workflow.yaml").write_text(COMPONENT_YAML)
    log = tmp_path / "log.jsonl"
    url, root = nats_server.url, subjects.root
    processes = [await start_service_process(url, root, components), await start_worker(url, root, log)]
    client = DaprWorkflowClient(nc, subjects=subjects)
    try:
        await wait_until(counted(log, "ready", 1), timeout=30)
        instance_id = await client.schedule_new_workflow("sleeper", input=3)

        async def timer_created() -> bool:
            return "timerCreated" in [e["type"] for e in await client.get_history(instance_id)]

        await wait_until(timer_created, timeout=20)
        await stop(*processes)  # kill -9 everything but NATS while the timer is pending
        assert records(log, "after_timer") == []

        processes = [await start_service_process(url, root, components), await start_worker(url, root, log)]

        async def answering() -> bool:
            try:
                return await client.get_workflow_state(instance_id) is not None
            except NatriumError:
                return False

        await wait_until(answering, timeout=30, interval=0.1)
        state = await client.wait_for_workflow_completion(instance_id, timeout_in_seconds=30)

        assert state.runtime_status is WorkflowStatus.COMPLETED
        output = json.loads(state.serialized_output or "null")
        assert output["result"] == "woke up"
        assert output["slept"] >= 3
        fired = [e for e in await client.get_history(instance_id) if e["type"] == "timerFired"]
        assert len(fired) == 1
    finally:
        await stop(*processes)
        await delete_streams(nc, client.layout)
