"""The bindings building block: output calls to external systems, input events delivered to apps."""

from services.bindings.service import BindingsService

__all__ = ["BindingsService"]
