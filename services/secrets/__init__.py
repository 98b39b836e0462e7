"""The secrets building block: sealed secrets in a JetStream object store, and Dapr's local stores."""

from services.secrets.service import SecretsService

__all__ = ["SecretsService"]
