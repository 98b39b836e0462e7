"""The service base every building block stands on.

A block service is a `nats.micro` service (so `$SRV.PING|INFO|STATS` and `nats micro` see every
replica) whose endpoints listen in a queue group on `<root>.<block>.*.<operation>`. What the base
adds to nats.micro:

- each request runs in its own task, at most `max_concurrency` at once; nats-py's micro awaits one
  handler at a time per endpoint, which serialises load and deadlocks A -> B -> A call chains.
  Requests are taken from the endpoint's subscription as nats-py parses them (`_Arrivals`), not
  through its reader task and micro's handler wrapper: ~5 us less CPU per request;
- bodies are decoded (msgpack or JSON) and validated with the endpoint's pydantic model;
- a `NatriumError` becomes a micro error reply whose body is Dapr's `{errorCode, message}`;
  anything else is logged with its trace id and answered as `ERR_INTERNAL`, never a dead handler;
- a span per request, continuing the caller's `traceparent`;
- Prometheus counts and latency per endpoint (kernel/metrics.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import nats.errors
import nats.micro
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import DEFAULT_SUB_PENDING_MSGS_LIMIT, Subscription
from nats.micro.request import ERROR_CODE_HEADER, ERROR_HEADER, Request
from opentelemetry import trace
from pydantic import BaseModel, ValidationError

from kernel.codec import Encoding, content_headers, decode, encode, encoding_of
from kernel.components import Component, ComponentSet
from kernel.errors import Codes, NatriumError, malformed
from kernel.logs import REPLICA
from kernel.metrics import METRICS, RequestMetrics
from kernel.secretrefs import resolve_components
from kernel.subjects import Subjects
from kernel.tracing import bus_attributes, extract, fail, span

__all__ = [
    "Backend",
    "BlockService",
    "ComponentService",
    "Endpoint",
    "RequestContext",
    "describe_validation_error",
    "reply_body",
]

log = logging.getLogger("natrium.service")

Req = TypeVar("Req", bound=BaseModel)


@dataclass(frozen=True)
class RequestContext:
    """What a handler knows about the request beyond its body."""

    subject: str
    component: str
    headers: Mapping[str, str]
    encoding: Encoding


Handler = Callable[[Req, RequestContext], Awaitable[BaseModel | None]]


@dataclass(frozen=True)
class Endpoint(Generic[Req]):
    """One bus operation of a block: `<root>.<block>.<component>.<operation>`."""

    operation: str
    request_model: type[Req]
    handler: Handler[Req]


@dataclass
class BlockService:
    """Base of every block service; subclasses set `block` and return their `endpoints()`."""

    nc: Client
    subjects: Subjects = field(default_factory=Subjects)
    max_concurrency: int = 256
    """Requests handled at once by this replica; beyond it, NATS buffers (back-pressure)."""
    drain_timeout: float = 10.0
    """On stop, how long in-flight requests may take to finish and reply."""
    components: ComponentSet = field(default_factory=ComponentSet)
    """Every component loaded; `block_components()` picks this block's."""

    block: ClassVar[str] = "block"
    version: ClassVar[str] = "0.1.0"
    default_component: ClassVar[Component | None] = None
    """Served when the loaded set has no component of this block, as a fresh Dapr install has."""
    resolves_secret_refs: ClassVar[bool] = True
    """`start()` fills `secretKeyRef` metadata from the secrets block first (the secrets block itself: False)."""
    secret_refs_timeout: ClassVar[float] = 15.0
    """How long `start()` waits for the secrets service to answer."""

    def __post_init__(self) -> None:
        if self.max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self._tasks: set[asyncio.Task[None]] = set()
        self._waiting: deque[tuple[_Arrivals, Msg]] = deque()
        """Requests that arrived while `max_concurrency` ran: started in order as slots free up."""
        self._micro: nats.micro.Service | None = None
        self._micro_endpoints: dict[str, Any] = {}
        self._metrics: dict[str, RequestMetrics] = {}

    # -- for subclasses ---------------------------------------------------------------------

    def endpoints(self) -> list[Endpoint[Any]]:
        raise NotImplementedError

    def block_components(self) -> list[Component]:
        return self.components.for_block(self.block, self.default_component)

    def info_metadata(self) -> dict[str, str]:
        """Extra `$SRV.INFO` metadata (string values), e.g. the components this block serves."""
        return {}

    async def setup(self) -> None:
        """Prepare resources before endpoints start listening."""

    async def teardown(self) -> None:
        """Release resources after the last in-flight request finished."""

    async def resolve_secret_refs(self) -> None:
        """Replace this block's `secretKeyRef` metadata with the secrets' values, asked over the bus."""
        self.components = await resolve_components(
            self.nc, self.subjects, self.components, self.block_components(), timeout=self.secret_refs_timeout
        )

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def micro(self) -> nats.micro.Service:
        if self._micro is None:
            raise RuntimeError("service not started")
        return self._micro

    async def start(self) -> None:
        if self.resolves_secret_refs:
            await self.resolve_secret_refs()
        await self.setup()
        self._micro = await nats.micro.add_service(
            self.nc,
            name=f"natrium-{self.block}",
            version=self.version,
            description=f"natrium {self.block} building block",
            metadata={
                "natrium.block": self.block,
                "natrium.root": self.subjects.root,
                # The `replica` field of this process's log lines, so `natrium status` names the same one.
                "natrium.replica": REPLICA,
                **self.info_metadata(),
            },
            queue_group=f"{self.subjects.root}.{self.block}",
        )
        for endpoint in self.endpoints():
            await self._micro.add_endpoint(
                name=endpoint.operation,
                subject=self.subjects.block_wildcard(self.block, endpoint.operation),
                handler=self._dispatcher(endpoint),
            )
            # nats.micro keeps no handle to an endpoint; it is the one just appended.
            micro_endpoint = self._micro._endpoints[-1]
            self._micro_endpoints[endpoint.operation] = micro_endpoint
            _Arrivals(endpoint, micro_endpoint, self._arrive).take_over()
            self._metrics[endpoint.operation] = METRICS.for_endpoint(self.block, endpoint.operation)
        log.info("service started", extra={"block": self.block, "service_id": self._micro.id})

    async def stop(self) -> None:
        """Stop taking requests, let in-flight ones reply, then release resources."""
        if self._micro is not None:
            try:
                await self._micro.stop()
            except nats.errors.ConnectionClosedError:
                pass  # the connection went first: its subscriptions are gone already
        # Never started: dropped, as nats-py drops what an unsubscribed subscription still held.
        self._waiting.clear()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=self.drain_timeout)
            for task in pending:
                task.cancel()
        await self.teardown()

    # -- request path -------------------------------------------------------------------------

    def _dispatcher(self, endpoint: Endpoint[Any]) -> Callable[[Request], Awaitable[None]]:
        """micro's handler, only for a request its reader task took before `_Arrivals` took over
        (there is no await between the two, so in practice none)."""

        async def dispatch(request: Request) -> None:
            self._launch(endpoint, request._msg)

        return dispatch

    def _arrive(self, arrivals: _Arrivals, msg: Msg) -> None:
        if len(self._tasks) < self.max_concurrency:
            self._start(arrivals, msg)
        elif len(self._waiting) < DEFAULT_SUB_PENDING_MSGS_LIMIT:
            self._waiting.append((arrivals, msg))  # back-pressure: held, as nats-py's queue held it
        else:
            raise asyncio.QueueFull  # nats-py drops the request and reports a slow consumer

    def _start(self, arrivals: _Arrivals, msg: Msg) -> None:
        arrivals.release(msg)
        self._launch(arrivals.endpoint, msg)

    def _launch(self, endpoint: Endpoint[Any], msg: Msg) -> None:
        task = asyncio.get_running_loop().create_task(self._serve(endpoint, msg))
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._waiting:
            self._start(*self._waiting.popleft())

    async def _serve(self, endpoint: Endpoint[Any], msg: Msg) -> None:
        started = time.perf_counter_ns()
        headers = msg.headers or {}
        encoding = encoding_of(headers)
        error: NatriumError | None = None
        name = f"{self.block}.{endpoint.operation}"
        attributes = partial(bus_attributes, msg.subject)
        with span(name, extract(headers), trace.SpanKind.SERVER, attributes) as active:
            try:
                model = self._parse(endpoint, msg.data, encoding)
                app_id = getattr(model, "app_id", None) if active.is_recording() else None
                if isinstance(app_id, str) and app_id:
                    active.set_attribute("natrium.app_id", app_id)
                ctx = RequestContext(
                    subject=msg.subject,
                    component=self.subjects.component_of(msg.subject),
                    headers=headers,
                    encoding=encoding,
                )
                reply = await endpoint.handler(model, ctx)
                await self._respond(msg, reply_body(reply, encoding), content_headers(encoding) or None)
            except NatriumError as exc:
                error = exc
            except Exception as exc:  # a bug must cost one request, never the service
                log.exception("handler failed", extra={"subject": msg.subject})
                error = NatriumError("ERR_INTERNAL", f"{type(exc).__name__}: {exc}", status=500)
            if error is not None:
                fail(active, error.code)
                await self._respond_error(msg, error, encoding)
        self._record(endpoint, time.perf_counter_ns() - started, error)

    async def _respond(self, msg: Msg, data: bytes, headers: dict[str, str] | None) -> None:
        if not msg.reply:
            raise ValueError("no reply subject set")  # published, not requested: nobody to answer
        await self.nc.publish(msg.reply, data, headers=headers)

    @staticmethod
    def _parse(endpoint: Endpoint[Any], data: bytes, encoding: Encoding) -> BaseModel:
        try:
            body = decode(data, encoding)
        except ValueError as exc:
            raise malformed(f"request body is not valid {encoding.name.lower()}: {exc}") from None
        try:
            return endpoint.request_model.model_validate({} if body is None else body)
        except ValidationError as exc:
            raise coded_error(exc) or malformed(describe_validation_error(exc)) from None

    async def _respond_error(self, msg: Msg, error: NatriumError, encoding: Encoding) -> None:
        headers = content_headers(encoding)
        # Header values must be one line; the body carries the full message.
        headers[ERROR_HEADER] = error.message.replace("\r", " ").replace("\n", " ")[:512]
        headers[ERROR_CODE_HEADER] = str(error.status)
        body = error.to_body()
        if error.retryable:
            body["retryable"] = True
        try:
            await self._respond(msg, encode(body, encoding), headers)
        except Exception:
            log.exception("could not send error reply", extra={"subject": msg.subject})

    def _record(self, endpoint: Endpoint[Any], elapsed_ns: int, error: NatriumError | None) -> None:
        """Count the request in the metrics, and keep `$SRV.STATS` true: micro only timed the
        dispatch, not the work, and saw no error."""
        measured = self._metrics.get(endpoint.operation)
        if measured is not None:
            measured.record(elapsed_ns, None if error is None else error.code)
        micro_endpoint = self._micro_endpoints.get(endpoint.operation)
        if micro_endpoint is None:
            return
        micro_endpoint._processing_time += elapsed_ns
        if micro_endpoint._num_requests:
            micro_endpoint._average_processing_time = int(
                micro_endpoint._processing_time / micro_endpoint._num_requests
            )
        if error is not None:
            micro_endpoint._num_errors += 1
            micro_endpoint._last_error = f"{error.status}:{error.code}: {error.message}"


