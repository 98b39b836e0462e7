"""The configuration building block on JetStream KV: get, set, delete, subscribe as a KV watch."""

from services.configuration.service import ConfigurationService

__all__ = ["ConfigurationService"]
