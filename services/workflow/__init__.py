"""The workflow building block: event-sourced, durable orchestrations on JetStream."""

from services.workflow.service import WorkflowService

__all__ = ["WorkflowService"]
