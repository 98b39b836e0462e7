"""Structured logs: one JSON object per line on stderr, with the trace id of the active span.

On a terminal the same fields are printed as readable text, unless `NATRIUM_LOG_FORMAT=json`.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time

from kernel.tracing import current_ids

__all__ = ["JsonFormatter", "REPLICA", "TextFormatter", "setup_logging"]

# LogRecord attributes that are not user-supplied `extra=` fields.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


# Which copy of a service wrote a line, when several run side by side or on several hosts.
REPLICA = f"{socket.gethostname()}:{os.getpid()}"


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def fields(self, record: logging.LogRecord) -> dict[str, object]:
        entry: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "replica": REPLICA,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        ids = current_ids()
        if ids:
            entry["trace_id"], entry["span_id"] = ids
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                # An extra never hides a fixed field (`component` of a store is not the service).
                entry[f"extra_{key}" if key in entry else key] = value
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return entry

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(self.fields(record), default=str, ensure_ascii=False)


class TextFormatter(JsonFormatter):
    """The same fields for a person: `time level service msg key=value ...`."""

    def format(self, record: logging.LogRecord) -> str:
        entry = self.fields(record)
        head = f"{entry.pop('time')} {str(entry.pop('level')).upper():7} {entry.pop('service')} {entry.pop('msg')}"
        entry.pop("replica")
        entry.pop("logger")
        error = entry.pop("error", None)
        tail = " ".join(f"{k}={v}" for k, v in entry.items())
        return head + (f"  {tail}" if tail else "") + (f"\n{error}" if error else "")


def setup_logging(service: str, level: str | None = None) -> None:
    """Route all logging to stderr as JSON lines (`NATRIUM_LOG_LEVEL`, default info)."""
    handler = logging.StreamHandler(sys.stderr)
    wanted = os.environ.get("NATRIUM_LOG_FORMAT", "auto").lower()
    text = wanted == "text" or (wanted == "auto" and sys.stderr.isatty())
    handler.setFormatter(TextFormatter(service) if text else JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel((level or os.environ.get("NATRIUM_LOG_LEVEL", "info")).upper())
    # aiohttp's access log is one line per request: useful for debugging, noise otherwise.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
