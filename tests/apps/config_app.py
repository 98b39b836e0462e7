"""A plain aiohttp app that receives Dapr configuration callbacks; started by `natrium run` in tests.

`POST /configuration/{store}/{key}` records the callback (a value `fail-once` is refused with 500
the first time, to make the channel retry); `GET /received` lists what arrived, in order.
Env: APP_PORT (given by the test).
"""

from __future__ import annotations

import json
import os
from typing import Any

from aiohttp import web

received: list[dict[str, Any]] = []


async def configuration(request: web.Request) -> web.Response:
    body = json.loads(await request.read())
    received.append(
        {
            "store": request.match_info["store"],
            "key": request.match_info["key"],
            "contentType": request.headers.get("Content-Type"),
            "body": body,
        }
    )
    values = [item.get("value") for item in body.get("items", {}).values()]
    if "fail-once" in values and sum(r["body"] == body for r in received) == 1:
        return web.Response(status=500, text="not now")
    return web.Response(status=200)


async def received_callbacks(request: web.Request) -> web.Response:
    return web.json_response(received)


def main() -> None:
    app = web.Application()
    app.router.add_post("/configuration/{store}/{key:.+}", configuration)
    app.router.add_get("/received", received_callbacks)
    web.run_app(app, host="127.0.0.1", port=int(os.environ["APP_PORT"]), print=None)


if __name__ == "__main__":
    main()
