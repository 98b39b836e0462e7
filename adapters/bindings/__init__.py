"""Binding drivers, one module each; `driver_class(type)` imports only the one a component names.

Lazy on purpose: a deployment with only an HTTP binding never imports asyncpg, redis or aio-pika.
"""

from __future__ import annotations

import importlib

from adapters.bindings.base import Driver
from kernel.errors import Codes, NatriumError

__all__ = ["DRIVERS", "driver_class"]

# component type -> "module:Class"
DRIVERS = {
    "bindings.http": "adapters.bindings.http:HttpBinding",
    "bindings.postgresql": "adapters.bindings.postgresql:PostgresBinding",
    "bindings.postgres": "adapters.bindings.postgresql:PostgresBinding",
    "bindings.redis": "adapters.bindings.redis:RedisBinding",
    "bindings.mqtt3": "adapters.bindings.mqtt3:MqttBinding",
    "bindings.rabbitmq": "adapters.bindings.rabbitmq:RabbitBinding",
    "bindings.localstorage": "adapters.bindings.localstorage:LocalStorageBinding",
    "bindings.cron": "adapters.bindings.cron:CronBinding",
    "bindings.nats": "adapters.bindings.nats:NatsBinding",
}


def driver_class(component_type: str) -> type[Driver]:
    module_name, _, class_name = DRIVERS[component_type].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise NatriumError(
            Codes.COMPONENT_INVALID,
            f"{component_type} needs its client library ({exc.name}): pip install 'natrium[bindings]'",
        ) from None
    cls: type[Driver] = getattr(module, class_name)
    return cls
