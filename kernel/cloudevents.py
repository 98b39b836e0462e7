"""CloudEvents 1.0 envelopes the way daprd builds them, and the reading side for subscribers.

Written by hand rather than with the `cloudevents` SDK: Dapr's envelope is a plain JSON object with
its own extension attributes (`topic`, `pubsubname`, `traceid`...) and data-embedding rules, and
the SDK's event classes would only be converted back into that dict on every message.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from typing import Any

from kernel.errors import Codes, NatriumError

__all__ = [
    "CLOUDEVENTS_JSON",
    "RAW_PAYLOAD_HEADER",
    "EVENT_TYPE",
    "data_of",
    "is_json_type",
    "new_envelope",
    "parse_structured",
    "rfc3339",
]

CLOUDEVENTS_JSON = "application/cloudevents+json"
# A message published with rawPayload=true carries the body as is, marked by this header.
RAW_PAYLOAD_HEADER = "Natrium-Raw-Payload"
EVENT_TYPE = "com.dapr.event.sent"
_OVERRIDABLE = ("id", "source", "type", "subject")


def rfc3339(moment: dt.datetime | None = None) -> str:
    moment = moment or dt.datetime.now(dt.UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def is_json_type(content_type: str) -> bool:
    """Only `application/json` (parameters allowed, `+json` types not) is embedded as JSON, as in Dapr."""
    return content_type.split(";", 1)[0].strip().lower() == "application/json"


def new_envelope(
    data: bytes,
    content_type: str | None,
    *,
    topic: str,
    pubsub: str,
    source: str,
    metadata: dict[str, str],
    traceparent: str | None = None,
    tracestate: str | None = None,
) -> dict[str, Any]:
    """Wrap a published body; `metadata` may carry `cloudevent.<attr>` overrides and `ttlInSeconds`."""
    ctype = content_type or "text/plain"
    event: dict[str, Any] = {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": source,
        "type": EVENT_TYPE,
        "datacontenttype": ctype,
        "topic": topic,
        "pubsubname": pubsub,
        "time": rfc3339(),
    }
    for attr in _OVERRIDABLE:
        value = metadata.get(f"cloudevent.{attr}")
        if value:
            event[attr] = value
    traceparent = metadata.get("cloudevent.traceparent") or metadata.get("cloudevent.traceid") or traceparent
    tracestate = metadata.get("cloudevent.tracestate") or tracestate
    if traceparent:
        event["traceid"] = event["traceparent"] = traceparent
    if tracestate:
        event["tracestate"] = tracestate
    _embed(event, data, ctype)
    return event


def _embed(event: dict[str, Any], data: bytes, ctype: str) -> None:
    base = ctype.split(";", 1)[0].strip().lower()
    if is_json_type(ctype):
        try:
            event["data"] = json.loads(data)
            return
        except (ValueError, UnicodeDecodeError):
            pass  # daprd falls back to a string for JSON that does not parse
    if base == "application/octet-stream":
        event["data_base64"] = base64.b64encode(data).decode()
        return
    try:
        event["data"] = data.decode("utf-8")
    except UnicodeDecodeError:
        event["data_base64"] = base64.b64encode(data).decode()


def parse_structured(
    body: bytes,
    *,
    topic: str,
    pubsub: str,
    source: str,
    traceparent: str | None = None,
    tracestate: str | None = None,
) -> dict[str, Any]:
    """A body that already is a CloudEvent (`application/cloudevents+json`), completed as daprd does."""
    try:
        event = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise NatriumError(
            Codes.PUBSUB_EVENTS_SER, f"body is not a valid CloudEvent JSON document: {exc}", status=400
        ) from None
    if not isinstance(event, dict):
        raise NatriumError(Codes.PUBSUB_EVENTS_SER, "a CloudEvent must be a JSON object", status=400)
    event.setdefault("id", str(uuid.uuid4()))
    event.setdefault("source", source)
    event.setdefault("type", EVENT_TYPE)
    event.setdefault("specversion", "1.0")
    event.setdefault("time", rfc3339())
    if traceparent:
        event.setdefault("traceid", traceparent)
        event.setdefault("traceparent", traceparent)
    if tracestate:
        event.setdefault("tracestate", tracestate)
    event["topic"] = topic
    event["pubsubname"] = pubsub
    for attr in ("id", "source", "type", "specversion"):
        if not isinstance(event[attr], str) or not event[attr]:
            raise NatriumError(
                Codes.PUBSUB_EVENTS_SER,
                f"CloudEvent attribute {attr!r} must be a non-empty string",
                status=400,
            )
    return event


def data_of(event: dict[str, Any]) -> Any:
    """The payload a handler wants: the JSON value, the bytes of `data_base64`, or the string."""
    if "data_base64" in event:
        return base64.b64decode(event["data_base64"])
    return event.get("data")
