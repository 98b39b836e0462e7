"""The state building block on JetStream KV."""

from services.state.service import StateService

__all__ = ["StateService"]
