"""The HTTP app of bench/invoke.py, run under `natrium run` (and called directly for the baseline).

`POST /neworder` answers the request body unchanged as JSON; nothing else is served, so
`GET /dapr/subscribe` is a 404 (no subscriptions). Listens on 127.0.0.1:$APP_PORT.
"""

from __future__ import annotations

import os

from aiohttp import web


async def neworder(request: web.Request) -> web.Response:
    return web.Response(body=await request.read(), content_type="application/json")


def main() -> None:
    app = web.Application()
    app.router.add_post("/neworder", neworder)
    web.run_app(app, host="127.0.0.1", port=int(os.environ["APP_PORT"]), print=None, access_log=None)


if __name__ == "__main__":
    main()
