"""The actors block: actor state, durable reminders, and actor calls for plain NATS clients."""

from services.actors.service import ActorsService

__all__ = ["ActorsService"]
