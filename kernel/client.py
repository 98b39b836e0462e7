"""The caller's side of the bus contract: one request, one reply, errors rebuilt as NatriumError."""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any, TypeVar, overload

from nats.aio.client import Client
from nats.errors import MaxPayloadError, NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.micro.request import ERROR_CODE_HEADER, ERROR_HEADER
from opentelemetry import trace
from pydantic import BaseModel, ValidationError

from kernel.codec import Encoding, content_headers, decode, encode, encoding_of
from kernel.errors import Codes, NatriumError
from kernel.request import request
from kernel.tracing import bus_attributes, inject, span

__all__ = ["BusClient"]

Reply = TypeVar("Reply", bound=BaseModel)


class BusClient:
    """Sends block requests; the gateway and the Python SDK both go through this."""

    def __init__(
        self,
        nc: Client,
        *,
        encoding: Encoding = Encoding.MSGPACK,
        timeout: float = 5.0,
        no_responder_retries: int = 3,
    ) -> None:
        self.nc = nc
        self.encoding = encoding
        self.timeout = timeout
        # "No responders" means no replica got the request, so a retry can never apply it twice;
        # it covers the moment a replica restarts. Timeouts are ambiguous and are not retried.
        self.no_responder_retries = no_responder_retries

    @overload
    async def request(
        self,
        subject: str,
        body: BaseModel | dict[str, Any],
        reply_model: type[Reply],
        *,
        timeout: float | None = None,
    ) -> Reply: ...

    @overload
    async def request(
        self,
        subject: str,
        body: BaseModel | dict[str, Any],
        reply_model: None = None,
        *,
        timeout: float | None = None,
    ) -> Any: ...

    async def request(
        self,
        subject: str,
        body: BaseModel | dict[str, Any],
        reply_model: type[Reply] | None = None,
        *,
        timeout: float | None = None,
    ) -> Reply | Any:
        """Send `body`, return the validated reply (or the decoded body when no model is given)."""
        if isinstance(body, BaseModel):
            mode = "json" if self.encoding is Encoding.JSON else "python"
            body = body.model_dump(mode=mode, by_alias=True, exclude_none=True)
        payload = encode(body, self.encoding)
        attributes = partial(bus_attributes, subject, body.get("appId"))
        # The span covers the reply's decoding, so an error reply marks it failed with its code.
        with span(subject, None, trace.SpanKind.CLIENT, attributes):
            headers = inject(content_headers(self.encoding))
            msg = await self._send(subject, payload, headers, timeout or self.timeout)
            reply_headers = msg.headers or {}
            reply_encoding = encoding_of(reply_headers)
            try:
                decoded = decode(msg.data, reply_encoding)
            except ValueError as exc:
                raise NatriumError(Codes.INTERNAL, f"undecodable reply on {subject}: {exc}") from None
            if ERROR_CODE_HEADER in reply_headers:
                status = _status(reply_headers[ERROR_CODE_HEADER])
                raise NatriumError.from_body(status, decoded, reply_headers.get(ERROR_HEADER, ""))
        if reply_model is None:
            return decoded
        try:
            return reply_model.model_validate(decoded if decoded is not None else {})
        except ValidationError as exc:
            raise NatriumError(Codes.INTERNAL, f"unexpected reply on {subject}: {exc}") from None

    async def _send(self, subject: str, payload: bytes, headers: dict[str, str], timeout: float) -> Any:
        attempt = 0
        while True:
            try:
                return await request(self.nc, subject, payload, headers=headers or None, timeout=timeout)
            except NoRespondersError:
                if attempt >= self.no_responder_retries:
                    raise NatriumError(
                        Codes.NO_RESPONDERS,
                        f"no service is answering on {subject}",
                        status=503,
                        retryable=True,
                    ) from None
                attempt += 1
                await asyncio.sleep(0.05 * 2**attempt)
            except (TimeoutError, NatsTimeoutError):
                raise NatriumError(
                    Codes.TIMEOUT, f"no reply on {subject} within {timeout:g}s", status=504, retryable=True
                ) from None
            except MaxPayloadError:
                limit = self.nc.max_payload
                raise NatriumError(
                    Codes.REQUEST_TOO_LARGE,
                    f"request of {len(payload)} bytes is over the bus limit of {limit} bytes",
                    status=413,
                ) from None


def _status(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        return 500
