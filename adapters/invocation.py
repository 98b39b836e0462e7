"""Service invocation over the bus: the caller's `invoke()` and the callee's `InvocationServer`.

One HTTP call is one NATS request (see schemas/invoke.py): no sidecar hop, and the app's replicas
share calls through a queue group. A call that no replica receives ("no responders") is retried
three times a second apart, daprd's built-in retry for transport failures; anything else follows
the app's Resiliency policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import nats.errors
from multidict import CIMultiDict
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.micro.request import ERROR_CODE_HEADER, ERROR_HEADER
from opentelemetry import trace
from opentelemetry.util.types import AttributeValue

from adapters.resiliency import AppPolicy
from kernel.errors import Codes, NatriumError
from kernel.metrics import METRICS
from kernel.subjects import Subjects
from kernel.tracing import extract, fail, inject, span
from schemas.invoke import CALLER, GRPC_STATUS, HOP_BY_HOP, PATH, QUERY, STATUS, VERB

__all__ = [
    "InvocationServer",
    "InvokeRequest",
    "InvokeResponse",
    "forwardable",
    "http_headers",
    "invoke",
    "to_body",
    "to_response",
]

log = logging.getLogger("natrium.invoke")
SET_COOKIE = "Set-Cookie"
_NUMBERED_COOKIE = re.compile(r"set-cookie\.\d+", re.IGNORECASE)
BUILT_IN_RETRIES = 3
BUILT_IN_RETRY_WAIT = 1.0


@dataclass
class InvokeRequest:
    app_id: str
    method: str
    """The path the callee sees, starting with '/'."""
    verb: str = "POST"
    query: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    caller: str | None = None


@dataclass
class InvokeResponse:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    grpc_code: int | None = None
    """A gRPC callee's status code when it failed; None for HTTP apps."""

    @property
    def failed(self) -> bool:
        """A failure for retries and breakers (the answer is still returned as it is)."""
        return not 200 <= self.status <= 399


def forwardable(headers: Mapping[str, str]) -> dict[str, str]:
    """Headers that describe the call, one value each, as NATS headers are in nats-py.

    `headers` may be a multidict (aiohttp's): repeated fields are joined with ", " as HTTP allows,
    except Set-Cookie, which cannot be joined and travels as Set-Cookie, Set-Cookie.2, ..."""
    out: dict[str, str] = {}
    spelled: dict[str, str] = {}  # lower-case name -> the key it was first seen as
    cookies = 0
    for key, value in headers.items():
        low = key.lower()
        if low in HOP_BY_HOP or low.startswith(("natrium-", "nats-")):
            continue
        if low == "set-cookie":
            cookies += 1
            out[key if cookies == 1 else f"{SET_COOKIE}.{cookies}"] = value
        elif low in spelled:
            out[spelled[low]] = f"{out[spelled[low]]}, {value}"
        else:
            spelled[low] = key
            out[key] = value
    return out


def http_headers(headers: Mapping[str, str]) -> CIMultiDict[str]:
    """Bus headers back to HTTP: the numbered Set-Cookie fields become repeated ones again."""
    out: CIMultiDict[str] = CIMultiDict()
    for key, value in headers.items():
        out.add(SET_COOKIE if _NUMBERED_COOKIE.fullmatch(key) else key, value)
    return out


async def invoke(
    nc: Client,
    subjects: Subjects,
    request: InvokeRequest,
    *,
    timeout: float = 60.0,
    policy: AppPolicy | None = None,
) -> InvokeResponse:
    """Call `request.app_id`; raises NatriumError(ERR_DIRECT_INVOKE) when no answer comes back."""
    subject = subjects.invoke(request.app_id, request.method)
    # Only the runtime says who calls: a caller's own dapr-caller-app-id would be a forged identity.
    headers = {k: v for k, v in forwardable(request.headers).items() if k.lower() != CALLER}
    headers[VERB] = request.verb.upper()
    headers[PATH] = request.method
    if request.query:
        headers[QUERY] = request.query
    if request.caller:
        headers[CALLER] = request.caller

    async def attempt(limit: float | None) -> InvokeResponse:
        return await _one_call(nc, subject, request, headers, limit or timeout)

    try:
        if policy is None:
            response = await attempt(None)
        else:
            retry = policy.retry
            response = await policy.call(
                attempt,
                lambda r: r.failed,
                answer_retriable=lambda r: retry is None or retry.retries_answer(r.status, r.grpc_code),
            )
    except NatriumError as exc:
        METRICS.invocations_sent.labels(request.app_id, exc.code).inc()
        raise
    METRICS.invocations_sent.labels(request.app_id, str(response.status)).inc()
    return response


async def _one_call(
    nc: Client, subject: str, request: InvokeRequest, headers: dict[str, str], timeout: float
) -> InvokeResponse:
    attributes = partial(_attributes, subject, "invoke", request.caller, request.app_id)
    with span(f"invoke {request.app_id}{request.method}", None, trace.SpanKind.CLIENT, attributes) as active:
        inject(headers)
        for attempt in range(BUILT_IN_RETRIES + 1):
            try:
                msg = await nc.request(subject, request.body, timeout=timeout, headers=headers)
                break
            except nats.errors.NoRespondersError:
                if attempt == BUILT_IN_RETRIES:
                    raise NatriumError(
                        Codes.DIRECT_INVOKE,
                        f"failed to invoke, id: {request.app_id}, err: no instance of the app is running "
                        f"(no responders on {subject})",
                        status=500,
                        retryable=True,
                    ) from None
                await asyncio.sleep(BUILT_IN_RETRY_WAIT)
            except (nats.errors.TimeoutError, TimeoutError):
                raise NatriumError(
                    Codes.DIRECT_INVOKE,
                    f"failed to invoke, id: {request.app_id}, err: no answer within {timeout:g}s",
                    status=500,
                    retryable=True,
                ) from None
            except nats.errors.MaxPayloadError:
                raise NatriumError(
                    Codes.DIRECT_INVOKE, f"failed to invoke, id: {request.app_id}, err: body over the bus limit"
                ) from None
        reply_headers = dict(msg.headers or {})
        if ERROR_CODE_HEADER in reply_headers:
            try:
                body = json.loads(msg.data)
            except ValueError:
                body = None
            raise NatriumError.from_body(
                int(reply_headers[ERROR_CODE_HEADER]), body, reply_headers.get(ERROR_HEADER, "")
            )
        grpc_code = reply_headers.pop(GRPC_STATUS, None)
        response = InvokeResponse(
            int(reply_headers.pop(STATUS, "200")),
            reply_headers,
            msg.data,
            int(grpc_code) if grpc_code is not None else None,
        )
        _answered(active, response)
        return response


