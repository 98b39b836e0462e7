"""Dapr's error responses: `{"errorCode","message"}` JSON with the status the error carries."""

from __future__ import annotations

import json

from aiohttp import web

from kernel.errors import Codes, NatriumError

__all__ = ["error_response", "parse_json_body", "transport_as"]

# Errors that mean "the bus did not deliver", as opposed to a block's own answer.
_TRANSPORT = {Codes.NO_RESPONDERS, Codes.TIMEOUT}


def error_response(error: NatriumError) -> web.Response:
    return web.Response(
        status=error.status,
        body=json.dumps(error.to_body()).encode(),
        content_type="application/json",
    )


def transport_as(error: NatriumError, code: str, not_running: str | None = None) -> NatriumError:
    """Restate a transport failure as the block's own code, the way daprd reports a dead store."""
    if error.code not in _TRANSPORT:
        return error
    if error.code == Codes.NO_RESPONDERS and not_running:
        return NatriumError(not_running, f"{error.message}: is the service running?", status=500, retryable=True)
    return NatriumError(code, error.message, status=500, retryable=True)


async def parse_json_body(request: web.Request) -> object:
    raw = await request.read()
    if not raw.strip():
        raise NatriumError(Codes.MALFORMED_REQUEST, "request body is empty", status=400)
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise NatriumError(Codes.MALFORMED_REQUEST, f"request body is not valid JSON: {exc}", status=400) from None
