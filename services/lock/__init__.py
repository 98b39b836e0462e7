"""The distributed lock building block on JetStream KV."""

from services.lock.service import LockService

__all__ = ["LockService"]
