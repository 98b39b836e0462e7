"""Prometheus metrics of a natrium process: one registry, every metric object, and the scrape server.

Hot paths take their labelled children once (`RequestMetrics`, `DeliveryMetrics`) and then only
call `.inc()` / `.observe()`: `labels()` takes a lock and builds a key, which is not free per request.
The registry is natrium's own, not prometheus_client's global one, so that importing natrium never
adds to an embedding app's metrics and a test can build a separate `Metrics()` to read from.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app

from kernel.errors import NatriumError

__all__ = ["HEALTH", "METRICS", "DeliveryMetrics", "Health", "Metrics", "RequestMetrics", "start_metrics_server"]

# A bus request takes ~0.1-1 ms, an HTTP call a little more: the default buckets start at 5 ms.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
DELIVERY_STATUSES = ("SUCCESS", "RETRY", "DROP")
DROP_REASONS = ("expired", "drop", "max_deliveries", "undecodable")
"""Why an event was given up with no dead-letter topic to go to: past its TTL, DROP answered, out of
deliveries (maxDeliver), not a readable event."""
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
UNMATCHED_ROUTE = "unmatched"
"""The route label of an HTTP call no route matched: raw paths would make label values unbounded."""


class RequestMetrics:
    """The counters and histogram of one (block, operation), bound once per endpoint."""

    __slots__ = ("_metrics", "_block", "_operation", "_total", "_seconds")

    def __init__(self, metrics: Metrics, block: str, operation: str) -> None:
        self._metrics = metrics
        self._block = block
        self._operation = operation
        self._total = metrics.requests.labels(block, operation)
        self._seconds = metrics.request_seconds.labels(block, operation)

    def record(self, elapsed_ns: int, error_code: str | None) -> None:
        self._total.inc()
        self._seconds.observe(elapsed_ns / 1e9)
        if error_code is not None:
            self._metrics.request_errors.labels(self._block, self._operation, error_code).inc()


class DeliveryMetrics:
    """The delivery counters of one subscription (pubsub, topic, consumer group)."""

    __slots__ = ("delivered", "redelivered", "deadlettered", "lag", "dropped")

    def __init__(self, metrics: Metrics, pubsub: str, topic: str, group: str) -> None:
        self.delivered = {
            status: metrics.pubsub_delivered.labels(pubsub, topic, group, status) for status in DELIVERY_STATUSES
        }
        self.redelivered = metrics.pubsub_redelivered.labels(pubsub, topic, group)
        self.deadlettered = metrics.pubsub_deadlettered.labels(pubsub, topic, group)
        self.lag = metrics.pubsub_consumer_lag.labels(pubsub, topic, group)
        self.dropped = {reason: metrics.pubsub_dropped.labels(pubsub, topic, group, reason) for reason in DROP_REASONS}


class Metrics:
    """Every natrium metric, in its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "natrium_requests", "Bus requests a block service handled.", ["block", "operation"], registry=r
        )
        self.request_errors = Counter(
            "natrium_request_errors",
            "Bus requests answered with an error, by Dapr error code.",
            ["block", "operation", "code"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "natrium_request_seconds",
            "Time a block service took to answer a bus request.",
            ["block", "operation"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.pubsub_published = Counter(
            "natrium_pubsub_published",
            "Events the pubsub service published (a deduplicated repeat included).",
            ["pubsub", "topic"],
            registry=r,
        )
        self.pubsub_delivered = Counter(
            "natrium_pubsub_delivered",
            "Events handed to a subscriber, by the status it answered (SUCCESS, RETRY, DROP).",
            ["pubsub", "topic", "group", "status"],
            registry=r,
        )
        self.pubsub_redelivered = Counter(
            "natrium_pubsub_redelivered",
            "Events received again after a RETRY, a timeout or a lost ack.",
            ["pubsub", "topic", "group"],
            registry=r,
        )
        self.pubsub_deadlettered = Counter(
            "natrium_pubsub_deadlettered",
            "Events published to their dead-letter topic.",
            ["pubsub", "topic", "group"],
            registry=r,
        )
        self.pubsub_dropped = Counter(
            "natrium_pubsub_dropped",
            "Events given up with no dead-letter topic (logged and terminated), by reason.",
            ["pubsub", "topic", "group", "reason"],
            registry=r,
        )
        self.pubsub_consumer_lag = Gauge(
            "natrium_pubsub_consumer_lag",
            "Events in the stream not yet delivered to the consumer group, as its last fetch saw them.",
            ["pubsub", "topic", "group"],
            registry=r,
        )
        self.http_requests = Counter(
            "natrium_http_requests",
            "Dapr HTTP API calls the gateway answered, by route template.",
            ["route", "method", "status"],
            registry=r,
        )
        self.http_seconds = Histogram(
            "natrium_http_request_seconds",
            "Time the gateway took to answer a Dapr HTTP API call.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.invocations_sent = Counter(
            "natrium_invocations_sent",
            "Service invocations made, by target app and outcome (the callee's HTTP status or an error code).",
            ["app_id", "outcome"],
            registry=r,
        )
        self.invocations_served = Counter(
            "natrium_invocations_served",
            "Service invocations an app answered, by the HTTP status of the answer.",
            ["app_id", "status"],
            registry=r,
        )
        self.invocation_seconds = Histogram(
            "natrium_invocation_served_seconds",
            "Time from receiving an invocation to replying to it (the app's own time included).",
            ["app_id"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._http_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def for_endpoint(self, block: str, operation: str) -> RequestMetrics:
        return RequestMetrics(self, block, operation)

    def for_subscription(self, pubsub: str, topic: str, group: str) -> DeliveryMetrics:
        return DeliveryMetrics(self, pubsub, topic, group)

    def http_answered(self, route: str, method: str, status: int, elapsed_s: float) -> None:
        # Children cached per (route, method, status): two `labels()` calls were ~3 us of every call.
        children = self._http_children.get((route, method, status))
        if children is None:
            label = method if method in HTTP_METHODS else "OTHER"  # a client may send any token as a method
            children = (self.http_requests.labels(route, label, str(status)), self.http_seconds.labels(route, label))
            if len(self._http_children) < 10_000:  # bounded: a route template set, but methods are free text
                self._http_children[(route, method, status)] = children
        children[0].inc()
        children[1].observe(elapsed_s)


METRICS = Metrics()
"""The process's metrics: what the code records into and `start_metrics_server` serves."""


class Health:
    """Whether this process can do its job, for `GET /healthz` beside `/metrics` (Kubernetes probes).

    Until a check is set the process is starting, and the answer is 503; the command sets one
    once it is connected and serving (e.g. "the NATS connection is up").
    """

    def __init__(self) -> None:
        self._check: Callable[[], bool] | None = None

    def set_check(self, check: Callable[[], bool] | None) -> None:
        self._check = check

    def ok(self) -> bool:
        try:
            return self._check is not None and bool(self._check())
        except Exception:
            return False


HEALTH = Health()
"""The process's health: what `/healthz` on the metrics port answers."""


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds are not news
        pass


def _app(metrics: Metrics, health: Health) -> Callable[..., Iterable[bytes]]:
    exposition = make_wsgi_app(metrics.registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/healthz":
            start_response("204 No Content" if health.ok() else "503 Service Unavailable", [])
            return [b""]
        return exposition(environ, start_response)

    return app


def start_metrics_server(
    port: int, host: str = "0.0.0.0", metrics: Metrics = METRICS, health: Health = HEALTH
) -> WSGIServer:
    """Serve `GET /metrics` (Prometheus text format) and `GET /healthz` on `host:port`.

    The server runs in a daemon thread: it starts before the event loop (so every command can
    call it the same way) and a scrape never waits behind requests on the loop. The CLI lets it
    live as long as the process; `shutdown()` on the returned server stops it.
    """
    try:
        server = make_server(host, port, _app(metrics, health), _ThreadingServer, handler_class=_QuietHandler)
    except OSError as exc:
        raise NatriumError("ERR_PORT_IN_USE", f"cannot serve metrics on {host}:{port}: {exc.strerror}") from None
    threading.Thread(target=server.serve_forever, name="natrium-metrics", daemon=True).start()
    return server
