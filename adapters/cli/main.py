"""`natrium`: run the whole runtime, one block service, or the gateway."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from adapters.cli.app_health_options import app_health_options, health_check_of
from adapters.cli.config import config as config_commands
from adapters.cli.options import (
    components_option,
    log_level_option,
    metrics_port_option,
    nats_url_option,
    root_option,
)
from adapters.cli.runner import run_until_signal
from adapters.cli.secrets import secrets as secrets_commands
from adapters.cli.status import status as status_command
from adapters.cli.workflow import workflow as workflow_commands
from kernel import __version__
from kernel.logs import setup_logging
from kernel.tracing import setup_tracing
from services import BLOCKS

DEFAULT_DATA_DIR = Path(os.environ.get("NATRIUM_DATA_DIR", Path.home() / ".natrium" / "data"))


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="natrium")
def cli() -> None:
    """natrium: Dapr's building blocks on NATS, without sidecars."""


@cli.command()
def version() -> None:
    """Print the natrium version and the nats-server it embeds."""
    from kernel.nats_server import find_binary

    click.echo(f"natrium {__version__}")
    try:
        import subprocess

        out = subprocess.run([find_binary(), "--version"], capture_output=True, text=True, timeout=10)
        click.echo(out.stdout.strip() or out.stderr.strip())
    except Exception as exc:
        click.echo(f"nats-server: not found ({exc})", err=True)


@cli.command()
@nats_url_option("Use this NATS (must be >= 2.12 with JetStream) instead of starting one.")
@click.option(
    "--nats-port",
    envvar="NATRIUM_NATS_PORT",
    show_envvar=True,
    type=int,
    default=4222,
    show_default=True,
    help="Port of the embedded nats-server; a free one if taken.",
)
@click.option(
    "--http-port",
    envvar="DAPR_HTTP_PORT",
    show_envvar=True,
    type=int,
    default=3500,
    show_default=True,
    help="Port of the Dapr HTTP API.",
)
@click.option(
    "--host",
    envvar="NATRIUM_HTTP_HOST",
    show_envvar=True,
    default="127.0.0.1",
    show_default=True,
    help="Address the HTTP API listens on (0.0.0.0 in a container).",
)
@click.option(
    "--grpc-port",
    envvar="DAPR_GRPC_PORT",
    show_envvar=True,
    type=click.IntRange(0, 65535),
    default=None,
    help="Port of the Dapr gRPC API  [default: 50001, a free one if taken]; 0 turns it off.",
)
@components_option
@click.option(
    "--data-dir",
    envvar="NATRIUM_DATA_DIR",
    show_envvar=True,
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_DATA_DIR,
    show_default=True,
    help="JetStream store of the embedded nats-server.",
)
@click.option("--app-id", envvar="APP_ID", default=None, help="App id the gateway speaks for (state key prefix).")
@root_option
@log_level_option
@click.option(
    "--metrics-port",
    envvar="NATRIUM_METRICS_PORT",
    show_envvar=True,
    type=click.IntRange(0, 65535 - len(BLOCKS) - 1),
    default=0,
    show_default=True,
    help="Prometheus metrics of the gateway on PORT and of each block service on the ports after it; 0: off.",
)
def up(
    nats_url: str | None,
    nats_port: int,
    http_port: int,
    host: str,
    grpc_port: int | None,
    components: str | None,
    data_dir: Path,
    app_id: str | None,
    root: str,
    log_level: str,
    metrics_port: int,
) -> None:
    """Start NATS (embedded unless --nats-url), every block service and the HTTP gateway."""
    from adapters.cli.up import UpConfig, run_up

    setup_logging("up", log_level)
    config = UpConfig(
        nats_url=nats_url,
        nats_port=nats_port,
        http_port=http_port,
        host=host,
        components=components,
        data_dir=data_dir.expanduser().resolve(),
        root=root,
        log_level=log_level,
        app_id=app_id,
        api_token=os.environ.get("DAPR_API_TOKEN"),
        grpc_port=grpc_port,
        metrics_port=metrics_port,
    )
    run_until_signal(lambda stop: run_up(config, stop))


@cli.command()
@click.argument("block", type=click.Choice(sorted(BLOCKS)))
@nats_url_option()
@components_option
@click.option(
    "--max-concurrency",
    type=int,
    default=256,
    show_default=True,
    help="Requests this replica handles at once.",
)
@root_option
@log_level_option
@metrics_port_option
def service(
    block: str,
    nats_url: str | None,
    components: str | None,
    max_concurrency: int,
    root: str,
    log_level: str,
    metrics_port: int,
) -> None:
    """Run one building block service; start more copies to scale it out."""
    from adapters.cli.serve import serve_block
    from kernel.connection import ConnectionSettings

    setup_logging(f"service-{block}", log_level)
    setup_tracing(f"natrium-{block}")
    settings = ConnectionSettings.from_env(nats_url, name=f"natrium-{block}")
    _serve_metrics(metrics_port)
    run_until_signal(lambda stop: serve_block(block, settings, components, root, max_concurrency, stop))


