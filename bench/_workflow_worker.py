"""A workflow worker for bench/workflows.py: `python bench/_workflow_worker.py NATS_URL ROOT`.

Registers `empty`, `chain5` and `fanout`, and the activity `work` (a plain sync function, as
most Dapr activities are). Prints "ready" once it takes work; runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from adapters.sdk.workflow import (  # noqa: E402
    DaprWorkflowContext,
    WorkflowActivityContext,
    WorkflowRuntime,
    when_all,
)
from kernel.connection import ConnectionSettings, connect  # noqa: E402
from kernel.subjects import Subjects  # noqa: E402


def work(ctx: WorkflowActivityContext, value: int) -> int:
    return value + 1


def empty(ctx: DaprWorkflowContext, _: Any) -> None:
    return None


def chain5(ctx: DaprWorkflowContext, value: int) -> Any:
    for _ in range(5):
        value = yield ctx.call_activity(work, input=value)
    return value


def fanout(ctx: DaprWorkflowContext, width: int) -> Any:
    results = yield when_all([ctx.call_activity(work, input=i) for i in range(width)])
    return sum(results)


async def main(url: str, root: str) -> None:
    nc = await connect(ConnectionSettings(url=url, name="bench-workflow-worker"))
    runtime = WorkflowRuntime(nc, subjects=Subjects(root), max_concurrent_activities=128)
    for workflow in (empty, chain5, fanout):
        runtime.register_workflow(workflow)
    runtime.register_activity(work)
    await runtime.start()
    print("ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runtime.shutdown()
    await nc.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
