"""A workflow worker process for the fault tests: `python -m tests.apps.workflow_worker`.

NATS_URL and NATRIUM_ROOT say where; every activity execution is appended to WORKFLOW_LOG (one
JSON line each), so a test can tell which steps ran, and how often.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import time
from typing import Any

from adapters.sdk.workflow import DaprWorkflowContext, WorkflowActivityContext, WorkflowRuntime, when_all
from kernel.connection import ConnectionSettings, connect

STEP_SECONDS = float(os.environ.get("WORKFLOW_STEP_SECONDS", "0.1"))


def step_value(value: int, step: int) -> int:
    """One step of the chain: deterministic, so a test computes the undisturbed result itself."""
    return (value * 31 + step) % 1_000_003


def expected_chain(steps: int) -> int:
    """What `chain` returns for `steps` when nothing disturbs it."""
    value = 1
    for number in range(steps):
        value = step_value(value, number)
    return value


def _record(kind: str, **fields: Any) -> None:
    with open(os.environ["WORKFLOW_LOG"], "a") as log:
        log.write(json.dumps({"kind": kind, "pid": os.getpid(), "at": time.time(), **fields}) + "\n")


def step(ctx: WorkflowActivityContext, item: dict[str, int]) -> int:
    time.sleep(STEP_SECONDS)
    _record("step", step=item["step"], instance=ctx.workflow_id)
    return step_value(item["value"], item["step"])


def after_timer(ctx: WorkflowActivityContext, value: str) -> str:
    _record("after_timer", instance=ctx.workflow_id)
    return f"woke {value}"


def chain(ctx: DaprWorkflowContext, steps: int) -> Any:
    value = 1
    for number in range(steps):
        value = yield ctx.call_activity(step, input={"value": value, "step": number})
    return value


def fan_out(ctx: DaprWorkflowContext, width: int) -> Any:
    results = yield when_all([ctx.call_activity(step, input={"value": n, "step": n}) for n in range(width)])
    return sum(results)


def sleeper(ctx: DaprWorkflowContext, seconds: float) -> Any:
    started = ctx.current_utc_datetime
    yield ctx.create_timer(dt.timedelta(seconds=seconds))
    slept = (ctx.current_utc_datetime - started).total_seconds()
    result = yield ctx.call_activity(after_timer, input="up")
    return {"result": result, "slept": slept}


async def main() -> None:
    nc = await connect(ConnectionSettings.from_env(None, name="workflow-worker"))
    runtime = WorkflowRuntime(nc)
    runtime.register_workflow(chain)
    runtime.register_workflow(sleeper)
    runtime.register_workflow(fan_out)
    runtime.register_activity(step)
    runtime.register_activity(after_timer)
    await runtime.start()
    _record("ready")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runtime.shutdown()
    await nc.close()


if __name__ == "__main__":
    asyncio.run(main())
