"""The bindings block on the bus: `<root>.bindings.<name>.{invoke,subscribe,inputs}`.

- `invoke` runs one output operation on the binding's driver, within the component's `timeout`.
- `subscribe` gives an app its durable consumer on an input binding's stream.
- `inputs` lists the input bindings an app may receive (any binding token answers it).

Every binding failure is daprd's `ERR_INVOKE_OUTPUT_BINDING` (500) with the target's message, the
unknown binding and the unsupported operation included, as daprd reports them.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from adapters.bindings import DRIVERS, driver_class
from adapters.bindings.base import BindingRequest, Driver, DriverEnv, TargetError
from kernel.components import Component
from kernel.durations import parse_duration
from kernel.errors import Codes, NatriumError
from kernel.service import ComponentService, Endpoint, RequestContext
from schemas.bindings import (
    BindingInfo,
    InputBindingsReply,
    InputBindingsRequest,
    InvokeBindingReply,
    InvokeBindingRequest,
    SubscribeBindingReply,
    SubscribeBindingRequest,
)
from services.bindings.events import BindingEvents, supervise

__all__ = ["BindingsService", "SUPPORTED_TYPES"]

log = logging.getLogger("natrium.bindings")

SUPPORTED_TYPES = tuple(DRIVERS)


@dataclass
class Binding:
    """One binding component: its driver, and for an input binding its event stream and reader."""

    component: Component
    driver: Driver
    timeout: float
    output: bool
    events: BindingEvents | None = None
    declared_input: bool = False
    """`direction` names input: the reader runs from the start and apps are not probed."""
    reader: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def route(self) -> str:
        return self.component.meta("route") or f"/{self.component.name}"

    def serves(self, app_id: str | None) -> bool:
        return not self.component.scopes or app_id is None or app_id in self.component.scopes


def _directions(component: Component) -> set[str]:
    raw = component.meta("direction") or ""
    return {part.strip().lower() for part in raw.split(",") if part.strip()}


class BindingsService(ComponentService[Binding]):
    """Serves every binding component of the loaded set; no default binding, as in Dapr."""

    block = "bindings"
    supported_types = SUPPORTED_TYPES

    def __post_init__(self) -> None:
        super().__post_init__()
        self._stop_readers = asyncio.Event()

    def endpoints(self) -> list[Endpoint[Any]]:
        return [
            Endpoint("invoke", InvokeBindingRequest, self.invoke),
            Endpoint("subscribe", SubscribeBindingRequest, self.subscribe),
            Endpoint("inputs", InputBindingsRequest, self.inputs),
        ]

    async def open_component(self, component: Component) -> Binding:
        directions = _directions(component)
        unknown = directions - {"input", "output"}
        if unknown:
            raise _invalid(component, f"direction must be input, output or both, got {component.meta('direction')!r}")
        driver = driver_class(component.type)(component, DriverEnv(self.nc, self.subjects))
        if "input" in directions and not driver.reads:
            raise _invalid(component, f"{component.type} has no input side; direction input is not possible")
        if "output" in directions and not driver.operations:
            raise _invalid(component, f"{component.type} has no output side; direction output is not possible")
        try:
            timeout = parse_duration(component.meta("timeout") or "30s")
        except ValueError as exc:
            raise _invalid(component, f"metadata timeout: {exc}") from None
        binding = Binding(
            component,
            driver,
            timeout,
            output=bool(driver.operations) and (not directions or "output" in directions),
            declared_input="input" in directions,
        )
        if driver.reads and (not directions or "input" in directions):
            binding.events = BindingEvents(self.nc, self.subjects, component, driver)
            await binding.events.open()
            # A source that is only read for apps: start at once when declared (or the app
            # interest outlived a restart); otherwise when the first app subscribes.
            if binding.declared_input or not driver.operations or await binding.events.has_consumers():
                self._start_reader(binding)
        return binding

    def _start_reader(self, binding: Binding) -> None:
        if binding.reader is not None or binding.events is None:
            return
        if type(binding.driver).read is Driver.read:
            return  # cron: the server fires the schedule, there is nothing to read
        name = binding.component.name
        binding.reader = asyncio.create_task(supervise(name, binding.driver, binding.events, self._stop_readers))
        log.info("input binding reading", extra={"binding": name})

    def not_found(self, name: str) -> NatriumError:
        return _failed(name, f"couldn't find output binding {name}")

    async def teardown(self) -> None:
        self._stop_readers.set()
        readers = [b.reader for b in self.stores.values() if b.reader is not None]
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        for binding in self.stores.values():
            try:
                await binding.driver.close()
            except Exception:
                log.exception("closing binding failed", extra={"binding": binding.component.name})

    # -- endpoints --------------------------------------------------------------------------------

    def _binding(self, ctx: RequestContext, app_id: str | None) -> Binding:
        binding = self.stores.get(ctx.component)
        if binding is None or not binding.serves(app_id):
            raise self.not_found(ctx.component)
        return binding

    async def invoke(self, request: InvokeBindingRequest, ctx: RequestContext) -> InvokeBindingReply:
        binding = self._binding(ctx, request.app_id)
        name = ctx.component
        if not binding.output:
            raise self.not_found(name)
        if not request.operation:
            raise _failed(name, "operation field is missing from request")
        operations = binding.driver.operations
        if request.operation not in operations:
            raise _failed(
                name,
                f"binding {name} does not support operation {request.operation}. "
                f"supported operations: {' '.join(operations)}",
            )
        call = BindingRequest(request.operation, request.data, dict(request.metadata))
        try:
            async with asyncio.timeout(binding.timeout):
                response = await binding.driver.invoke(call)
        except TargetError as exc:
            raise _failed(name, exc.message, exc.metadata) from None
        except TimeoutError:
            raise _failed(name, f"no answer from the target within {binding.timeout:g}s (metadata timeout)") from None
        return InvokeBindingReply(data=response.data, metadata=response.metadata)

    async def subscribe(self, request: SubscribeBindingRequest, ctx: RequestContext) -> SubscribeBindingReply:
        binding = self._binding(ctx, request.app_id)
        if binding.events is None:
            raise NatriumError(Codes.COMPONENT_INVALID, f"binding {ctx.component} is not an input binding", status=400)
        reply = await binding.events.subscribe(request.app_id)
        self._start_reader(binding)
        return reply

    async def inputs(self, request: InputBindingsRequest, ctx: RequestContext) -> InputBindingsReply:
        found = [
            BindingInfo(name=name, type=b.component.type, route=b.route, declared=b.declared_input)
            for name, b in sorted(self.stores.items())
            if b.events is not None and b.serves(request.app_id)
        ]
        return InputBindingsReply(bindings=found)


def _failed(name: str, why: str, metadata: dict[str, str] | None = None) -> NatriumError:
    """daprd's one code for a failed binding call; the target's metadata rides in `details`."""
    details = [{"metadata": metadata}] if metadata else None
    return NatriumError(
        Codes.INVOKE_OUTPUT_BINDING, f"error invoking output binding {name}: {why}", status=500, details=details
    )


def _invalid(component: Component, why: str) -> NatriumError:
    return NatriumError(Codes.COMPONENT_INVALID, f"component {component.name!r} ({component.source}): {why}")
