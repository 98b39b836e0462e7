"""The service-invocation contract on the bus: an HTTP call carried as one NATS request.

Subject: `<root>.invoke.<app-id>.<method>` (both encoded with `encode_token`), answered in the queue
group `<root>.invoke.<app-id>` so the replicas of an app share the calls.

The request body is the HTTP body, unchanged; the HTTP headers travel as NATS headers (one value
each: repeated headers are joined with ", ", except Set-Cookie, whose second and later values
travel as `Set-Cookie.2`, `Set-Cookie.3` ...; a caller's own `dapr-caller-app-id` is dropped), plus:
"""

from __future__ import annotations

__all__ = ["CALLER", "HOP_BY_HOP", "PATH", "QUERY", "STATUS", "VERB"]

VERB = "Natrium-Verb"
"""HTTP verb of the call (GET, POST, ...)."""
PATH = "Natrium-Method"
"""The method path as the callee's HTTP server should see it, without the query: `/api/v1/add`."""
QUERY = "Natrium-Query"
"""The raw query string, without `?`; absent when empty."""
CALLER = "dapr-caller-app-id"
"""The calling app's id, as daprd adds it."""
STATUS = "Natrium-Status"
"""In the reply: the callee's HTTP status. The reply body and headers are the callee's."""
GRPC_STATUS = "Natrium-Grpc-Status"
"""In the reply of a gRPC app that failed: its gRPC status code (STATUS holds the HTTP mapping),
which a retry's `matching.gRPCStatusCodes` is matched against."""

# Never forwarded: they describe one HTTP connection, not the call.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "dapr-app-id",
        "dapr-api-token",
    }
)
