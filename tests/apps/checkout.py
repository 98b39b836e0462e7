"""An app that calls `orders` through its own Dapr HTTP API, as a Dapr app would."""

from __future__ import annotations

import os

import aiohttp
from aiohttp import web


async def buy(request: web.Request) -> web.Response:
    url = f"http://127.0.0.1:{os.environ['DAPR_HTTP_PORT']}/v1.0/invoke/orders/method/neworder"
    async with aiohttp.ClientSession() as session:
        async with session.post(url, data=await request.read()) as response:
            return web.Response(status=response.status, body=await response.read(), content_type="application/json")


def main() -> None:
    app = web.Application()
    app.router.add_post("/buy", buy)
    web.run_app(app, host="127.0.0.1", port=int(os.environ["APP_PORT"]), print=None)


if __name__ == "__main__":
    main()