@cli.command()
@nats_url_option()
@click.option("--http-port", envvar="DAPR_HTTP_PORT", show_envvar=True, type=int, default=3500, show_default=True)
@click.option(
    "--host",
    envvar="NATRIUM_HTTP_HOST",
    show_envvar=True,
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on (0.0.0.0 in a container).",
)
@click.option("--app-id", envvar="APP_ID", default=None, help="App id this gateway speaks for.")
@click.option(
    "--grpc-port",
    envvar="DAPR_GRPC_PORT",
    show_envvar=True,
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="Also serve Dapr's gRPC API on this port; 0 turns it off.",
)
@click.option("--max-body-size", type=int, default=4, show_default=True, help="Request body limit in MiB.")
@click.option(
    "--timeout",
    "request_timeout",
    type=float,
    default=5.0,
    show_default=True,
    help="Seconds one bus request may take.",
)
@components_option
@root_option
@log_level_option
@metrics_port_option
def gateway(
    nats_url: str | None,
    http_port: int,
    host: str,
    app_id: str | None,
    grpc_port: int,
    max_body_size: int,
    request_timeout: float,
    components: str | None,
    root: str,
    log_level: str,
    metrics_port: int,
) -> None:
    """Serve Dapr's HTTP API, turning every call into one bus request."""
    from adapters.cli.serve import serve_gateway
    from adapters.gateway.context import GatewayConfig
    from kernel.connection import ConnectionSettings

    setup_logging("gateway", log_level)
    setup_tracing("natrium-gateway")
    config = GatewayConfig(
        http_port=http_port,
        host=host,
        app_id=app_id,
        api_token=os.environ.get("DAPR_API_TOKEN") or None,
        max_body_size=max_body_size * 1024 * 1024,
        request_timeout=request_timeout,
    )
    settings = ConnectionSettings.from_env(nats_url, name="natrium-gateway")
    _serve_metrics(metrics_port)
    run_until_signal(lambda stop: serve_gateway(settings, config, root, components, stop, grpc_port))


@cli.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option(
    "--app-id",
    envvar="APP_ID",
    show_envvar=True,
    required=True,
    help="The app's id: its calls, keys and consumer groups.",
)
@click.option(
    "--app-port",
    envvar="APP_PORT",
    show_envvar=True,
    type=int,
    default=None,
    help="Port the app's HTTP server listens on; without it the app only calls out.",
)
# Not DAPR_HTTP_PORT: a shell that points SDKs at `natrium up` on it would send run onto up's port.
@click.option(
    "--dapr-http-port",
    envvar="NATRIUM_DAPR_HTTP_PORT",
    show_envvar=True,
    type=click.IntRange(0, 65535),
    default=0,
    help="The app's local Dapr HTTP API (DAPR_HTTP_PORT for the app); a free port when omitted.",
)
@click.option(
    "--dapr-grpc-port",
    envvar="NATRIUM_DAPR_GRPC_PORT",
    show_envvar=True,
    type=click.IntRange(0, 65535),
    default=0,
    help="The app's local Dapr gRPC API (DAPR_GRPC_PORT); a free port when omitted.",
)
@click.option(
    "--app-protocol",
    envvar="APP_PROTOCOL",
    show_envvar=True,
    type=click.Choice(["http", "grpc"]),
    default="http",
    show_default=True,
    help="How natrium calls the app on --app-port: its HTTP routes or its gRPC AppCallback service.",
)
@nats_url_option()
@components_option
@click.option(
    "--resources-path",
    "resources_path",
    type=click.Path(file_okay=False),
    default=None,
    help="Dapr's name for --components.",
)
@click.option(
    "--app-port-timeout",
    envvar="NATRIUM_APP_PORT_TIMEOUT",
    show_envvar=True,
    type=click.FloatRange(min=0.0, min_open=True),
    default=60.0,
    show_default=True,
    help="Seconds to wait for the app to open its port.",
)
@app_health_options
@root_option
@log_level_option
@metrics_port_option
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run(
    app_id: str,
    app_port: int | None,
    dapr_http_port: int,
    dapr_grpc_port: int,
    app_protocol: str,
    nats_url: str | None,
    components: str | None,
    resources_path: str | None,
    app_port_timeout: float,
    root: str,
    log_level: str,
    metrics_port: int,
    command: tuple[str, ...],
    **health_options: Any,
) -> None:
    """Run an app with natrium beside it, as `dapr run` does: natrium run --app-id ID --app-port P -- CMD..."""
    from adapters.appchannel.run import RunConfig, run_app

    setup_logging(f"run-{app_id}", log_level)
    setup_tracing(f"natrium-run-{app_id}")
    config = RunConfig(
        app_id=app_id,
        command=list(command),
        app_port=app_port,
        dapr_http_port=dapr_http_port,
        dapr_grpc_port=dapr_grpc_port,
        app_protocol=app_protocol,
        nats_url=nats_url,
        components=components or resources_path,
        root=root,
        app_port_timeout=app_port_timeout,
        api_token=os.environ.get("DAPR_API_TOKEN") or None,
        app_api_token=os.environ.get("APP_API_TOKEN") or None,
        health=health_check_of(health_options),
    )
    _serve_metrics(metrics_port)
    sys.exit(run_until_signal(lambda stop: run_app(config, stop)))


def _serve_metrics(port: int) -> None:
    """Start the Prometheus endpoint when `--metrics-port` is set (0: off)."""
    if not port:
        return
    from kernel.errors import NatriumError
    from kernel.metrics import start_metrics_server

    try:
        start_metrics_server(port)
    except NatriumError as exc:
        click.echo(f"error: {exc.message} ({exc.code})", err=True)
        sys.exit(1)


@cli.group()
def schemas() -> None:
    """The bus contract as JSON Schema, for clients in other languages."""


@schemas.command("export")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write one <block>.json per block here; print to stdout when omitted.",
)
def schemas_export(out: Path | None) -> None:
    """Export the JSON Schema of every bus request and reply."""
    from schemas.export import export_all

    documents = export_all()
    if out is None:
        json.dump(documents, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    out.mkdir(parents=True, exist_ok=True)
    for block, document in documents.items():
        (out / f"{block}.json").write_text(json.dumps(document, indent=2) + "\n")
        click.echo(f"wrote {out / f'{block}.json'}", err=True)


cli.add_command(config_commands)
cli.add_command(secrets_commands)
cli.add_command(status_command)
cli.add_command(workflow_commands)

if __name__ == "__main__":
    cli()
