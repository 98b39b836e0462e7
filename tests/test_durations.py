"""Go-style durations and plain seconds; ISO 8601 durations and repetitions; RFC 3339 times."""

from __future__ import annotations

import datetime as dt

import pytest

from kernel.durations import (
    Period,
    parse_due_time,
    parse_duration,
    parse_iso_duration,
    parse_period,
    parse_time,
    parse_ttl,
)


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("30s", 30),
        ("1h30m", 5400),
        ("500ms", 0.5),
        ("0h0m5s0ms0μs", 5),
        ("1.5s", 1.5),
        ("90", 90),
        (2, 2),
        ("-1s", -1),
    ],
)
def test_parses(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5x", "s", "1h bad", "1d"])
def test_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


# -- ISO 8601, periods with repetitions, RFC 3339 times (actor reminders and timers) ---------------

NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    "text, seconds",
    [("PT10S", 10), ("P1DT2H", 93600), ("PT1M30S", 90), ("P2W", 14 * 86400), ("PT0.5S", 0.5), ("pt1h", 3600)],
)
def test_iso_durations(text: str, seconds: float) -> None:
    assert parse_iso_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["P", "PT", "10S", "P1H", "PT1X", "R5/PT1S"])
def test_iso_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid ISO 8601"):
        parse_iso_duration(text)


@pytest.mark.parametrize(
    "text, period",
    [
        ("R5/PT10S", Period(10, 5)),
        ("r2/1s", Period(1, 2)),
        ("0h0m10s0ms0μs", Period(10)),
        ("0h0m1s0ms0us", Period(1)),
        ("PT2H30M", Period(9000)),
        ("10s", Period(10)),
        ("10S", Period(10)),  # the JS SDK sends Temporal ISO durations with `PT` cut off
        ("R3/0h0m1s0ms0μs", Period(1, 3)),
    ],
)
def test_periods(text: str, period: Period) -> None:
    assert parse_period(text) == period


@pytest.mark.parametrize("text", [None, "", "  "])
def test_no_period_fires_once(text: str | None) -> None:
    assert parse_period(text) is None


@pytest.mark.parametrize("text", ["R0/PT1S", "R/PT1S", "Rx/PT1S", "5x", "0s", "-1s", "R5/", "PT"])
def test_invalid_periods(text: str) -> None:
    with pytest.raises(ValueError, match="invalid"):
        parse_period(text)


def test_due_time_forms() -> None:
    assert parse_due_time(None, NOW) == NOW
    assert parse_due_time("5s", NOW) == NOW + dt.timedelta(seconds=5)
    assert parse_due_time("PT1M", NOW) == NOW + dt.timedelta(minutes=1)
    assert parse_due_time("0h0m3s0ms0μs", NOW) == NOW + dt.timedelta(seconds=3)
    assert parse_due_time("2026-11-26T09:00:54Z", NOW) == dt.datetime(2026, 11, 26, 9, 0, 54, tzinfo=dt.UTC)
    with pytest.raises(ValueError):
        parse_due_time("soon", NOW)


def test_rfc3339_times() -> None:
    assert parse_time("2026-11-26T10:00:54+01:00") == dt.datetime(2026, 11, 26, 9, 0, 54, tzinfo=dt.UTC)
    nanos = parse_time("2026-11-26T09:00:54.123456789Z")
    assert nanos.microsecond == 123456
    for bad in ("2026-11-26T09:00:54", "2026-13-40T00:00:00Z", "yesterday"):
        with pytest.raises(ValueError, match="RFC 3339"):
            parse_time(bad)


def test_ttl_forms() -> None:
    assert parse_ttl(None, NOW) is None
    assert parse_ttl("1m", NOW) == NOW + dt.timedelta(minutes=1)
    assert parse_ttl("2030-01-01T00:00:00Z", NOW) == dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    with pytest.raises(ValueError):
        parse_ttl("0s", NOW)
