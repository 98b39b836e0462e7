"""An unmodified Dapr SDK gRPC app (`dapr.ext.grpc.App`), run by `natrium run --app-protocol grpc` in tests.

Methods: `echo` answers `echo:<body>` (text/plain); `received` lists, as JSON, what reached the app:
events of `pubsub/orders`, events of `pubsub/flaky` (the first delivery of each is answered RETRY),
and input binding `tick` events. Its health check fails while the file SICK_FILE exists. Env: APP_PORT,
SICK_FILE.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

from dapr.clients.grpc._response import TopicEventResponse
from dapr.ext.grpc import App, BindingRequest, InvokeMethodRequest, InvokeMethodResponse

app = App()
received: list[dict[str, Any]] = []
lock = threading.Lock()


@app.method(name="echo")
def echo(request: InvokeMethodRequest) -> InvokeMethodResponse:
    return InvokeMethodResponse(b"echo:" + request.data, "text/plain")


@app.method(name="received")
def list_received(request: InvokeMethodRequest) -> str:
    with lock:
        return json.dumps(received)


@app.subscribe(pubsub_name="pubsub", topic="orders")
def orders(event: Any) -> None:
    with lock:
        received.append({"topic": "orders", "id": event.id, "data": event.data.decode(), "type": event.type})


@app.subscribe(pubsub_name="pubsub", topic="flaky")
def flaky(event: Any) -> TopicEventResponse:
    with lock:
        seen = any(r["id"] == event.id for r in received)
        received.append({"topic": "flaky", "id": event.id, "data": event.data.decode()})
    return TopicEventResponse("success" if seen else "retry")


@app.binding("tick")
def tick(request: BindingRequest) -> None:
    with lock:
        received.append({"topic": "tick", "data": request.text()})


def health() -> None:
    sick = os.environ.get("SICK_FILE")
    if sick and os.path.exists(sick):
        raise RuntimeError("told to be sick")


app.register_health_check(health)


if __name__ == "__main__":
    app.run(int(os.environ["APP_PORT"]))
