"""Dapr's gRPC API and gRPC app callbacks, as a thin adapter over the bus (beside the HTTP gateway)."""

import os

# natrium forks only to exec apps at once, never to use gRPC in a child: without this, grpc's
# fork handlers log a warning at every `natrium run` start.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
