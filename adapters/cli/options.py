"""Options shared by several commands, each with its environment twin."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

__all__ = ["nats_url_option", "components_option", "root_option", "log_level_option", "metrics_port_option"]

F = Callable[..., Any]


def nats_url_option(help_text: str = "NATS server URL(s), comma separated.") -> Callable[[F], F]:
    return click.option("--nats-url", envvar="NATS_URL", default=None, show_envvar=True, help=help_text)


def components_option(f: F) -> F:
    return click.option(
        "--components",
        envvar="NATRIUM_COMPONENTS",
        show_envvar=True,
        type=click.Path(file_okay=False, path_type=str),
        default=None,
        help="Folder of Dapr component YAML; built-in defaults when omitted.",
    )(f)


def root_option(f: F) -> F:
    return click.option(
        "--root",
        envvar="NATRIUM_ROOT",
        show_envvar=True,
        default="natrium",
        show_default=True,
        help="Subject root every natrium subject lives under.",
    )(f)


def log_level_option(f: F) -> F:
    return click.option(
        "--log-level",
        envvar="NATRIUM_LOG_LEVEL",
        show_envvar=True,
        default="info",
        show_default=True,
        type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    )(f)


def metrics_port_option(f: F) -> F:
    return click.option(
        "--metrics-port",
        envvar="NATRIUM_METRICS_PORT",
        show_envvar=True,
        type=click.IntRange(0, 65535),
        default=0,
        show_default=True,
        help="Serve Prometheus metrics on http://0.0.0.0:PORT/metrics; 0 turns them off.",
    )(f)
