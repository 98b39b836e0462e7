"""Durable workflows for Python apps, with the Dapr Python SDK's names (`dapr.ext.workflow`).

A workflow is a generator `(ctx, input)` that yields tasks; activities are plain functions
`(ctx, input)`, sync or async. Code moves over from Dapr by changing imports (and awaiting the
client's methods, which are coroutines here):

    from adapters.sdk import workflow as wf

    runtime = wf.WorkflowRuntime(nc)

    @runtime.workflow(name="greet")
    def greet(ctx: wf.DaprWorkflowContext, names):
        greetings = yield wf.when_all([ctx.call_activity(hello, input=n) for n in names])
        return greetings

    @runtime.activity
    def hello(ctx, name):
        return f"hello {name}"

    await runtime.start()
    client = wf.DaprWorkflowClient(nc)
    instance_id = await client.schedule_new_workflow(greet, input=["a", "b"])
    state = await client.wait_for_workflow_completion(instance_id)
"""

from adapters.sdk.workflow.client import DaprWorkflowClient, WorkflowState, WorkflowStatus
from adapters.sdk.workflow.context import DaprWorkflowContext, WorkflowActivityContext
from adapters.sdk.workflow.runtime import WorkflowRuntime
from adapters.sdk.workflow.tasks import (
    NonDeterminismError,
    RetryPolicy,
    Task,
    TaskFailedError,
    when_all,
    when_any,
)

__all__ = [
    "DaprWorkflowClient",
    "DaprWorkflowContext",
    "NonDeterminismError",
    "RetryPolicy",
    "Task",
    "TaskFailedError",
    "WorkflowActivityContext",
    "WorkflowRuntime",
    "WorkflowState",
    "WorkflowStatus",
    "when_all",
    "when_any",
]
