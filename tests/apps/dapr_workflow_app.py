"""A workflow app written only with Dapr's Python SDK (`dapr.ext.workflow`), as it runs under daprd.

`python -m tests.apps.dapr_workflow_app`: it finds natrium through DAPR_GRPC_PORT, prints
"worker ready" once its work item stream is open, and runs until SIGTERM. Every `step` activity
appends one JSON line to WORKFLOW_LOG, so a test can tell which steps ran, and where.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from datetime import timedelta
from typing import Any

from dapr.ext.workflow import DaprWorkflowContext, WorkflowActivityContext, WorkflowRuntime

STEP_SECONDS = float(os.environ.get("WORKFLOW_STEP_SECONDS", "0.05"))

runtime = WorkflowRuntime()


def step_value(value: int, step: int) -> int:
    """One step of the chain: deterministic, so a test computes the undisturbed result itself."""
    return (value * 31 + step) % 1_000_003


@runtime.activity(name="step")
def step(ctx: WorkflowActivityContext, item: dict[str, int]) -> int:
    time.sleep(STEP_SECONDS)
    with open(os.environ["WORKFLOW_LOG"], "a") as log:
        log.write(json.dumps({"step": item["step"], "pid": os.getpid(), "instance": ctx.workflow_id}) + "\n")
    return step_value(item["value"], item["step"])


@runtime.activity(name="double")
def double(ctx: WorkflowActivityContext, value: int) -> int:
    return value * 2


@runtime.activity(name="fail")
def fail(ctx: WorkflowActivityContext, reason: str) -> None:
    raise ValueError(reason)


@runtime.workflow(name="chain")
def chain(ctx: DaprWorkflowContext, steps: int) -> Any:
    value = 1
    for number in range(steps):
        value = yield ctx.call_activity(step, input={"value": value, "step": number})
    return value


@runtime.workflow(name="child")
def child(ctx: DaprWorkflowContext, value: int) -> Any:
    doubled = yield ctx.call_activity(double, input=value)
    return doubled + 1


@runtime.workflow(name="order")
def order(ctx: DaprWorkflowContext, request: dict[str, Any]) -> Any:
    """Activities, a durable timer, an external event and a child workflow, in that order."""
    ctx.set_custom_status("pricing")
    price = yield ctx.call_activity(double, input=request["amount"])
    yield ctx.create_timer(timedelta(seconds=1))
    ctx.set_custom_status("waiting for approval")
    approval = yield ctx.wait_for_external_event("approval")
    shipping = yield ctx.call_child_workflow(child, input=price)
    return {"price": price, "approval": approval, "shipping": shipping, "replaying": ctx.is_replaying}


@runtime.workflow(name="waiter")
def waiter(ctx: DaprWorkflowContext, _: Any) -> Any:
    answer = yield ctx.wait_for_external_event("answer")
    return answer


@runtime.workflow(name="failing")
def failing(ctx: DaprWorkflowContext, reason: str) -> Any:
    yield ctx.call_activity(fail, input=reason)


def main() -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    runtime.start()
    print("worker ready", flush=True)
    stop.wait()
    runtime.shutdown()


if __name__ == "__main__":
    main()