class _Arrivals(asyncio.Queue[Msg]):
    """The queue of an endpoint's subscription, taken over from nats-py: each request nats-py puts
    here goes straight to the service (started, or held while `max_concurrency` run), instead of
    waiting for the subscription's reader task and micro's handler wrapper to pass it on."""

    def __init__(self, endpoint: Endpoint[Any], micro_endpoint: Any, arrive: Callable[[_Arrivals, Msg], None]) -> None:
        super().__init__()
        self.endpoint = endpoint
        self._micro_endpoint = micro_endpoint
        self._sub: Subscription = micro_endpoint._subscription
        self._arrive = arrive

    def take_over(self) -> None:
        sub = self._sub
        earlier, sub._pending_queue = sub._pending_queue, self
        if sub._wait_for_msgs_task is not None:
            sub._wait_for_msgs_task.cancel()  # it can only be waiting on `earlier`, never mid-request
        while not earlier.empty():
            self.put_nowait(earlier.get_nowait())

    def put_nowait(self, item: Msg) -> None:
        self._arrive(self, item)
        self._micro_endpoint._num_requests += 1  # micro's count, as its handler wrapper kept it

    def release(self, msg: Msg) -> None:
        """`msg` starts: nats-py counts its bytes against the subscription's limit until then."""
        self._sub._pending_size -= len(msg.data)


