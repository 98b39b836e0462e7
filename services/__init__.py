"""One package per building block; each runs alone with `natrium service <block>`."""

from __future__ import annotations

from kernel.service import BlockService

__all__ = ["BLOCKS", "block_service"]

# block name -> "module:Class"; imported lazily so one block's dependencies never load another's.
BLOCKS = {
    "state": "services.state.service:StateService",
    "pubsub": "services.pubsub.service:PubsubService",
    "secrets": "services.secrets.service:SecretsService",
    "lock": "services.lock.service:LockService",
    "configuration": "services.configuration.service:ConfigurationService",
    "actors": "services.actors.service:ActorsService",
    "bindings": "services.bindings.service:BindingsService",
    "workflow": "services.workflow.service:WorkflowService",
}


def block_service(block: str) -> type[BlockService]:
    import importlib

    module_name, _, class_name = BLOCKS[block].partition(":")
    cls: type[BlockService] = getattr(importlib.import_module(module_name), class_name)
    return cls
