"""`dapr run`'s app health check options for `natrium run`, with Dapr's names, units and defaults."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from adapters.appchannel.app_health import HealthCheck

__all__ = ["app_health_options", "health_check_of"]

F = Callable[..., Any]
_DEFAULTS = HealthCheck()


def app_health_options(f: F) -> F:
    options = [
        click.option(
            "--enable-app-health-check",
            envvar="NATRIUM_ENABLE_APP_HEALTH_CHECK",
            show_envvar=True,
            is_flag=True,
            help="Probe the app; while it fails, hold its events, input bindings and calls.",
        ),
        click.option(
            "--app-health-check-path",
            envvar="NATRIUM_APP_HEALTH_CHECK_PATH",
            show_envvar=True,
            default=_DEFAULTS.path,
            show_default=True,
            help="HTTP apps: the route probed with GET (2xx: healthy); gRPC apps answer HealthCheck.",
        ),
        click.option(
            "--app-health-probe-interval",
            envvar="NATRIUM_APP_HEALTH_PROBE_INTERVAL",
            show_envvar=True,
            type=click.FloatRange(min=0.0, min_open=True),
            default=_DEFAULTS.interval,
            show_default=True,
            help="Seconds between probes.",
        ),
        click.option(
            "--app-health-probe-timeout",
            envvar="NATRIUM_APP_HEALTH_PROBE_TIMEOUT",
            show_envvar=True,
            type=click.IntRange(min=1),
            default=int(_DEFAULTS.timeout * 1000),
            show_default=True,
            help="Milliseconds a probe may take.",
        ),
        click.option(
            "--app-health-threshold",
            envvar="NATRIUM_APP_HEALTH_THRESHOLD",
            show_envvar=True,
            type=click.IntRange(min=1),
            default=_DEFAULTS.threshold,
            show_default=True,
            help="Failed probes in a row that make the app unhealthy.",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def health_check_of(options: dict[str, Any]) -> HealthCheck | None:
    """The check the options ask for (popping them from a command's keyword arguments); None when off."""
    enabled = options.pop("enable_app_health_check")
    check = HealthCheck(
        path=options.pop("app_health_check_path"),
        interval=options.pop("app_health_probe_interval"),
        timeout=options.pop("app_health_probe_timeout") / 1000,
        threshold=options.pop("app_health_threshold"),
    )
    return check if enabled else None
