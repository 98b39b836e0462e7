"""A plain aiohttp app that receives input binding events; started by `natrium run` in tests.

`POST /{name}` records the event (a body containing `fail-once` is refused with 500 the first
time, to make the channel redeliver it; a body `{"reply": X}` is answered with X as JSON);
`/not-listening` does not exist, so daprd's OPTIONS
probe gets 404 there. `GET /received` lists what arrived, in order. Env: APP_PORT.
"""

from __future__ import annotations

import json
import os
from typing import Any

from aiohttp import web

received: list[dict[str, Any]] = []


async def event(request: web.Request) -> web.Response:
    body = (await request.read()).decode()
    received.append(
        {
            "path": request.path,
            "body": body,
            "headers": {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")},
        }
    )
    if "fail-once" in body and sum(r["body"] == body for r in received) == 1:
        return web.Response(status=500, text="not now")
    if body.startswith('{"reply"'):
        # The event says what to answer: daprd's {"storeName", "state", "to", "data"} work orders.
        return web.json_response(json.loads(body)["reply"])
    return web.Response(status=200)


async def listening(request: web.Request) -> web.Response:
    return web.Response(status=200)


async def received_events(request: web.Request) -> web.Response:
    return web.json_response(received)


def main() -> None:
    app = web.Application()
    for path in ("/orders-in", "/custom/route"):
        app.router.add_post(path, event)
        app.router.add_route("OPTIONS", path, listening)
    app.router.add_get("/received", received_events)
    web.run_app(app, host="127.0.0.1", port=int(os.environ["APP_PORT"]), print=None)


if __name__ == "__main__":
    main()