def _attributes(subject: str, operation: str, app_id: str | None, target: str) -> dict[str, AttributeValue]:
    """Span attributes of a call to `target` on the bus, made or served as `app_id`."""
    attributes: dict[str, AttributeValue] = {
        "messaging.system": "nats",
        "messaging.destination.name": subject,
        "messaging.operation": operation,
        "natrium.block": "invoke",
        "natrium.target_app_id": target,
    }
    if app_id:
        attributes["natrium.app_id"] = app_id
    return attributes


def _answered(active: trace.Span, response: InvokeResponse) -> None:
    if active.is_recording():
        active.set_attribute("http.response.status_code", response.status)
        if response.failed:
            fail(active, f"HTTP {response.status}")


def to_body(data: Any) -> tuple[bytes, str | None]:
    """(body, content type) for a call's data: bytes as they are, text as text, the rest as JSON."""
    if data is None:
        return b"", None
    if isinstance(data, bytes):
        return data, "application/octet-stream"
    if isinstance(data, str):
        return data.encode(), "text/plain; charset=utf-8"
    return json.dumps(data, separators=(",", ":")).encode(), "application/json"


def to_response(result: Any) -> InvokeResponse:
    """What a Python method handler returned, as the HTTP answer daprd would relay."""
    if isinstance(result, InvokeResponse):
        return result
    body, content_type = to_body(result)
    return InvokeResponse(200, {"Content-Type": content_type} if content_type else {}, body)


Handler = Callable[[InvokeRequest], Awaitable[InvokeResponse]]


class InvocationServer:
    """Receives an app's calls from the bus (queue group per app id) and answers with `handler`."""

    def __init__(
        self, nc: Client, subjects: Subjects, app_id: str, handler: Handler, max_concurrency: int = 256
    ) -> None:
        self.nc = nc
        self.subjects = subjects
        self.app_id = app_id
        self.handler = handler
        self._slots = asyncio.Semaphore(max_concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._sub: Subscription | None = None

    async def start(self) -> None:
        subject, queue = self.subjects.invoke_listen(self.app_id)
        self._sub = await self.nc.subscribe(subject, queue=queue, cb=self._dispatch)
        await self.nc.flush()

    async def pause(self) -> None:
        """Leave the queue group (calls go to the other replicas); the ones in flight still answer.
        `start()` joins again."""
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    async def stop(self, drain_timeout: float = 10.0) -> None:
        """Stop taking calls, let the ones in flight answer."""
        await self.pause()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=drain_timeout)

    async def _dispatch(self, msg: Msg) -> None:
        await self._slots.acquire()
        task = asyncio.create_task(self._serve(msg))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()

    async def _serve(self, msg: Msg) -> None:
        headers = dict(msg.headers or {})
        request = InvokeRequest(
            app_id=self.app_id,
            method=headers.pop(PATH, "/"),
            verb=headers.pop(VERB, "POST"),
            query=headers.pop(QUERY, ""),
            caller=headers.get(CALLER),
            headers=headers,
            body=msg.data,
        )
        attributes = partial(_attributes, msg.subject, "serve", self.app_id, self.app_id)
        started = time.perf_counter()
        status = 500
        with span(f"serve {request.method}", extract(headers), trace.SpanKind.SERVER, attributes) as active:
            try:
                response = await self.handler(request)
                _answered(active, response)
                reply_headers = forwardable(response.headers)
                reply_headers[STATUS] = str(response.status)
                if response.grpc_code is not None:
                    reply_headers[GRPC_STATUS] = str(response.grpc_code)
                status = response.status
                await self._reply(msg, response.body, reply_headers)
            except NatriumError as exc:
                fail(active, exc.code)
                status = exc.status
                await self._reply(msg, json.dumps(exc.to_body()).encode(), _error_headers(exc))
            except Exception as exc:  # the call fails, the app keeps serving
                log.exception("invocation handler failed", extra={"method": request.method})
                error = NatriumError(Codes.DIRECT_INVOKE, f"failed to invoke, id: {self.app_id}, err: {exc}")
                fail(active, error.code)
                await self._reply(msg, json.dumps(error.to_body()).encode(), _error_headers(error))
        METRICS.invocations_served.labels(self.app_id, str(status)).inc()
        METRICS.invocation_seconds.labels(self.app_id).observe(time.perf_counter() - started)

    async def _reply(self, msg: Msg, body: bytes, headers: dict[str, str]) -> None:
        if not msg.reply:
            return
        try:
            await self.nc.publish(msg.reply, body, headers=headers)
        except Exception as exc:
            log.warning("could not reply to an invocation: %s", exc)


def _error_headers(error: NatriumError) -> dict[str, str]:
    return {ERROR_CODE_HEADER: str(error.status), ERROR_HEADER: error.message.replace("\n", " ")[:512]}
