"""Durations and times as Dapr writes them.

- Go durations (`1h30m`, `500ms`, `0h0m5s0ms0μs`, `us` or `µs`/`μs`) or bare seconds: `parse_duration`.
- ISO 8601 durations (`PT10S`, `P1DT2H`, `P2W`) and repetitions (`R5/PT10S`): `parse_iso_duration`,
  `parse_period`. Years and months count as 365 and 30 days, as a fixed period must.
- RFC 3339 times (`2026-01-02T15:04:05Z`) for an actor reminder's `dueTime` and `ttl`: `parse_time`.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

__all__ = [
    "Period",
    "parse_due_time",
    "parse_duration",
    "parse_iso_duration",
    "parse_period",
    "parse_time",
    "parse_ttl",
]

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_NUM = r"(\d+(?:[.,]\d+)?)"
_ISO = re.compile(
    rf"^P(?!$)(?:{_NUM}Y)?(?:{_NUM}M)?(?:{_NUM}W)?(?:{_NUM}D)?(?:T(?=\d)(?:{_NUM}H)?(?:{_NUM}M)?(?:{_NUM}S)?)?$",
    re.IGNORECASE,
)
_ISO_SECONDS = (365 * 86400.0, 30 * 86400.0, 7 * 86400.0, 86400.0, 3600.0, 60.0, 1.0)
_REPEAT = re.compile(r"^R(\d*)/(.+)$", re.IGNORECASE)


def parse_duration(text: str | int | float) -> float:
    """Seconds in `text`; raises ValueError naming the bad input."""
    if isinstance(text, int | float):
        return float(text)
    raw = text.strip()
    try:
        return float(raw)
    except ValueError:
        pass
    sign = -1.0 if raw.startswith("-") else 1.0
    body = raw.lstrip("+-")
    position, total = 0, 0.0
    for match in _PART.finditer(body):
        if match.start() != position:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
    if not body or position != len(body):
        raise ValueError(f"invalid duration {text!r}: use a Go duration such as 30s, 5m or 1h30m")
    return sign * total


def parse_iso_duration(text: str) -> float:
    """Seconds in an ISO 8601 duration such as `PT10S` or `P1DT2H30M`."""
    match = _ISO.match(text.strip())
    if not match:
        raise ValueError(f"invalid ISO 8601 duration {text!r}: use a form such as PT10S or P1DT2H")
    return sum(float(v.replace(",", ".")) * unit for v, unit in zip(match.groups(), _ISO_SECONDS, strict=True) if v)


def _any_duration(text: str) -> float:
    """A Go duration, an ISO 8601 duration, or the JS SDK's ISO form without `PT` (`10S`)."""
    raw = text.strip()
    if raw[:1] in ("P", "p"):
        return parse_iso_duration(raw)
    try:
        return parse_duration(raw)
    except ValueError:
        if re.fullmatch(r"[\d.,HMShms]+", raw) and not raw[:1].isalpha():
            try:
                return parse_iso_duration("PT" + raw)
            except ValueError:
                pass
        raise ValueError(
            f"invalid duration {text!r}: use a Go duration (5s, 1h30m) or ISO 8601 (PT5S, R5/PT10S)"
        ) from None


def parse_time(text: str) -> dt.datetime:
    """An RFC 3339 time as an aware UTC datetime; ValueError if it is not one."""
    raw = text.strip()
    if not re.match(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}", raw):
        raise ValueError(f"invalid RFC 3339 time {text!r}")
    value = raw[:-1] + "+00:00" if raw[-1:] in ("Z", "z") else raw
    # Python before 3.11 rejects nanoseconds; Go writes them: keep microseconds.
    value = re.sub(r"(\.\d{6})\d+", r"\1", value)
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"invalid RFC 3339 time {text!r}") from None
    if parsed.tzinfo is None:
        raise ValueError(f"invalid RFC 3339 time {text!r}: it needs a time zone (Z or +hh:mm)")
    return parsed.astimezone(dt.UTC)


@dataclass(frozen=True)
class Period:
    """A reminder's or timer's period: `seconds` between fires, `repetitions` None = no limit."""

    seconds: float
    repetitions: int | None = None


def parse_period(text: str | None) -> Period | None:
    """None for no period (fire once); else the interval and the repetition count (`R5/PT10S`)."""
    if text is None or not text.strip():
        return None
    raw = text.strip()
    repeat = _REPEAT.match(raw)
    repetitions: int | None = None
    if repeat:
        if not repeat.group(1):
            raise ValueError(f"invalid period {text!r}: R/ needs a repetition count, as in R5/PT10S")
        repetitions = int(repeat.group(1))
        if repetitions < 1:
            raise ValueError(f"invalid period {text!r}: the repetition count must be at least 1")
        raw = repeat.group(2)
    seconds = _any_duration(raw)
    if seconds <= 0:
        raise ValueError(f"invalid period {text!r}: it must be longer than zero")
    return Period(seconds, repetitions)


def parse_due_time(text: str | None, now: dt.datetime) -> dt.datetime:
    """When the first fire is due: `now` for none, a duration after `now`, or an RFC 3339 time."""
    if text is None or not text.strip():
        return now
    raw = text.strip()
    try:
        return parse_time(raw)
    except ValueError:
        pass
    seconds = _any_duration(raw)
    return now + dt.timedelta(seconds=max(0.0, seconds))


def parse_ttl(text: str | None, now: dt.datetime) -> dt.datetime | None:
    """When a reminder or timer expires: None for never, a duration after `now`, or an RFC 3339 time."""
    if text is None or not text.strip():
        return None
    raw = text.strip()
    try:
        return parse_time(raw)
    except ValueError:
        pass
    seconds = _any_duration(raw)
    if seconds <= 0:
        raise ValueError(f"invalid ttl {text!r}: it must be longer than zero")
    return now + dt.timedelta(seconds=seconds)
