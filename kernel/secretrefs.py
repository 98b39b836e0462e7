"""Component metadata kept in a secret store (`secretKeyRef`), resolved over the bus at service start.

    spec:
      metadata:
      - name: password
        secretKeyRef: {name: db-pass, key: password}   # key defaults to the name
    auth:
      secretStore: vault                               # natrium's default store when omitted

Each reference is one `<root>.secrets.<store>.get` request. Block services start in any order, so a
missing secrets service is waited for (a few seconds); any other failure names the component, the
metadata item and the secret.
"""

from __future__ import annotations

import asyncio
import logging

from nats.aio.client import Client

from kernel.client import BusClient
from kernel.components import Component, ComponentSet, SecretKeyRef
from kernel.errors import Codes, NatriumError
from kernel.subjects import Subjects
from schemas.secrets import GetSecretReply

__all__ = ["DEFAULT_SECRET_STORE", "resolve_component", "resolve_components"]

log = logging.getLogger("natrium.secretrefs")

DEFAULT_SECRET_STORE = "secretstore"
# The secrets service may still be starting (natrium up starts every block at once).
_WAITABLE = {Codes.NO_RESPONDERS, Codes.TIMEOUT}


async def resolve_components(
    nc: Client, subjects: Subjects, components: ComponentSet, which: list[Component], *, timeout: float = 15.0
) -> ComponentSet:
    """`components` with the references of `which` filled in; a failing component with
    `ignoreErrors: true` is left out, any other failure raises ERR_COMPONENT_INVALID."""
    replaced: dict[str, Component | None] = {}
    for component in which:
        if not component.secret_refs:
            continue
        try:
            replaced[component.name] = await resolve_component(nc, subjects, component, timeout=timeout)
        except NatriumError as exc:
            if not component.ignore_errors:
                raise
            log.warning("component skipped (ignoreErrors)", extra={"component": component.name, "error": exc.message})
            replaced[component.name] = None
    if not replaced:
        return components
    kept = [replaced.get(c.name, c) for c in components.components]
    skipped = [c for c in components.components if c.name in replaced and replaced[c.name] is None]
    return ComponentSet(
        components=[c for c in kept if c is not None],
        resources=components.resources,
        skipped=[*components.skipped, *skipped],
    )


async def resolve_component(
    nc: Client, subjects: Subjects, component: Component, *, timeout: float = 15.0
) -> Component:
    """The component with every `secretKeyRef` replaced by the secret's value."""
    store = component.secret_store or DEFAULT_SECRET_STORE
    bus = BusClient(nc, timeout=min(5.0, timeout))
    deadline = asyncio.get_running_loop().time() + timeout
    fetched: dict[str, dict[str, str]] = {}
    metadata = dict(component.metadata)
    for item, ref in component.secret_refs.items():
        if ref.name not in fetched:
            fetched[ref.name] = await _fetch(bus, subjects, store, component, item, ref, deadline)
        key = ref.key or ref.name
        data = fetched[ref.name]
        if key not in data:
            raise _failure(
                component, item, ref, store, f"the secret has no key {key!r} (it has {', '.join(sorted(data))})"
            )
        metadata[item] = data[key]
    return component.model_copy(update={"metadata": metadata, "secret_refs": {}})


async def _fetch(
    bus: BusClient, subjects: Subjects, store: str, component: Component, item: str, ref: SecretKeyRef, deadline: float
) -> dict[str, str]:
    subject = subjects.block("secrets", store, "get")
    loop = asyncio.get_running_loop()
    while True:
        try:
            reply = await bus.request(subject, {"name": ref.name}, GetSecretReply)
        except NatriumError as exc:
            if exc.code in _WAITABLE and loop.time() < deadline:
                await asyncio.sleep(0.25)
                continue
            why = exc.message
            if exc.code == Codes.NO_RESPONDERS:
                why += " (is the secrets service running?)"
            raise _failure(component, item, ref, store, why) from None
        return reply.data


def _failure(component: Component, item: str, ref: SecretKeyRef, store: str, why: str) -> NatriumError:
    return NatriumError(
        Codes.COMPONENT_INVALID,
        f"component {component.name!r} ({component.source}): metadata {item}: cannot resolve secretKeyRef "
        f"{ref.name!r} from secret store {store!r}: {why}",
    )