def reply_body(reply: BaseModel | None, encoding: Encoding) -> bytes:
    if reply is None:
        return b""
    mode = "json" if encoding is Encoding.JSON else "python"
    return encode(reply.model_dump(mode=mode, by_alias=True, exclude_none=True), encoding)


CODED_ERROR = "natrium_coded"
"""The pydantic error type of a schema check that carries its own Dapr code (`ctx`: code, status)."""


def coded_error(exc: ValidationError) -> NatriumError | None:
    """The Dapr error a schema validator named (an empty topic is ERR_TOPIC_NAME_EMPTY, not a
    malformed body), when one did."""
    for err in exc.errors():
        if err["type"] == CODED_ERROR and "ctx" in err:
            return NatriumError(err["ctx"]["code"], err["msg"], status=int(err["ctx"]["status"]))
    return None


def describe_validation_error(exc: ValidationError) -> str:
    """A one-line account of what is wrong with a body, naming the fields."""
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    more = f" (+{exc.error_count() - 5} more)" if exc.error_count() > 5 else ""
    return "invalid request body: " + "; ".join(parts) + more


class Backend(Protocol):
    """What a block keeps per component: at least the component it was opened from."""

    component: Component


B = TypeVar("B", bound=Backend)


@dataclass
class ComponentService(BlockService, Generic[B]):
    """A block service with one backend per component (store, stream...), opened at start.

    Subclasses set `supported_types`, implement `open_component` and `not_found`; `store(ctx)`
    then finds the backend a request names. A component of another type, or one that fails to
    open, stops the service unless it sets `spec.ignoreErrors`, as in Dapr.
    """

    supported_types: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        self.stores: dict[str, B] = {}

    async def open_component(self, component: Component) -> B:
        raise NotImplementedError

    def not_found(self, name: str) -> NatriumError:
        raise NotImplementedError

    def capabilities_of(self, backend: B) -> list[str]:
        """What `/v1.0/metadata` lists for this backend (ETAG, TRANSACTIONAL...)."""
        return []

    def info_metadata(self) -> dict[str, str]:
        served = [b.component.describe(self.capabilities_of(b)) for b in self.stores.values()]
        return {"natrium.components": json.dumps(served)}

    async def setup(self) -> None:
        for component in self.block_components():
            try:
                if component.type not in self.supported_types:
                    raise NatriumError(
                        Codes.COMPONENT_INVALID,
                        f"component {component.name!r} ({component.source}): {self.block} type "
                        f"{component.type!r} is not supported; use one of {', '.join(self.supported_types)}",
                    )
                self.stores[component.name] = await self.open_component(component)
            except NatriumError as exc:
                if not component.ignore_errors:
                    raise
                log.warning(
                    "component skipped (ignoreErrors)", extra={"component": component.name, "error": exc.message}
                )

    def store(self, ctx: RequestContext) -> B:
        backend = self.stores.get(ctx.component)
        if backend is None:
            raise self.not_found(ctx.component)
        return backend
