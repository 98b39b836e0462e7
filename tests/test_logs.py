"""Log lines: JSON with service, replica and trace ids; readable text for a terminal."""

from __future__ import annotations

import json
import logging

from kernel.logs import REPLICA, JsonFormatter, TextFormatter


def record(**extra: object) -> logging.LogRecord:
    rec = logging.makeLogRecord({"name": "natrium.test", "levelname": "WARNING", "msg": "hello %s", "args": ("x",)})
    rec.__dict__.update(extra)
    return rec


def test_json_line_carries_service_replica_and_extras() -> None:
    entry = json.loads(JsonFormatter("service-state").format(record(store="orders")))
    assert entry["service"] == "service-state" and entry["replica"] == REPLICA
    assert entry["msg"] == "hello x" and entry["level"] == "warning" and entry["store"] == "orders"


def test_text_line_is_readable() -> None:
    line = TextFormatter("gateway").format(record(store="orders"))
    assert "WARNING" in line and "gateway hello x" in line and line.endswith("store=orders")


def test_an_extra_never_hides_a_fixed_field() -> None:
    entry = json.loads(JsonFormatter("service-state").format(record(service="mystore", level="x")))
    assert entry["service"] == "service-state" and entry["level"] == "warning"
    assert (entry["extra_service"], entry["extra_level"]) == ("mystore", "x")
