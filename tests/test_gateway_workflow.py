"""Dapr's workflow management HTTP API (`/v1.0/workflows/...`) and `natrium workflow`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from nats.aio.client import Client

from adapters.gateway.context import GatewayConfig
from adapters.sdk.workflow import DaprWorkflowContext, WorkflowStatus
from kernel.nats_server import EmbeddedNatsServer
from kernel.subjects import Subjects
from tests.conftest import NATRIUM, REPO, GatewayClient, free_port, open_gateway, subprocess_env, wait_until
from tests.workflow_runtime import WorkflowHarness, workflow_harness


def greeter(ctx: DaprWorkflowContext, order: Any) -> Any:
    ctx.set_custom_status("waiting")
    answer = yield ctx.wait_for_external_event("answer")
    return {"order": order, "answer": answer}


class WorkflowHttp:
    def __init__(self, client: GatewayClient, harness: WorkflowHarness) -> None:
        self.client = client
        self.harness = harness

    async def call(self, method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
        async with self.client.session.request(method, self.client.url(path), data=body) as resp:
            raw = await resp.read()
            return resp.status, json.loads(raw) if raw else None


@pytest.fixture
async def http(nc: Client, subjects: Subjects) -> AsyncIterator[WorkflowHttp]:
    async with workflow_harness(nc, subjects) as harness:
        worker = harness.worker()
        worker.register_workflow(greeter)
        await worker.start()
        client, runner = await open_gateway(nc, subjects, GatewayConfig(http_port=free_port()))
        yield WorkflowHttp(client, harness)
        await client.session.close()
        await runner.cleanup()


async def test_start_get_raise_and_complete_over_http(http: WorkflowHttp) -> None:
    status, body = await http.call("POST", "/v1.0/workflows/dapr/greeter/start?instanceID=order-7", b'{"id": 7}')
    assert (status, body) == (202, {"instanceID": "order-7"})
    await http.harness.client.wait_for_workflow_start("order-7")

    status, body = await http.call("POST", "/v1.0/workflows/dapr/order-7/raiseEvent/answer", b'"yes"')
    assert (status, body) == (202, None)
    await http.harness.client.wait_for_workflow_completion("order-7")

    status, body = await http.call("GET", "/v1.0/workflows/dapr/order-7")
    assert status == 200
    assert body["instanceID"] == "order-7"
    assert body["workflowName"] == "greeter"
    assert body["runtimeStatus"] == "COMPLETED"
    assert body["createdAt"].endswith("Z") and body["lastUpdatedAt"] >= body["createdAt"]
    assert body["properties"]["dapr.workflow.input"] == '{"id": 7}'
    assert json.loads(body["properties"]["dapr.workflow.output"]) == {"order": {"id": 7}, "answer": "yes"}
    assert body["properties"]["dapr.workflow.custom_status"] == "waiting"


async def test_the_beta1_paths_pause_resume_terminate_and_purge(http: WorkflowHttp) -> None:
    status, body = await http.call("POST", "/v1.0-beta1/workflows/dapr/greeter/start")
    assert status == 202
    instance_id = body["instanceID"]
    assert len(instance_id) == 32  # generated
    base = f"/v1.0-beta1/workflows/dapr/{instance_id}"
    await http.harness.client.wait_for_workflow_start(instance_id)

    assert await http.call("POST", f"{base}/pause") == (202, None)
    await wait_until(lambda: _status(http, base, "SUSPENDED"))
    assert await http.call("POST", f"{base}/resume") == (202, None)
    await wait_until(lambda: _status(http, base, "RUNNING"))
    status, body = await http.call("POST", f"{base}/purge")
    assert (status, body["errorCode"]) == (500, "ERR_PURGE_WORKFLOW")  # still running
    assert await http.call("POST", f"{base}/terminate") == (202, None)
    await wait_until(lambda: _status(http, base, "TERMINATED"))
    assert await http.call("POST", f"{base}/purge") == (202, None)

    status, body = await http.call("GET", base)
    assert (status, body["errorCode"]) == (404, "ERR_INSTANCE_ID_NOT_FOUND")


async def _status(http: WorkflowHttp, base: str, expected: str) -> bool:
    _, body = await http.call("GET", base)
    return bool(body and body.get("runtimeStatus") == expected)


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("GET", "/v1.0/workflows/dapr/nobody", None, 404, "ERR_INSTANCE_ID_NOT_FOUND"),
        ("POST", "/v1.0/workflows/dapr/nobody/terminate", None, 404, "ERR_INSTANCE_ID_NOT_FOUND"),
        ("POST", "/v1.0/workflows/dapr/nobody/raiseEvent/x", b"1", 404, "ERR_INSTANCE_ID_NOT_FOUND"),
        ("POST", "/v1.0/workflows/dapr/nobody/pause", None, 404, "ERR_INSTANCE_ID_NOT_FOUND"),
        ("POST", "/v1.0/workflows/dapr/nobody/purge", None, 404, "ERR_INSTANCE_ID_NOT_FOUND"),
        ("GET", "/v1.0/workflows/nope/some-id", None, 400, "ERR_WORKFLOW_COMPONENT_NOT_FOUND"),
        ("POST", "/v1.0/workflows/nope/greeter/start", None, 400, "ERR_WORKFLOW_COMPONENT_NOT_FOUND"),
        ("POST", "/v1.0/workflows/dapr/greeter/start?instanceID=a.b", None, 400, "ERR_INSTANCE_ID_INVALID"),
        ("POST", "/v1.0/workflows/dapr/greeter/start?instanceID=" + "x" * 65, None, 400, "ERR_INSTANCE_ID_TOO_LONG"),
        ("POST", "/v1.0/workflows/dapr/greeter/start", b"\xff\xfe", 400, "ERR_MALFORMED_REQUEST"),
    ],
)
async def test_errors_have_daprs_codes_and_statuses(
    http: WorkflowHttp, method: str, path: str, body: bytes | None, status: int, code: str
) -> None:
    got_status, got = await http.call(method, path, body)
    assert (got_status, got["errorCode"]) == (status, code)
    assert got["message"]


async def test_a_second_start_of_a_running_instance_is_refused(http: WorkflowHttp) -> None:
    assert (await http.call("POST", "/v1.0/workflows/dapr/greeter/start?instanceID=twice"))[0] == 202
    status, body = await http.call("POST", "/v1.0/workflows/dapr/greeter/start?instanceID=twice")
    assert (status, body["errorCode"]) == (500, "ERR_START_WORKFLOW")


async def natrium(nats_server: EmbeddedNatsServer, root: str, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *NATRIUM,
        "workflow",
        *args,
        "--nats-url",
        nats_server.url,
        "--root",
        root,
        cwd=REPO,
        env=subprocess_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


async def test_the_workflow_cli_operates_instances(
    http: WorkflowHttp, nats_server: EmbeddedNatsServer, subjects: Subjects
) -> None:
    root = subjects.root
    code, out, _ = await natrium(nats_server, root, "start", "greeter", "--id", "cli-1", "--input", '{"n": 1}')
    assert (code, out.strip()) == (0, "cli-1")
    await http.harness.client.wait_for_workflow_start("cli-1")

    code, out, err = await natrium(nats_server, root, "raise", "cli-1", "answer", "--data", '"ok"')
    assert code == 0, err
    state = await http.harness.client.wait_for_workflow_completion("cli-1")
    assert state.runtime_status is WorkflowStatus.COMPLETED

    code, out, _ = await natrium(nats_server, root, "get", "cli-1", "--json", "--history")
    got = json.loads(out)
    assert code == 0 and got["runtimeStatus"] == "COMPLETED" and got["history"][0]["type"] == "executionStarted"
    code, out, _ = await natrium(nats_server, root, "list", "--status", "completed")
    assert code == 0 and out.split("\t")[:3] == ["cli-1", "greeter", "COMPLETED"]
    code, _, err = await natrium(nats_server, root, "purge", "cli-1")
    assert code == 0 and "purged cli-1" in err

    code, out, err = await natrium(nats_server, root, "get", "cli-1")
    assert code == 1 and out == ""
    assert "error: ERR_INSTANCE_ID_NOT_FOUND" in err
    code, _, err = await natrium(nats_server, root, "start", "greeter", "--input", "{not json")
    assert code == 1 and "--input is not valid JSON" in err


async def test_the_workflow_cli_pauses_resumes_and_terminates(
    http: WorkflowHttp, nats_server: EmbeddedNatsServer, subjects: Subjects
) -> None:
    root, client = subjects.root, http.harness.client
    code, out, err = await natrium(nats_server, root, "start", "greeter", "--id", "cli-2")
    assert code == 0, err
    await client.wait_for_workflow_start("cli-2")

    async def status_is(expected: WorkflowStatus) -> bool:
        state = await client.get_workflow_state("cli-2")
        return state is not None and state.runtime_status is expected

    for command, expected in (
        ("pause", WorkflowStatus.SUSPENDED),
        ("resume", WorkflowStatus.RUNNING),
        ("terminate", WorkflowStatus.TERMINATED),
    ):
        code, _, err = await natrium(nats_server, root, command, "cli-2")
        assert code == 0, (command, err)
        await wait_until(lambda expected=expected: status_is(expected), timeout=15, interval=0.1)
    code, _, err = await natrium(nats_server, root, "pause", "cli-2")  # a terminated instance cannot pause
    assert code == 1 and "error: " in err
